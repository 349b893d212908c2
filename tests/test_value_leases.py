"""A miss's lease lives in the value key: what readers, waiters and fills make of it."""

from __future__ import annotations

import asyncio

import pytest

import aiotoolcache as atc
from aiotoolcache.cache import MISSING
from aiotoolcache.lease import MARKER_PREFIX, is_marker
from tests.servers import RedisServer
from tests.workers import Counting, Gated, eventually


def test_no_sealed_envelope_looks_like_a_marker() -> None:
    codec = atc.ToolCache(namespace="t").codec
    envelope = atc.Envelope(0.0, 1.0, 0.0, None, codec.encode_value("v"))
    assert not is_marker(codec.seal("k", envelope))
    assert is_marker((MARKER_PREFIX + "token+").encode())


async def test_a_marker_reads_as_a_miss_never_as_corrupt(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    ref = cache.results.ref("k")
    marker = (MARKER_PREFIX + "elsewhere").encode()
    with redis_server.client() as plain:
        plain.set(ref.value_key, marker, px=10_000)
        assert await cache.results.get("k", "none") == "none"
        assert await cache.results.get_many(["k", "j"], "none") == ["none", "none"]
        assert (await cache.results.peek(ref))[0] is MISSING
        assert cache.results.counters.corrupt == 0
        assert plain.get(ref.value_key) == marker  # left for its holder, not deleted


async def test_a_dead_holders_marker_expires_and_a_waiter_takes_over(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    ref = cache.results.ref("k")
    loader = Counting("v")
    with redis_server.client() as plain:
        plain.set(ref.value_key, MARKER_PREFIX + "dead", px=300)
        async with asyncio.timeout(10):
            assert await cache.results.get_or_load("k", loader, ttl=60) == "v"
        assert loader.calls == 1
        assert cache.results.counters.lease_takeovers == 1  # it waited, then took over
        assert plain.pttl(ref.value_key) > 50_000  # the value's own TTL, not the lease's


async def test_a_long_load_keeps_renewing_its_marker(
    redis_url: str, redis_server: RedisServer
) -> None:
    long_load = Gated("v")

    async with atc.ToolCache.from_url(redis_url, namespace="t", lease_ms=1000) as holder:
        ref = holder.results.ref("k")
        loading = asyncio.create_task(holder.results.get_or_load("k", long_load))
        await long_load.started.wait()
        with redis_server.client() as plain:
            renewals, last = 0, plain.pttl(ref.value_key)

            def renewed_three_times() -> bool:
                nonlocal renewals, last
                now = plain.pttl(ref.value_key)
                assert now > 0, "the marker expired: the load was not renewing it"
                renewals, last = renewals + (now > last), now
                return renewals >= 3

            # Three renewals span more than a whole lease: without them the marker was gone.
            await eventually(renewed_three_times, within=30)
            assert is_marker(plain.get(ref.value_key) or b"")
            long_load.gate.set()
            assert await loading == "v"
            assert holder.results.entries.open_raw(ref, plain.get(ref.value_key))


async def test_a_write_during_a_load_revokes_its_fill(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    old_truth = Gated("old")

    loading = asyncio.create_task(cache.results.get_or_load("k", old_truth))
    await old_truth.started.wait()  # loading under the lease
    await other_worker.results.set("k", "new")
    old_truth.gate.set()
    assert await loading == "old"  # its caller asked before the write
    async with atc.ToolCache.from_url(cache.url, namespace="test") as third:
        assert await third.results.get("k") == "new"  # the old load did not overwrite it


@pytest.mark.parametrize("change", ["deleted", "overwritten"])
async def test_a_fill_checks_its_marker_in_redis_not_only_what_the_bus_said(
    cache: atc.ToolCache, redis_server: RedisServer, change: str
) -> None:
    """The key changed in Redis but its message has not arrived yet: Redis must refuse the fill."""
    ref = cache.results.ref("k")
    old_truth = Gated("old")

    loading = asyncio.create_task(cache.results.get_or_load("k", old_truth))
    await old_truth.started.wait()
    with redis_server.client() as plain:
        if change == "deleted":
            plain.delete(ref.value_key)  # a delete whose message is still on its way
        else:
            plain.set(ref.value_key, b"newer", px=60_000)
        old_truth.gate.set()
        assert await loading == "old"  # its caller asked before the change
        assert plain.get(ref.value_key) == (None if change == "deleted" else b"newer")


async def test_a_value_this_worker_cannot_read_is_replaced_by_its_load(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="t", secret="old") as before,
        atc.ToolCache.from_url(redis_url, namespace="t", secret="new") as after,
    ):
        await before.results.set("k", "signed with the old secret")
        loader = Counting("signed with the new secret")
        assert await after.results.get_or_load("k", loader) == loader.value
        assert loader.calls == 1
        after.l1.clear()
        assert await after.results.get("k") == loader.value  # the fill took its place


async def test_scripts_forgotten_by_redis_are_loaded_again(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    await cache.results.get_or_load("warm-up", Counting("w"))
    with redis_server.client() as plain:
        plain.script_flush()
    loaders = [Counting(f"v{i}") for i in range(5)]
    values = await asyncio.gather(
        *(cache.results.get_or_load(("k", i), loader) for i, loader in enumerate(loaders))
    )
    assert values == [f"v{i}" for i in range(5)]
    cache.l1.clear()
    assert await cache.results.get_many([("k", i) for i in range(5)]) == values  # filled L2


async def test_out_of_memory_redis_still_serves_the_loaders_value(own_redis: RedisServer) -> None:
    with own_redis.client() as plain:
        plain.config_set("maxmemory-policy", "noeviction")
        plain.config_set("maxmemory", "1")  # every write is refused with OOM
    try:
        async with atc.ToolCache.from_url(own_redis.url, namespace="t") as cache:
            loader = Counting("v")
            assert await cache.results.get_or_load("k", loader) == "v"
            assert loader.calls == 1
    finally:
        with own_redis.client() as plain:
            plain.config_set("maxmemory", "0")
            assert plain.dbsize() == 0


@pytest.mark.parametrize("outcome", ["fails", "is cancelled"])
async def test_a_released_marker_wakes_the_waiter_elsewhere(
    redis_url: str, redis_server: RedisServer, outcome: str
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def doomed() -> str:
        started.set()
        await gate.wait()
        raise RuntimeError("load failed")

    # A lease of a minute: the waiter can only get its turn from the release.
    options = {"namespace": "t", "lease_ms": 60_000}
    async with (
        atc.ToolCache.from_url(redis_url, **options) as cache,
        atc.ToolCache.from_url(redis_url, **options) as other_worker,
    ):
        holding = asyncio.create_task(cache.results.get_or_load("k", doomed))
        await started.wait()
        waiter = Counting("v")
        waiting = asyncio.create_task(other_worker.results.get_or_load("k", waiter))
        value_key = cache.results.ref("k").value_key
        with redis_server.client() as plain:  # the waiter marked the holder's marker
            await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"), within=30)
        if outcome == "is cancelled":
            holding.cancel()
        else:
            gate.set()
        with pytest.raises((RuntimeError, asyncio.CancelledError)):
            await holding
        async with asyncio.timeout(30):  # far below the lease: woken by the release
            assert await waiting == "v"
        assert waiter.calls == 1


async def test_leases_by_script_as_on_servers_older_than_7(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    """Redis < 7.0 refuses SET NX GET; the script path must give the same single-flight."""
    for worker in (cache, other_worker):
        assert worker.loads.leases is not None
        worker.loads.leases.one_command_acquire = False
    loaders = [Counting(f"v{i}", delay=0.05) for i in range(20)]
    values = await asyncio.gather(
        *(
            worker.results.get_or_load(("k", i), loader)
            for i, loader in enumerate(loaders)
            for worker in (cache, other_worker)
        )
    )
    assert values == [loader.value for loader in loaders for _ in range(2)]
    assert [loader.calls for loader in loaders] == [1] * 20  # once in the fleet
    cache.l1.clear()
    assert await cache.results.get_many([("k", i) for i in range(20)]) == values[::2]


async def test_a_refresh_fill_checks_its_lease_key_in_redis(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    """A refresh leaves the stale value served, so its lease is a separate key; a delete
    that reached Redis (its message still on its way) must revoke it too."""
    fast = cache.add_layer("fast", atc.LayerConfig(ttl=0.2, stale_ttl=30, jitter=0, beta=0))
    ref = fast.ref("k")
    await fast.get_or_load("k", Counting("v1"))
    await asyncio.sleep(0.25)  # past soft expiry
    refresh = Gated("v2")

    assert await fast.get_or_load("k", refresh) == "v1"  # stale, refreshed in the background
    await refresh.started.wait()
    with redis_server.client() as plain:
        assert plain.exists(ref.lease_key) and not is_marker(plain.get(ref.value_key) or b"")
        plain.delete(ref.value_key, ref.lease_key)  # what a delete does, not yet announced
        refresh.gate.set()
        await eventually(lambda: fast.counters.loads == 2)
        await cache.loads.aclose()  # the refresh has finished
        assert not plain.exists(ref.value_key)  # its fill was refused
