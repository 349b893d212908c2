"""The benchmarks keep working: every asv benchmark runs once, and the peer comparison runs small.

Each asv benchmark goes through its own ``setup`` (which starts a redis-server), one call
and ``teardown``. The comparison script runs as ``compare.py --quick`` in a subprocess when
its peers (cashews, aiocache) are installed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers import require_redis_server

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("time_", "track_")


def bench_module() -> ModuleType:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.bench_cache")


def benchmarks() -> list[tuple[type, str]]:
    module = bench_module()
    found: list[tuple[type, str]] = []
    for _, suite in inspect.getmembers(module, inspect.isclass):
        if suite.__module__ != module.__name__ or suite.__name__.startswith("_"):
            continue
        found.extend((suite, name) for name in sorted(dir(suite)) if name.startswith(PREFIXES))
    return found


BENCHMARKS = benchmarks()


def test_every_named_benchmark_exists() -> None:
    names = {name for _, name in BENCHMARKS}
    assert names >= {
        "time_l1_hit",
        "time_l2_hit",
        "time_miss_and_load",
        "time_get_many_100",
        "time_1000_concurrent_l2_hits",
        "time_embed_batch_64",
        "track_stampede_loader_calls",
        "track_remote_wake_ms",
        "track_polling_wake_ms",
        "track_invalidation_propagation_ms",
    }


@pytest.mark.parametrize(
    ("suite", "name"), BENCHMARKS, ids=[f"{suite.__name__}.{name}" for suite, name in BENCHMARKS]
)
def test_benchmark_runs_once(suite: type, name: str) -> None:
    require_redis_server()
    instance = suite()
    instance.setup()
    try:
        result = getattr(instance, name)()
    finally:
        instance.teardown()
    if name.startswith("track_"):
        assert isinstance(result, int | float) and result >= 0
    if name == "track_stampede_loader_calls":
        assert result == 1  # one load for the whole fleet


HIT_ROWS = ("l1_hit", "l2_hit", "concurrent_l2_hits")
READ_PATHS = ("get", "get_many", "call_tool", "cached")


@pytest.mark.timeout(120)
def test_compare_quick_prints_a_table(tmp_path: Path) -> None:
    pytest.importorskip("cashews")
    pytest.importorskip("aiocache")
    require_redis_server()
    output = tmp_path / "results.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick", "--output", output],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| metric | unit | raw redis-py |" in run.stdout
    assert "| sequential L2 hit | µs/op |" in run.stdout
    # Every read path of aiotoolcache has its rows, get_many's per key.
    assert "| L1 hit: `call_tool` | µs/op |" in run.stdout
    assert "| sequential L2 hit: `layer.get_many` (50 keys, per key) | µs/key |" in run.stdout
    assert "zipf Redis commands" in output.read_text()
    last = json.loads(run.stdout.strip().splitlines()[-1])
    by_row = {row["row"]: row for row in last["rows"]}
    paths = [f"{hit}_{path}" for hit in HIT_ROWS for path in READ_PATHS]
    assert set(by_row) >= {*HIT_ROWS, *paths, "zipf_wall", "zipf_loads", "zipf_commands"}
    # The first server's rows are the top-level ones; each server has its own section.
    assert last["servers"][last["server"]]["rows"] == last["rows"]
    for section in last["servers"].values():
        assert f"## {section['server']}" in run.stdout
        assert {row["row"] for row in section["rows"]} == set(by_row)
    for row in by_row.values():
        assert row["target"] and row["met"] in (True, False, None)
        assert row["ratio"] is None or row["ratio"] > 0
    # Fleet-wide single-flight: one load per distinct key, whatever the speed.
    assert by_row["zipf_loads"]["met"] is True
    assert last["hiredis"] is True


@pytest.mark.timeout(120)
def test_scaling_quick_writes_every_dimension(tmp_path: Path) -> None:
    require_redis_server()
    pytest.importorskip("matplotlib")
    output, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    script = str(ROOT / "benchmarks" / "scaling.py")
    run = subprocess.run(
        [sys.executable, script, "--quick", "--json", output, "--plot", png],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(output.read_text())
    assert isinstance(data["flagged"], list)
    dimensions = {step["dimension"] for step in data["steps"]}
    assert dimensions == {"concurrency hits", "concurrency misses", "key count", "value size"}
    for step in data["steps"]:
        assert step["ops"] > 0
        assert step["client_us"] > 0 and step["cmds"] >= 0 and step["server_us"] >= 0
        assert isinstance(step["flags"], list)
        # Hits never load; every miss of a new key loads exactly once.
        expected_loads = 1.0 if step["dimension"] == "concurrency misses" else 0.0
        assert step["loads_per_op"] == expected_loads
    assert "| concurrency hits | 1 |" in run.stdout
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(60)
def test_profile_hit_quick_prints_a_table_and_json() -> None:
    require_redis_server()
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_hit.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=55,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(run.stdout.strip().splitlines()[-1])
    for hit in ("l1_hit", "l2_hit"):
        assert data[hit]["whole_us"] > 0
        names = [row["component"] for row in data[hit]["components"]]
        assert any(name.startswith("key name") for name in names)
    assert "| component | µs | share |" in run.stdout


@pytest.mark.timeout(120)
def test_settle_quick_reports_acks_and_the_bound() -> None:
    require_redis_server()
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "settle.py"), "--quick", "--writes", "10"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    live, frozen = json.loads(run.stdout.strip().splitlines()[-1])
    assert live["by_acks"] + live["by_bound"] == 10 and live["by_acks"] > 0
    assert (frozen["frozen"], frozen["by_acks"], frozen["by_bound"]) == (1, 0, 10)
    assert frozen["settled_p50_ms"] > 0


@pytest.mark.timeout(60)
def test_lease_commands_counts_every_case_both_ways() -> None:
    require_redis_server()
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lease_commands.py"), "--keys", "10"],
        capture_output=True,
        text=True,
        timeout=55,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])["rows"]
    assert [(row["case"], row["path"]) for row in rows[:2]] == [
        ("lone", "scripts"),
        ("lone", "as the server allows"),
    ]
    assert {row["case"] for row in rows} == {"lone", "batch", "failed", "awaited"}
    for row in rows:
        assert row["commands_per_miss"] > 0
        if row["path"] == "scripts" and row["case"] != "batch":
            assert row["scripts_per_miss"] >= 1  # every fill or release is a script call


TRACK_EVERY_ROW = """
import json
from benchmarks import bench_compare, compare
rows = bench_compare.measure_rows(compare.QUICK)
suite = bench_compare.CompareSuite()
names = [name for name in dir(suite) if name.startswith("track_")]
print(json.dumps({name: getattr(suite, name)(rows) for name in names}))
"""


@pytest.mark.timeout(120)
def test_compare_suite_tracks_every_row() -> None:
    pytest.importorskip("cashews")
    pytest.importorskip("aiocache")
    require_redis_server()
    # In a subprocess: the peers' own connection clean-up is not this project's to police.
    run = subprocess.run(
        [sys.executable, "-c", TRACK_EVERY_ROW],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    tracks = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(tracks) == 6  # one per row of the table in docs/performance.md
    for value in tracks.values():
        assert isinstance(value, float) and value > 0
    assert tracks["track_zipf_loader_calls_per_distinct_key"] == 1.0
