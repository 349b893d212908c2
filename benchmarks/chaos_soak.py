"""The chaos checker's soak: the fault schedule looped, and each worker's resources over time.

Every worker samples, about once a second, ``["m", t, rss_bytes, tasks,
sockets, outbox]``: its resident set, the asyncio tasks alive, its open
sockets and the invalidations its cache's outbox holds. ``soak_summary``
compares the first and the last quarter of the run per worker, gives each
curve's slope over the second half (a leak keeps growing there) and draws
the four curves; ``merge_rounds`` folds the phases of every round into one
table row per fault.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["merge_rounds", "parse_duration", "resources", "server_name", "soak_summary"]

CURVES = (
    ("rss_mb", "resident memory (MB)"),
    ("tasks", "asyncio tasks"),
    ("sockets", "open sockets"),
    ("outbox", "outbox entries"),
)
_SUMMED = (
    "reads",
    "caller_errors",
    "wrong_values",
    "stale_beyond_bound",
    "stale_after_fault",
    "breaker_openings",
    "loads",
    "distinct_keys",
    "distinct_versions",
    "writes",
    "acknowledged",
)
_HIGHEST = ("fault_s", "max_staleness_ms", "heal_s", "max_write_ms")


def parse_duration(text: str) -> float:
    """Seconds in ``20m``, ``90s``, ``1h`` or a bare number of seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if match is None:
        raise SystemExit(f"not a duration: {text!r} (say 20m, 90s or 1h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def resources(cache: Any) -> tuple[int, int, int, int]:
    """This process's resident bytes, live tasks, open sockets and ``cache``'s outbox size."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue  # closed meanwhile
    outbox = getattr(getattr(cache, "outbox", None), "pending", 0)
    return rss, len(asyncio.all_tasks()), sockets, int(outbox)


def server_name() -> str:
    from aiotoolcache.local_server import find_server

    found = find_server()
    return "none" if found is None else f"{found.flavour} {found.version}"


def merge_rounds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per phase name: counts summed, worst times kept, healed only if always."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        into = merged.get(row["phase"])
        if into is None:
            merged[row["phase"]] = {**row, "rounds": 1}
            continue
        into["rounds"] += 1
        for name in _SUMMED:
            into[name] += row[name]
        for name in _HIGHEST:
            into[name] = max(into[name], row[name])
        into["healed"] = into["healed"] and row["healed"]
    return list(merged.values())


def soak_summary(
    records: dict[str, list[list[Any]]], names: Sequence[str], plot_path: Path | None
) -> dict[str, Any]:
    """Per worker and curve: the median of the first and of the last quarter of the run."""
    by_worker: dict[int, list[list[Any]]] = defaultdict(list)
    for sample in records.get("m", []):
        by_worker[sample[-1]].append(sample)
    summary: dict[str, Any] = {}
    for index, samples in sorted(by_worker.items()):
        samples.sort(key=lambda s: s[1])
        quarter = max(1, len(samples) // 4)
        worker: dict[str, Any] = {"samples": len(samples)}
        for position, (curve, _) in enumerate(CURVES):
            values = [_value(s, position) for s in samples]
            half = len(samples) // 2
            worker[curve] = {
                "first_quarter": _median(values[:quarter]),
                "last_quarter": _median(values[-quarter:]),
                "max": max(values),
                # A leak keeps its slope; a warm-up's flattens out by the second half.
                "second_half_per_10min": _slope([s[1] for s in samples[half:]], values[half:]),
            }
        summary[names[index]] = worker
    if plot_path is not None and by_worker:
        plot(by_worker, names, plot_path)
    return summary


def _value(sample: list[Any], position: int) -> float:
    raw = sample[2 + position]
    return float(raw) / 2**20 if position == 0 else float(raw)


def _slope(times: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares growth of ``values`` over ``times`` (seconds), per 10 minutes."""
    if len(times) < 2:
        return 0.0
    mean_t, mean_v = sum(times) / len(times), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    return round(covariance / spread * 600, 2)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 1) if ordered else 0.0


def plot(by_worker: dict[int, list[list[Any]]], names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    began = min(s[1] for samples in by_worker.values() for s in samples)
    for position, (ax, (_, title)) in enumerate(zip(axes.flat, CURVES, strict=True)):
        for index, samples in sorted(by_worker.items()):
            minutes = [(s[1] - began) / 60 for s in samples]
            ax.plot(minutes, [_value(s, position) for s in samples], "-", label=names[index])
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in axes[1]:
        ax.set_xlabel("minutes into the soak")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle("aiotoolcache chaos soak: each worker's resources while the faults loop")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
