"""The chaos checker's verdict: what the workers' logs say about each fault phase.

Pure functions over the records ``chaos_workers`` writes and the phase timeline
``chaos`` keeps; no I/O besides reading the log files. The figures, per phase
(a read belongs to the phase in which it started):

- ``caller_errors``: exceptions a cache call raised to its caller (readers'
  ``get_or_load``, and the writer's calls apart from the ``BackendError`` that
  strict mode raises when a change did not reach Redis);
- ``wrong_values``: reads that returned something that is not a value of that key
  at a version already written when the read returned (garbage, another key's
  value, a version from the future);
- ``stale_beyond_bound``: reads that returned a version older than one whose
  write or invalidation Redis had acknowledged more than ``BOUND`` (100 ms)
  before the read began;
- ``max_staleness_ms``: over every read, the longest time from the
  acknowledgement of a newer version to the start of a read that still
  returned an older one (0 when no read lagged an acknowledged write);
  ``stale_after_fault`` counts the stale reads that began after the fault
  ended, ``stale_by_operation`` all of them by the kind of change they
  missed (``set``, ``delete``, ``tag``, ``server`` or ``layer``);
- ``heal_s``: from the end of the fault until each reader's last read that was
  not current, the slowest reader; a read is current when it returned a
  well-formed value at least as new as every change whose call had returned
  ``BOUND`` before the read began, acknowledged or not (after a fault, the
  changes that failed during it must land too). ``healed`` is False when
  some reader was still not current in the phase's last ``SETTLE`` seconds,
  or made no read then;
- ``breaker_openings``: circuit-breaker openings, summed over the workers;
- ``loads``, ``distinct_keys``, ``distinct_versions``: loader calls, the keys
  they were for, and the distinct (key, version) pairs they returned;
- ``writes``, ``acknowledged``: the writer's changes, and those Redis accepted;
  ``max_write_ms`` the longest any of those calls took.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BOUND", "Timeline", "load_records", "render_table", "verdict"]

BOUND = 0.1
SETTLE = 1.0
OK = ("ok", "bad")


@dataclass
class Timeline:
    """Timeline is, per key, when each version was assigned, when its call returned, and
    when Redis acknowledged it."""

    assigned: dict[int, tuple[list[float], list[int]]] = field(default_factory=dict)
    returned: dict[int, tuple[list[float], list[int]]] = field(default_factory=dict)
    acked: dict[int, tuple[list[float], list[int]]] = field(default_factory=dict)
    kind: dict[tuple[int, int], str] = field(default_factory=dict)  # (key, version) -> op

    @classmethod
    def from_writes(cls, writes: Iterable[list[Any]]) -> Timeline:
        assigned: dict[int, list[tuple[float, int]]] = defaultdict(list)
        returned: dict[int, list[tuple[float, int]]] = defaultdict(list)
        acked: dict[int, list[tuple[float, int]]] = defaultdict(list)
        timeline = cls()
        for _, stamp, back, op, keys, versions, ok, _error in writes:
            for key, version in zip(keys, versions, strict=True):
                timeline.kind[key, version] = op.split()[0]
                assigned[key].append((stamp, version))
                returned[key].append((back, version))
                if ok:
                    acked[key].append((back, version))
        pairs_by_series = (
            (timeline.assigned, assigned),
            (timeline.returned, returned),
            (timeline.acked, acked),
        )
        for target, source in pairs_by_series:
            for key, pairs in source.items():
                pairs.sort()
                target[key] = ([t for t, _ in pairs], [v for _, v in pairs])
        return timeline

    @staticmethod
    def _at(series: tuple[list[float], list[int]] | None, moment: float) -> int:
        # The newest version stamped at or before ``moment`` (version 0 is the start).
        if series is None:
            return 0
        i = bisect_right(series[0], moment)
        return series[1][i - 1] if i else 0

    def written_by(self, key: int, moment: float) -> int:
        """The newest version of ``key`` assigned by ``moment``."""
        return self._at(self.assigned.get(key), moment)

    def settled_by(self, key: int, moment: float) -> int:
        """The newest version of ``key`` whose change had returned by ``moment``, ok or not."""
        return self._at(self.returned.get(key), moment)

    def superseded(self, key: int, version: int) -> tuple[float, str] | None:
        """When Redis first acknowledged a version newer than ``version``, and by which
        operation (None: never)."""
        series = self.acked.get(key)
        if series is None:
            return None
        for moment, newer in zip(*series, strict=True):
            if newer > version:
                return moment, self.kind[key, newer]
        return None


def load_records(paths: Iterable[Path]) -> dict[str, list[list[Any]]]:
    """Read JSON-lines logs into records by type (a torn last line is skipped)."""
    out: dict[str, list[list[Any]]] = defaultdict(list)
    for index, path in enumerate(paths):
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record[0] in ("r", "l", "s", "m"):
                record.append(index)  # which worker
            out[record[0]].append(record)
    return out


def _wrong(timeline: Timeline, read: list[Any]) -> bool:
    _, _start, end, key, version, kind, _worker = read
    if kind == "bad":
        return True
    return bool(version < 0 or version > timeline.written_by(key, end))


def _current(timeline: Timeline, read: list[Any]) -> bool:
    _, start, _end, key, version, kind, _worker = read
    if kind != "ok" or _wrong(timeline, read):
        return False
    return bool(version >= timeline.settled_by(key, start - BOUND))


def _openings(samples: Sequence[list[Any]], moment: float) -> int:
    total = 0
    by_worker: dict[int, list[list[Any]]] = defaultdict(list)
    for sample in samples:
        by_worker[sample[-1]].append(sample)
    for series in by_worker.values():
        before = [s[2] for s in series if s[1] <= moment]
        total += before[-1] if before else 0
    return total


def _heal(
    timeline: Timeline, reads: Sequence[list[Any]], phase: dict[str, Any]
) -> tuple[float, bool]:
    fault_end, end = phase["fault_end"], phase["end"]
    by_reader: dict[int, list[list[Any]]] = defaultdict(list)
    for read in reads:
        if read[1] >= fault_end:
            by_reader[read[-1]].append(read)
    heal, healed = 0.0, True
    for series in by_reader.values():
        bad = [r[2] for r in series if not _current(timeline, r)]
        heal = max(heal, max(bad, default=fault_end) - fault_end)
        tail = [r for r in series if r[1] >= end - SETTLE]
        if not tail or any(not _current(timeline, r) for r in tail):
            healed = False
    return heal, healed


def _phase(
    timeline: Timeline, records: dict[str, list[list[Any]]], phase: dict[str, Any]
) -> dict[str, Any]:
    start, end = phase["start"], phase["end"]
    reads = [r for r in records["r"] if start <= r[1] < end]
    writes = [w for w in records["w"] if start <= w[1] < end]
    loads = [ld for ld in records["l"] if start <= ld[1] < end]
    errors = sum(1 for r in reads if r[5] not in OK)
    errors += sum(1 for w in writes if w[7] is not None and not w[7].startswith("backend:"))
    served = [r for r in reads if r[5] == "ok" and not _wrong(timeline, r)]
    stale, stale_after, max_stale = 0, 0, 0.0
    stale_by: dict[str, int] = {}
    for _, begun, _end, key, version, _kind, _worker in served:
        newer = timeline.superseded(key, version)
        if newer is None or newer[0] >= begun:
            continue
        max_stale = max(max_stale, begun - newer[0])
        if begun - newer[0] > BOUND:
            stale += 1
            stale_after += begun >= phase["fault_end"]
            stale_by[newer[1]] = stale_by.get(newer[1], 0) + 1
    heal, healed = _heal(timeline, reads, phase)
    samples = records["s"]
    return {
        "phase": phase["name"],
        "fault_s": round(phase["fault_end"] - phase["fault_start"], 3),
        "reads": len(reads),
        "caller_errors": errors,
        "wrong_values": sum(1 for r in reads if r[5] in OK and _wrong(timeline, r)),
        "stale_beyond_bound": stale,
        "stale_after_fault": stale_after,
        "stale_by_operation": dict(sorted(stale_by.items())),
        "max_staleness_ms": round(max_stale * 1000),
        "heal_s": round(heal, 3),
        "healed": healed,
        "breaker_openings": _openings(samples, end) - _openings(samples, start),
        "loads": len(loads),
        "distinct_keys": len({ld[2] for ld in loads}),
        "distinct_versions": len({(ld[2], ld[3]) for ld in loads}),
        "writes": len(writes),
        "acknowledged": sum(1 for w in writes if w[6]),
        "max_write_ms": round(max((w[2] - w[1] for w in writes), default=0.0) * 1000),
    }


def verdict(
    records: dict[str, list[list[Any]]], phases: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Return every phase's figures and the totals, as one JSON-able object."""
    timeline = Timeline.from_writes(records["w"])
    rows = [_phase(timeline, records, phase) for phase in phases]
    summed = ("reads", "caller_errors", "wrong_values", "stale_beyond_bound", "breaker_openings")
    totals: dict[str, Any] = {name: sum(row[name] for row in rows) for name in summed}
    totals["max_staleness_ms"] = max((row["max_staleness_ms"] for row in rows), default=0)
    totals["max_heal_s"] = max((row["heal_s"] for row in rows), default=0.0)
    totals["all_healed"] = all(row["healed"] for row in rows)
    return {"bound_ms": round(BOUND * 1000), "phases": rows, "totals": totals}


COLUMNS = (
    ("phase", "phase"),
    ("fault s", "fault_s"),
    ("reads", "reads"),
    ("caller errors", "caller_errors"),
    ("wrong values", "wrong_values"),
    ("stale > 100 ms", "stale_beyond_bound"),
    ("max stale ms", "max_staleness_ms"),
    ("heal s", "heal_s"),
    ("breaker opens", "breaker_openings"),
    ("loads / keys / versions", "loads"),
    ("writes acked", "writes"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "loads":
        return f"{row['loads']} / {row['distinct_keys']} / {row['distinct_versions']}"
    if key == "writes":
        return f"{row['acknowledged']} / {row['writes']}"
    if key == "heal_s":
        return f"{row['heal_s']:.2f}" + ("" if row["healed"] else " (not healed)")
    if key == "stale_beyond_bound":
        return f"{row['stale_beyond_bound']} ({row['stale_after_fault']} after)"
    return str(row[key])


def render_table(result: dict[str, Any]) -> str:
    """Return the figures as a markdown table, one row per phase."""
    lines = ["| " + " | ".join(title for title, _ in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" if key == "phase" else "---:" for _, key in COLUMNS) + "|")
    for row in result["phases"]:
        lines.append("| " + " | ".join(_cell(row, key) for _, key in COLUMNS) + " |")
    return "\n".join(lines)
