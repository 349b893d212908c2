"""The chaos soak's summary: rounds folded per fault, first and last quarter of each curve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos import plan_for, schedule  # noqa: E402
from benchmarks.chaos_soak import (  # noqa: E402
    merge_rounds,
    parse_duration,
    resources,
    soak_summary,
)


def row(phase: str, reads: int, heal_s: float, healed: bool = True) -> dict[str, Any]:
    counts = dict.fromkeys(
        (
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
        ),
        1,
    )
    times = {"fault_s": 1.0, "max_staleness_ms": 5, "max_write_ms": 10}
    return {"phase": phase, "reads": reads, "heal_s": heal_s, "healed": healed, **counts, **times}


def test_rounds_of_a_fault_fold_into_one_row() -> None:
    rows = [row("control", 10, 0.0), row("sigkill", 5, 0.2), row("sigkill", 7, 0.9, False)]
    merged = merge_rounds(rows)
    assert [r["phase"] for r in merged] == ["control", "sigkill"]
    sigkill = merged[1]
    assert sigkill["rounds"] == 2
    assert sigkill["reads"] == 12 and sigkill["writes"] == 2
    assert sigkill["heal_s"] == 0.9  # the worst round
    assert sigkill["healed"] is False  # healed only if every round did


@pytest.mark.parametrize(
    ("text", "seconds"), [("20m", 1200), ("90s", 90), ("1h", 3600), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_refused() -> None:
    with pytest.raises(SystemExit, match="not a duration"):
        parse_duration("twenty minutes")


def test_growth_shows_between_the_first_and_the_last_quarter(tmp_path: Path) -> None:
    # Worker 0 flat; worker 1 grows one task per sample.
    samples = [["m", float(t), 50 * 2**20, 10, 4, 0, 0] for t in range(8)]
    samples += [["m", float(t), 50 * 2**20, 10 + t, 4, 0, 1] for t in range(8)]
    summary = soak_summary({"m": samples}, ["writer", "reader0"], tmp_path / "soak.png")
    assert summary["writer"]["tasks"] == {
        "first_quarter": 10.0,
        "last_quarter": 10.0,
        "max": 10.0,
        "second_half_per_10min": 0.0,
    }
    reader = summary["reader0"]["tasks"]
    assert reader["last_quarter"] > reader["first_quarter"]
    assert reader["second_half_per_10min"] == 600.0  # one task a second
    assert summary["writer"]["rss_mb"]["max"] == 50.0
    assert (tmp_path / "soak.png").stat().st_size > 0


async def test_resources_of_this_process() -> None:
    rss, tasks, sockets, outbox = resources(object())
    assert rss > 0 and tasks >= 1 and sockets >= 0
    assert outbox == 0  # no outbox on that object


def test_only_keeps_the_named_faults_of_a_schedule() -> None:
    control, lead, recovery, faults = plan_for("single", False, ["drops", "sigkill"])
    assert (control, lead, recovery) == schedule(False)[:3]
    assert [fault.name for fault in faults] == ["sigkill", "drops"]
    with pytest.raises(SystemExit, match="no such fault: nonsense"):
        plan_for("single", False, ["nonsense"])
