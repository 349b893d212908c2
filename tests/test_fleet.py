"""Fleet-wide stats: workers add their counter deltas to Redis; the sum is exact."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aiotoolcache as atc
from aiotoolcache.fleet import (
    COUNTER_FIELDS,
    FLOAT_FIELDS,
    FleetReporter,
    fleet_keys,
    fleet_stats,
    no_reporting_options,
    parse_fleet_hash,
)

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "fleet_worker.py"
COST = 0.01  # the declared cost_per_load of the workers' results layer


def worker(url: str, namespace: str, seed: int, mode: str = "finish", interval: float = 0.2):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AIOTOOLCACHE_URL", None)
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, namespace, str(seed), "60", str(interval), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def own_stats(process: subprocess.Popen[str]) -> dict[str, dict[str, float]]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "worker printed nothing"
    return json.loads(line)["stats"]["layers"]


@pytest.mark.slow
async def test_fleet_totals_are_the_sum_of_every_workers_own_stats(redis_url: str) -> None:
    workers = [worker(redis_url, "fleet", seed) for seed in (1, 2)]
    try:
        reported = [own_stats(process) for process in workers]
        for process in workers:
            assert process.wait(30) == 0
    finally:
        for process in workers:
            process.kill()
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    async with atc.ToolCache.from_url(
        redis_url, namespace="fleet", **no_reporting_options()
    ) as reader:
        fleet = await fleet_stats(reader)
    assert fleet.workers_alive == 0  # both closed: their heartbeats were removed
    for layer in ("discovery", "results"):
        totals = fleet[layer]
        for counter in COUNTER_FIELDS:
            assert getattr(totals, counter) == sum(w[layer][counter] for w in reported), counter
        for counter in FLOAT_FIELDS:
            expected = sum(w[layer][counter] for w in reported)
            assert getattr(totals, counter) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    results = fleet["results"]
    # The two workers shared keys: some lookups were answered by the other worker's load.
    assert results.l2_hits + results.remote_coalesced > 0
    assert results.loads <= 12 * 2
    avoided = results.hits + results.coalesced + results.remote_coalesced
    assert results.saved_cost == pytest.approx(avoided * COST)
    assert fleet.saved_cost == pytest.approx(avoided * COST)  # only results declared a cost
    assert 0 < results.hit_rate < 1
    assert results.mean_load_seconds > 0.004
    data = fleet.to_dict()
    assert data["layers"]["results"]["hits"] == results.hits
    assert json.loads(json.dumps(data)) == data


@pytest.mark.slow
async def test_a_dead_worker_drops_out_after_its_heartbeat_ttl(redis_url: str) -> None:
    interval = 0.3  # heartbeat TTL: 0.9 s
    process = worker(redis_url, "dead", 3, mode="hang", interval=interval)
    try:
        reported = own_stats(process)
        async with atc.ToolCache.from_url(
            redis_url, namespace="dead", **no_reporting_options()
        ) as reader:
            alive = await fleet_stats(reader)
            assert alive.workers_alive == 1
            (info,) = alive.workers
            assert info.pid == process.pid and info.interval == interval
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed = time.monotonic()
            # Still counted until the heartbeat expires...
            assert (await fleet_stats(reader)).workers_alive == 1
            while (fleet := await fleet_stats(reader)).workers_alive:
                assert time.monotonic() - killed < 3 * interval + 2, "heartbeat never expired"
                await asyncio.sleep(0.05)
            assert time.monotonic() - killed > 0.5
            # ...and what it reported before dying stays in the totals.
            assert fleet["results"].loads == reported["results"]["loads"]
            _, workers_key, _ = fleet_keys("dead")
            assert await reader.client.scard(workers_key) == 0  # pruned
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def test_deltas_kept_while_redis_is_down_arrive_once(own_redis) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="outage", cooldown=0.05, **no_reporting_options()
    ) as cache:
        reporter = FleetReporter(cache, interval=60)
        calls = 0

        async def load() -> int:
            nonlocal calls
            calls += 1
            return calls

        for _ in range(3):
            await cache.call_tool("s", "t", {"a": 1}, load)
        assert await reporter.flush()
        assert reporter.pending() == {}
        assert await reporter.flush()  # nothing new: nothing added twice
        before = cache.stats()["results"]
        assert (await fleet_stats(cache))["results"].l1_hits == before.l1_hits
        own_redis.kill()
        for _ in range(3):
            await cache.call_tool("s", "t", {"a": 1}, load)
        assert not await reporter.flush()
        assert reporter.failed_flushes == 1
        assert reporter.pending()  # kept for the next flush
        own_redis.start()  # an empty Redis: the first flush is gone with the old one
        deadline = time.monotonic() + 10
        while not await reporter.flush():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        fleet = (await fleet_stats(cache))["results"]
        now = cache.stats()["results"]
        for counter in COUNTER_FIELDS:
            assert getattr(fleet, counter) == getattr(now, counter) - getattr(before, counter)
        assert (await fleet_stats(cache)).workers_alive == 1
        await reporter.aclose()
        assert (await fleet_stats(cache)).workers_alive == 0


async def test_fleet_stats_match_local_stats_for_one_worker(redis_url: str) -> None:
    async with atc.ToolCache.from_url(
        redis_url, namespace="one", **no_reporting_options()
    ) as cache:
        await _one_worker(cache)


async def _one_worker(cache: atc.ToolCache) -> None:
    reporter = FleetReporter(cache, interval=0.05)
    reporter.start()
    for i in range(5):
        await cache.call_tool("s", "t", {"i": i % 2}, lambda: asyncio.sleep(0.001, "v"))
    await cache.embed(
        ["a", "b", "a"], model="m", loader=lambda t: asyncio.sleep(0, [[1.0]] * len(t))
    )
    deadline = time.monotonic() + 5
    while reporter.pending():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    fleet = await fleet_stats(cache)
    local = cache.stats()
    for layer in ("results", "embeddings"):
        for counter in COUNTER_FIELDS:
            assert getattr(fleet[layer], counter) == getattr(local[layer], counter)
    assert fleet.workers_alive == 1
    await reporter.aclose()
    await reporter.aclose()  # idempotent


async def test_an_embedded_cache_has_no_fleet() -> None:
    async with atc.ToolCache() as cache:
        reporter = FleetReporter(cache)
        reporter.start()
        assert not await reporter.flush()
        await reporter.aclose()
        with pytest.raises(atc.ConfigurationError):
            await fleet_stats(cache)


def test_unknown_fields_in_the_hash_are_ignored() -> None:
    layers = parse_fleet_hash(
        {
            b"results:l1_hits": b"3",
            b"results:saved_cost": b"0.5",
            b"junk": b"1",
            b"x:nope": b"2",
            b"results:misses": b"not-a-number",
        }
    )
    assert list(layers) == ["results"]
    assert layers["results"].l1_hits == 3 and layers["results"].saved_cost == 0.5
    assert layers["results"].misses == 0


def test_interval_must_be_positive() -> None:
    cache = atc.ToolCache()
    with pytest.raises(atc.ConfigurationError):
        FleetReporter(cache, interval=0)


HOOKED = "fleet_interval" in inspect.signature(atc.ToolCache.__init__).parameters


@pytest.mark.skipif(not HOOKED, reason="ToolCache has no built-in fleet reporter")
async def test_every_redis_cache_reports_to_the_fleet_by_itself(redis_url: str) -> None:
    options = {"fleet_interval": 0.05}
    async with atc.ToolCache.from_url(redis_url, namespace="auto", **options) as cache:
        await cache.call_tool("s", "t", {}, lambda: asyncio.sleep(0, 1))
        await cache.call_tool("s", "t", {}, lambda: asyncio.sleep(0, 1))
        deadline = time.monotonic() + 5
        while (fleet := await cache.fleet_stats()).workers_alive != 1 or not fleet.layers:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    async with atc.ToolCache.from_url(redis_url, namespace="auto", **no_reporting_options()) as r:
        fleet = await fleet_stats(r)
    assert fleet.workers_alive == 0  # closed: its heartbeat is gone
    assert (fleet["results"].l1_hits, fleet["results"].loads) == (1, 1)  # final flush
