"""Freshness: stale-while-revalidate, stale-if-error, XFetch early refresh and TTL jitter."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import pytest

import aiotoolcache as atc
from aiotoolcache.freshness import Freshness, classify, jittered, xfetch_probability
from tests.servers import RedisServer
from tests.workers import eventually

SOFT = atc.LayerConfig(ttl=0.3, stale_ttl=30, jitter=0, beta=0)


class Refresh:
    """Refresh is a loader that blocks until opened and counts its runs."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self.opened = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        await self.opened.wait()
        return self.value


async def constant_v1() -> str:
    return "v1"


def cached_envelope(cache: atc.ToolCache, layer: str, key: Any) -> atc.Envelope | None:
    entry = cache.l1.get(cache.layer(layer).ref(key).value_key)
    return None if entry is None else entry.envelope


def holds_stale(cache: atc.ToolCache, layer: str, key: Any) -> bool:
    """True while this worker's L1 holds a copy of ``key`` past its soft expiry."""
    envelope = cached_envelope(cache, layer, key)
    return envelope is not None and envelope.fresh_until <= time.time()


# -- stale-while-revalidate and stale-if-error -------------------------------------------------


async def test_after_soft_expiry_200_concurrent_reads_get_the_stale_value_and_one_refresh_runs(
    cache: atc.ToolCache,
) -> None:
    fast = cache.add_layer("fast", SOFT)
    await fast.get_or_load("k", constant_v1)
    await asyncio.sleep(0.35)  # past soft expiry, far from hard expiry
    refresh = Refresh("v2")
    async with asyncio.timeout(10):
        values = await asyncio.gather(*(fast.get_or_load("k", refresh) for _ in range(200)))
        # Every read got its answer before the refresh could finish: nobody waited for it.
        assert values == ["v1"] * 200
        await eventually(lambda: refresh.calls == 1)  # it runs in the background
        refresh.opened.set()
        await eventually(lambda: fast.counters.loads == 2)
        await eventually(lambda: not holds_stale(cache, "fast", "k"))
        assert await fast.get_or_load("k", refresh) == "v2"
    assert refresh.calls == 1
    assert fast.counters.stale_served == 200


async def test_two_workers_serving_a_stale_value_refresh_it_once(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    """The refresh is fleet-wide: one worker refreshes, the other picks the new value up."""
    fast, other_fast = cache.add_layer("fast", SOFT), other_worker.add_layer("fast", SOFT)
    await fast.get_or_load("k", constant_v1)
    assert await other_fast.get_or_load("k", constant_v1) == "v1"
    await asyncio.sleep(0.35)
    refresh = Refresh("v2")
    async with asyncio.timeout(10):
        values = await asyncio.gather(
            *(layer.get_or_load("k", refresh) for _ in range(100) for layer in (fast, other_fast))
        )
        assert values == ["v1"] * 200
        refresh.opened.set()
        # Whichever worker refreshed, the other drops its stale copy when the fill is announced.
        await eventually(lambda: fast.counters.loads + other_fast.counters.loads == 2)
        await eventually(
            lambda: (
                not holds_stale(cache, "fast", "k") and not holds_stale(other_worker, "fast", "k")
            )
        )
        assert await fast.get_or_load("k", refresh) == "v2"
        assert await other_fast.get_or_load("k", refresh) == "v2"
    assert refresh.calls == 1


async def test_failing_refresh_serves_the_stale_value_and_counts_the_error(
    cache: atc.ToolCache,
) -> None:
    fast = cache.add_layer("fast", SOFT)
    await fast.get_or_load("k", constant_v1)
    await asyncio.sleep(0.35)

    async def broken() -> str:
        raise ConnectionError("the tool server is down")

    async with asyncio.timeout(10):
        assert await fast.get_or_load("k", broken) == "v1"
        await eventually(lambda: fast.counters.refresh_errors == 1)
        assert await fast.get_or_load("k", broken) == "v1"  # still served: stale-if-error
    assert fast.counters.stale_served >= 2


# -- XFetch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("remaining", [0.02, 0.05, 0.1, 0.2, 0.4, 0.8])
def test_xfetch_refresh_frequency_matches_exp_minus_remaining_over_delta_beta(
    remaining: float,
) -> None:
    """Tolerance: 0.015 absolute on 20,000 seeded draws (over 4 standard deviations)."""
    delta, beta, draws = 0.1, 2.0, 20_000
    rng = random.Random(20150831)
    now = 1_000.0
    early = sum(
        classify(now + remaining, delta, beta, now, rng.random()) is Freshness.REFRESH_EARLY
        for _ in range(draws)
    )
    expected = math.exp(-remaining / (delta * beta))
    assert xfetch_probability(remaining, delta, beta) == pytest.approx(expected)
    assert abs(early / draws - expected) < 0.015


def test_xfetch_probability_edges_and_monotonicity() -> None:
    assert xfetch_probability(0.0, 0.1, 1.0) == 1.0
    assert xfetch_probability(-1.0, 0.1, 1.0) == 1.0
    assert xfetch_probability(1.0, 0.1, 0.0) == 0.0  # beta 0 disables early refresh
    assert xfetch_probability(1.0, 0.0, 1.0) == 0.0  # an instant load never refreshes early
    by_remaining = [xfetch_probability(r, 0.1, 1.0) for r in (0.01, 0.1, 1.0, 10.0)]
    assert by_remaining == sorted(by_remaining, reverse=True)
    by_beta = [xfetch_probability(1.0, 0.1, b) for b in (0.5, 1.0, 2.0, 4.0)]
    assert by_beta == sorted(by_beta)
    by_delta = [xfetch_probability(1.0, d, 1.0) for d in (0.05, 0.1, 0.5, 2.0)]
    assert by_delta == sorted(by_delta)


def test_classify_past_soft_expiry_is_stale_whatever_the_draw() -> None:
    for rand in (0.0, 0.5, 0.999):
        assert classify(10.0, 0.1, 1.0, 10.0, rand) is Freshness.STALE
        assert classify(10.0, 0.1, 0.0, 11.0, rand) is Freshness.STALE
        assert classify(10.0, 0.1, 0.0, 9.99, rand) is Freshness.FRESH


async def test_seeded_caches_draw_the_same_refresh_decisions(redis_url: str) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, seed=7) as a,
        atc.ToolCache.from_url(redis_url, seed=7) as b,
    ):
        assert [a.rng.random() for _ in range(5)] == [b.rng.random() for _ in range(5)]


async def test_xfetch_refreshes_early_before_soft_expiry(redis_url: str) -> None:
    config = atc.LayerConfig(ttl=1.0, stale_ttl=10, jitter=0, beta=3.0)
    loads: list[float] = []

    async def slow_load() -> int:
        await asyncio.sleep(0.1)  # delta ~ 0.1 s, so delta * beta ~ 0.3 s
        loads.append(time.time())
        return len(loads)

    async with atc.ToolCache.from_url(redis_url, namespace="xf", seed=1) as cache:
        layer = cache.add_layer("xf", config)
        assert await layer.get_or_load("k", slow_load) == 1
        first = cached_envelope(cache, "xf", "k")
        assert first is not None
        async with asyncio.timeout(10):
            while time.time() < first.fresh_until and len(loads) == 1:
                assert await layer.get_or_load("k", slow_load) == 1  # served at once, still v1
                await asyncio.sleep(0.01)
            await eventually(lambda: len(loads) == 2)
    assert layer.counters.early_refreshes >= 1
    assert layer.counters.stale_served == 0
    refreshed_at = loads[1] - 0.1  # when the refresh began
    assert refreshed_at < first.fresh_until


async def test_burst_of_reads_deciding_to_refresh_early_starts_and_counts_one_refresh(
    cache: atc.ToolCache,
) -> None:
    eager = cache.add_layer("eager", atc.LayerConfig(ttl=30, jitter=0, beta=1e9))
    refresh = Refresh("v2")
    refresh.opened.set()

    async def first_load() -> str:
        await asyncio.sleep(0.01)  # a measurable load time: with this beta, every read fires
        return "v1"

    await eager.get_or_load("k", first_load)
    values = await asyncio.gather(*(eager.get_or_load("k", refresh) for _ in range(200)))
    assert values == ["v1"] * 200
    await eventually(lambda: eager.counters.loads == 2)
    assert refresh.calls == 1
    assert eager.counters.early_refreshes == 1


# -- TTL jitter -------------------------------------------------------------------------------


def test_jittered_ttl_stays_within_bounds_and_spreads() -> None:
    rng = random.Random(3)
    ttls = [jittered(100.0, 0.25, rng) for _ in range(10_000)]
    assert all(75.0 <= ttl <= 100.0 for ttl in ttls)
    assert min(ttls) < 76.0 and max(ttls) > 99.0  # the whole range is used
    assert jittered(100.0, 0.0, rng) == 100.0


async def test_redis_ttls_of_entries_written_together_are_jittered_within_bounds(
    redis_url: str, redis_server: RedisServer
) -> None:
    config = atc.LayerConfig(ttl=100, jitter=0.2)
    async with atc.ToolCache.from_url(redis_url, namespace="jit", seed=5) as cache:
        layer = cache.add_layer("jit", config)
        await layer.set_many([(i, i) for i in range(100)])
        keys = [layer.ref(i).value_key for i in range(100)]
    with redis_server.client() as plain:
        ttls = [plain.pttl(key) for key in keys]
    assert all(80_000 - 5_000 <= ttl <= 100_000 for ttl in ttls), ttls
    assert max(ttls) - min(ttls) > 10_000  # spread, so they do not all expire at once
