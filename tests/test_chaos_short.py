"""The chaos checker runs its short schedule end to end and reports every phase.

Violations under faults are what the checker exists to find, so this test pins
only the report's structure and the fault-free control phase.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import require_redis_server

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["control", "flushall", "client_kill", "sigkill", "partition"]
COUNTS = (
    "reads",
    "caller_errors",
    "wrong_values",
    "stale_beyond_bound",
    "stale_after_fault",
    "max_staleness_ms",
    "breaker_openings",
    "loads",
    "distinct_keys",
    "distinct_versions",
    "writes",
    "acknowledged",
    "max_write_ms",
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_short_schedule_reports_every_phase() -> None:
    require_redis_server()
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--short"],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["schedule"] == "short"
    assert result["bound_ms"] == 100
    assert [row["phase"] for row in result["phases"]] == PHASES
    assert any(line.startswith("| control |") for line in lines[:-1])
    for row in result["phases"]:
        for name in COUNTS:
            assert isinstance(row[name], int) and not isinstance(row[name], bool), (row, name)
            assert row[name] >= 0, (row, name)
        assert row["reads"] > 0, row
        assert row["writes"] > 0, row
        assert isinstance(row["heal_s"], float | int) and row["heal_s"] >= 0
        assert isinstance(row["healed"], bool)
    control = result["phases"][0]
    assert control["caller_errors"] == 0
    assert control["wrong_values"] == 0
    assert control["loads"] > 0
    totals = result["totals"]
    assert totals["reads"] == sum(row["reads"] for row in result["phases"])
    assert set(totals) >= {"caller_errors", "wrong_values", "stale_beyond_bound", "max_heal_s"}


DISTRIBUTED_PHASES = {
    "cluster": [
        "control",
        "primary_sigkill",
        "cluster_failover",
        "slot_migration",
        "lagging_promotion",
    ],
    "sentinel": ["control", "primary_sigkill", "lagging_promotion"],
}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("deployment", ["cluster", "sentinel"])
def test_short_distributed_schedule_serves_no_error_and_no_wrong_value(deployment: str) -> None:
    """Failovers (killed, manual, lagging) and a slot migration under load."""
    require_redis_server()
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), f"--{deployment}", "--short"],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["deployment"] == deployment
    assert [row["phase"] for row in result["phases"]] == DISTRIBUTED_PHASES[deployment]
    for row in result["phases"]:
        assert row["reads"] > 0 and row["writes"] > 0, row
    # A failover may lose acknowledged writes; it must never make a caller fail or
    # serve a value that was never the key's.
    assert result["totals"]["caller_errors"] == 0, result["phases"]
    assert result["totals"]["wrong_values"] == 0, result["phases"]
