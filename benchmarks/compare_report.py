"""The rows, targets and output (markdown table, notes, one JSON line) of benchmarks/compare.py."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiotoolcache as atc
from benchmarks.compare_peers import TTL
from benchmarks.measure import hiredis_in_use, machine, package_version, source_revision

RAW, CW, CWCS, AIO, ATC = (
    "raw redis-py",
    "cashews",
    "cashews client_side",
    "aiocache",
    "aiotoolcache",
)
COLUMNS = [RAW, CW, CWCS, AIO, ATC]


@dataclass
class ZipfResult:
    wall: float
    loads: int
    distinct: int
    commands: int  # executed by Redis (INFO commandstats), script-internal calls included
    breakdown: dict[str, int]
    sent: int  # commands the clients sent (a script call counts once)


@dataclass
class Row:
    """Row is one line of the table: every peer's value and aiotoolcache's ratio to its target."""

    key: str  # stable name, used in the JSON line and by the asv suite
    metric: str
    unit: str
    values: Mapping[str, float | None]
    higher_is_better: bool
    baseline: Sequence[str]  # the peers the aiotoolcache ratio is taken against
    target: str
    check: Callable[[float], bool] | None = None  # applied to the ratio
    note: str = ""
    reference: tuple[str, float] | None = None  # compare with this instead of the best peer

    def best_peer(self) -> tuple[str, float] | None:
        if self.reference is not None:
            return self.reference
        scores = [(p, v) for p, v in self.values.items() if p in self.baseline and v is not None]
        if not scores:
            return None
        pick = max if self.higher_is_better else min
        return pick(scores, key=lambda item: item[1])

    def ratio(self) -> float | None:
        best = self.best_peer()
        ours = self.values.get(ATC)
        if best is None or ours is None or best[1] == 0:
            return None
        return ours / best[1]

    def met(self) -> bool | None:
        ratio = self.ratio()
        return None if ratio is None or self.check is None else self.check(ratio)


@dataclass
class Section:
    """Section is one server's table: the same rows, measured against that server."""

    name: str  # "redis" or "valkey": the key of its JSON
    server: str  # flavour and version, as a heading
    rows: list[Row]
    extra: dict[str, Any]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("ops/s", "keys/s", "calls"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.1f}"


def verdict(row: Row) -> tuple[str, str]:
    """Return (ratio text, met text) for the aiotoolcache column."""
    ratio = row.ratio()
    best = row.best_peer()
    ratio_text = "n/a" if ratio is None or best is None else f"{ratio:.2f}× {best[0]}"
    met = row.met()
    return ratio_text, "n/a" if met is None else "yes" if met else "**no**"


def table(rows: list[Row]) -> str:
    header = ["metric", "unit", *COLUMNS, "aiotoolcache vs", "target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        ratio_text, met = verdict(row)
        cells = [row.metric, row.unit, *(fmt(row.values.get(c), row.unit) for c in COLUMNS)]
        lines.append("| " + " | ".join([*cells, ratio_text, row.target, met]) + " |")
    return "\n".join(lines)


def notes(rows: list[Row], extra: dict[str, Any], plan: Any) -> str:
    out = [f"- {row.metric}: {row.note}" for row in rows if row.note]
    raw_burst = extra["burst_raw"]
    out.append(
        f"- {plan.concurrent:,} concurrent hits, references: a plain MGET batcher on redis-py "
        f"{extra['burst_mget']:,.0f} ops/s ({extra['burst_mget'] / raw_burst:.1f}× raw); "
        f"aiotoolcache from its L1 (results layer) {extra['burst_l1']:,.0f} ops/s"
    )
    paths = []
    chosen_paths = (("L1", "path_local"), ("sequential", "path_seq"), ("burst", "path_burst"))
    for row_name, key in chosen_paths:
        chosen = ", ".join(f"{lib} {path}" for lib, path in extra[key].items())
        paths.append(f"{row_name}: {chosen}")
    out.append(
        "- each peer is shown with its faster read path, its decorator or its bare `get`: "
        f"{'; '.join(paths)}"
    )
    out.append(
        "- aiotoolcache goes through `layer.get_or_load` in each group's first row; the rows "
        "below it go through another of its read paths, measured in the same rounds, next to "
        "the same peer figures. `layer.get_many` reads batches of 50 keys: its figures are "
        "per key (µs/key; keys/s for the concurrent row, as concurrent batches). `call_tool` "
        "and the `@cached` function build their key from their arguments on every call"
    )
    zipf: dict[str, ZipfResult] = extra["zipf"]
    for name in (ATC, CW):
        ranked = sorted(zipf[name].breakdown.items(), key=lambda kv: -kv[1])
        by_name = ", ".join(f"{command} {calls:,}" for command, calls in ranked)
        out.append(f"- {name} zipf Redis commands by name: {by_name}")
    stats = extra["atc_stats"]
    errors = sum(layer.backend_errors for layer in stats.layers.values())
    dropped = sum(layer.dropped_writes for layer in stats.layers.values())
    out.append(
        f"- aiotoolcache over the whole run: breaker {stats.breaker_state} at the end, opened "
        f"{extra['breaker_opened']:,} times; backend errors {errors:,}, dropped writes {dropped:,}"
    )
    unexpected = {k: v for k, v in extra["unexpected_loads"].items() if v}
    if unexpected:
        out.append(f"- loads during hit measurements (should be none): {unexpected}")
    out.append(
        f"- best of: {plan.trials} trials for sequential hits, {plan.concurrent_rounds} rounds "
        f"of concurrent hits, {plan.zipf_runs} zipf runs per peer; the peer order is rotated "
        "between rounds so no peer always runs right after the same one"
    )
    out.append(
        f"- zipf: {plan.zipf_requests:,} requests over {plan.zipf_keys:,} keys, s = "
        f"{plan.zipf_s}, seed {plan.zipf_seed}, concurrency {plan.zipf_concurrency}, "
        f"loader = asyncio.sleep({plan.loader_delay}); every peer starts from an empty Redis "
        "and the same draw of keys; the run with the best wall time is kept, with its counts"
    )
    out.append(
        "- read-through: raw redis-py GET/SET by hand; cashews `@cache(ttl=...)`; aiocache "
        "`@cached(ttl=...)` with msgpack; aiotoolcache `layer.get_or_load` with fleet-wide "
        "single-flight (leases) on. cashews' decorator coalesces concurrent misses in process "
        "(its default `protected=True`); raw redis-py and aiocache's `@cached` do not"
    )
    out.append(
        f"- every peer keeps its entries {TTL:,} s, longer than a run: hit measurements "
        "never meet an expired entry"
    )
    return "\n".join(out)


def header(servers: Sequence[str], quick: bool) -> list[str]:
    versions = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("redis", "hiredis", "msgpack", "cashews", "aiocache")
    )
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# aiotoolcache compared with redis-py, cashews and aiocache",
        "",
        f"- date: {now}{' (quick run)' if quick else ''}",
        f"- machine: {machine()} (shared and noisy: ratios measured side by side, best of N)",
        f"- servers: {', '.join(servers)}; aiotoolcache {atc.__version__} "
        f"({source_revision()}); {versions}; hiredis parser in use: {hiredis_in_use()}",
        f"- command: `{command}`",
    ]


def report(sections: Sequence[Section], plan: Any, quick: bool) -> str:
    lines = header([section.server for section in sections], quick)
    for section in sections:
        lines += ["", f"## {section.server}", "", table(section.rows), ""]
        lines.append(notes(section.rows, section.extra, plan))
    return "\n".join([*lines, ""])


def summary(sections: Sequence[Section], quick: bool) -> dict[str, Any]:
    """The JSON object printed as the last line: every row's ratio, target and verdict.

    ``servers`` holds each server's rows; ``rows`` and ``all_met`` repeat the first's.
    """
    servers: dict[str, Any] = {}
    for section in sections:
        out = row_summaries(section.rows)
        servers[section.name] = {
            "server": section.server,
            "rows": out,
            "all_met": all(r["met"] is not False for r in out),
        }
    first = servers[sections[0].name]
    return {
        "rows": first["rows"],
        "all_met": first["all_met"],
        "server": sections[0].name,
        "servers": servers,
        "hiredis": hiredis_in_use(),
        "quick": quick,
    }


def row_summaries(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        best = row.best_peer()
        out.append(
            {
                "row": row.key,
                "metric": row.metric,
                "unit": row.unit,
                "values": row.values,
                "ratio": row.ratio(),
                "vs": None if best is None else best[0],
                "target": row.target,
                "met": row.met(),
            }
        )
    return out
