"""Coherence under faults: each test pins one way a worker could serve what was invalidated.

Every test runs against real redis-server processes; a fault is made for
real (FLUSHALL, a killed subscriber connection, a slow lease holder).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import aiotoolcache as atc
from aiotoolcache.invalidation import RedisBus, encode_message
from aiotoolcache.lease import MARKER_PREFIX, Lease, is_marker
from tests.reply_loss import ReplyLossProxy
from tests.servers import RedisServer
from tests.workers import Counting, eventually

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos_support import FaultProxy  # noqa: E402


def constant(value: Any, delay: float = 0.0) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        await asyncio.sleep(delay)
        return value

    return load


def keys(server: RedisServer, pattern: str) -> list[str]:
    with server.client() as client:
        return sorted(k.decode() for k in client.keys(pattern))


# -- generations ----------------------------------------------------------------------------


async def test_invalidations_after_flushall_reach_every_worker(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer
) -> None:
    for _ in range(3):
        await cache.invalidate(layer="results")
    await other_worker.results.get_or_load("k", constant("old"))
    with redis_server.client() as client:
        client.flushall()  # the generations hash is gone; workers keep their values
    await other_worker.results.get_or_load("k", constant("old"))
    await cache.invalidate(layer="results")
    bumped = cache.bus.generation("layer:results")
    await eventually(lambda: other_worker.bus.generation("layer:results") == bumped)
    namespace = other_worker.bus.generation("ns")
    assert await other_worker.results.get_or_load("k", constant("new")) == "new"
    # Shared, unless a worker's check found the lost hash meanwhile and retired the
    # whole namespace (it may, at any time after the FLUSHALL): then a fresh load.
    shared = await cache.results.get_or_load("k", constant("other"))
    assert shared == "new" or cache.bus.generation("ns") != namespace


async def test_a_worker_that_finds_the_generations_lost_writes_them_back(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    await cache.invalidate(layer="search")
    seen = cache.bus.generation("layer:search")
    with redis_server.client() as client:
        client.delete("test:generations")
    bus = cache.bus
    assert isinstance(bus, RedisBus)
    await bus.load_generations()
    with redis_server.client() as client:
        stored = {k.decode(): int(v) for k, v in client.hgetall("test:generations").items()}
    assert stored["layer:search"] >= seen
    assert stored["ns"] > 0  # every entry written before the loss is unreachable now
    assert cache.bus.generation("ns") == stored["ns"]


async def test_generations_are_never_reused_after_the_hash_is_lost(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    await cache.invalidate(layer="tools")
    first = cache.bus.generation("layer:tools")
    with redis_server.client() as client:
        client.flushall()
    await cache.invalidate(layer="tools")
    assert cache.bus.generation("layer:tools") > first


async def test_the_generations_hash_expires_with_the_longest_entry(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    await cache.invalidate(layer="results")
    with redis_server.client() as client:
        ttl = client.pttl("test:generations")
    assert ttl > 7 * 24 * 3600 * 1000 - 60_000  # embeddings live 7 days


async def test_a_forged_bus_message_is_dropped_with_a_secret(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="sec", secret="s3cret") as cache:
        forged = encode_message({"o": "intruder", "op": "gen", "f": "tag:server:x", "g": 10**15})
        with redis_server.client() as client:
            client.publish("sec:bus", forged)
        await eventually(lambda: cache.bus.rejected == 1)
        assert cache.bus.generation("tag:server:x") == 0
        calls = Counting("v1")
        await cache.call_tool("x", "t", {}, calls)
        await cache.invalidate_server("x")
        assert await cache.call_tool("x", "t", {}, Counting("v2")) == "v2"


async def test_an_insane_generation_is_refused_even_unsigned(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    message = encode_message({"o": "elsewhere", "op": "gen", "f": "layer:results", "g": 10**18})
    with redis_server.client() as client:
        client.publish("test:bus", message)
    await eventually(lambda: cache.bus.rejected == 1)
    assert cache.bus.generation("layer:results") < 10**15


# -- start-up ---------------------------------------------------------------------------------


async def test_a_lazily_started_worker_never_reads_an_invalidated_entry(
    cache: atc.ToolCache, redis_url: str
) -> None:
    await cache.results.set("k", "old")
    await cache.invalidate(layer="results")
    await cache.results.set("k", "new")
    lazy = atc.ToolCache.from_url(redis_url, namespace="test")
    try:
        assert await lazy.results.get("k") == "new"
    finally:
        await lazy.aclose()


async def test_a_lazily_started_cache_keeps_single_flight(redis_url: str) -> None:
    lazy = atc.ToolCache.from_url(redis_url, namespace="lazy")
    try:
        load = Counting("v", delay=0.05)
        values = await asyncio.gather(*(lazy.results.get_or_load("k", load) for _ in range(5)))
        assert values == ["v"] * 5 and load.calls == 1
        assert await lazy.results.get("k") == "v"
    finally:
        await lazy.aclose()


async def test_nothing_is_cached_before_the_generations_are_known() -> None:
    dead = atc.ToolCache.from_url("redis://127.0.0.1:1/0", budget=0.05)
    try:
        load = Counting("v")
        assert await dead.results.get_or_load("k", load) == "v"
        assert await dead.results.get_or_load("k", load) == "v"
        assert load.calls == 2 and len(dead.l1) == 0
    finally:
        await dead.aclose()


async def test_using_a_closed_cache_raises() -> None:
    cache = atc.ToolCache()
    await cache.start()
    await cache.aclose()
    with pytest.raises(atc.CacheClosed):
        await cache.results.get_or_load("k", constant(1))


@pytest.mark.parametrize("change", ["set", "delete"])
async def test_a_change_made_while_an_invalidation_waits_reaches_what_the_others_read(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer, change: str
) -> None:
    await cache.results.set("k", "old")
    assert await other_worker.results.get_or_load("k", constant("unused")) == "old"
    held = other_worker.results.ref("k").value_key
    with redis_server.client() as client:
        client.delete("test:generations")
        client.set("test:generations", "not a hash")  # every bump fails, entries do not
    await cache.invalidate(layer="results")  # applied here at once, waits in the outbox
    assert cache.outbox is not None and cache.outbox.pending
    # The other worker still reads the layer under the generation Redis holds.
    if change == "set":
        await cache.results.set("k", "new")
    else:
        await cache.results.delete("k")
    await eventually(lambda: other_worker.l1.get(held) is None, within=2)
    assert await other_worker.results.get_or_load("k", constant("new")) == "new"
    with redis_server.client() as client:
        client.delete("test:generations")


# -- leases and fences ----------------------------------------------------------------------


async def test_a_failed_load_releases_its_lease_and_wakes_the_waiter(
    redis_url: str, redis_server: RedisServer
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def fail() -> Any:
        started.set()
        await gate.wait()
        raise RuntimeError("tool failed")

    # A lease of a minute: the waiter can only get its turn from the release.
    options: dict[str, Any] = {"namespace": "t", "lease_ms": 60_000}
    async with (
        atc.ToolCache.from_url(redis_url, **options) as holder,
        atc.ToolCache.from_url(redis_url, **options) as waiter,
    ):
        first = asyncio.create_task(holder.results.get_or_load("k", fail))
        await started.wait()  # the first worker holds the lease
        second = asyncio.create_task(waiter.results.get_or_load("k", constant("v")))
        value_key = holder.results.ref("k").value_key
        with redis_server.client() as plain:  # the waiter marked the holder's marker
            await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"), within=30)
        gate.set()
        with pytest.raises(RuntimeError):
            await first
        async with asyncio.timeout(30):  # far below the lease: woken by the release
            assert await second == "v"
        assert waiter.results.counters.lease_takeovers == 1


async def test_a_cancelled_caller_releases_its_lease(
    redis_url: str, redis_server: RedisServer
) -> None:
    started = asyncio.Event()

    async def load() -> str:
        started.set()
        await asyncio.Event().wait()  # never returns: cancelled mid-load
        return "unreachable"

    # A lease of a minute: the key can only clear by the release, never by expiry.
    async with atc.ToolCache.from_url(redis_url, namespace="t", lease_ms=60_000) as cache:
        task = asyncio.create_task(cache.results.get_or_load("k", load))
        value_key = cache.results.ref("k").value_key
        await started.wait()
        with redis_server.client() as plain:
            assert is_marker(plain.get(value_key) or b"")  # the lease is held
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: not plain.exists(value_key), within=30)


async def test_a_caller_cancelled_while_its_lease_request_is_out_releases_the_lease(
    redis_server: RedisServer,
) -> None:
    """Redis took the lease but the reply had not come back when the caller was cancelled."""
    proxy = await ReplyLossProxy(redis_server.port).start()
    options: dict[str, Any] = {"namespace": "out", "lease_ms": 60_000, "budget": 60}
    try:
        async with atc.ToolCache.from_url(proxy.url, **options) as cache:
            await cache.results.get_or_load("warm-up", constant("w"))
            proxy.lose_reply_to(MARKER_PREFIX.encode())  # the next lease request: SET … NX GET
            task = asyncio.create_task(cache.results.get_or_load("k", Counting("v")))
            value_key = cache.results.ref("k").value_key
            with redis_server.client() as plain:
                # The lease is in Redis; its reply never reaches the caller (60 s budget).
                await eventually(lambda: is_marker(plain.get(value_key) or b""), within=30)
                assert proxy.lost == 1 and not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await eventually(lambda: not plain.exists(value_key), within=30)
    finally:
        await proxy.close()


async def test_a_lease_reply_lost_on_its_way_back_does_not_stall_the_fleet(
    redis_server: RedisServer,
) -> None:
    proxy = await ReplyLossProxy(redis_server.port).start()
    options: dict[str, Any] = {"namespace": "lost", "lease_ms": 60_000, "lease_wait": 60}
    try:
        async with (
            atc.ToolCache.from_url(proxy.url, fleet_interval=None, **options) as first,
            atc.ToolCache.from_url(redis_server.url, **options) as second,
        ):
            # A miss first, so the scripts are loaded and the lease call below runs in Redis.
            await first.results.get_or_load("warm-up", constant("w"))
            # The next request carrying a lease marker is the lease request of "k"
            # (SET … NX GET): it lands, its reply is lost.
            proxy.lose_reply_to(MARKER_PREFIX.encode())
            first_load = Counting("first")
            assert await first.results.get_or_load("k", first_load) == "first"
            assert proxy.lost == 1
            assert first_load.calls == 1  # the lease call failed: loaded without it
            # The lease lasts a minute: only its release lets the second worker load now.
            second_load = Counting("second")
            async with asyncio.timeout(10):
                assert await second.results.get_or_load("k", second_load) == "second"
            assert second_load.calls == 1
    finally:
        await proxy.close()


async def test_a_fill_that_landed_before_the_lease_is_not_loaded_again(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    await other_worker.results.set("k", "filled")
    ref = cache.results.ref("k")
    assert cache.loads.leases is not None
    holder, data = await cache.loads.leases.acquire(Lease.for_miss(ref.value_key, "token"), 3000)
    assert holder == -2 and data is not None  # the value, not a lease
    assert cache.results.entries.open_raw(ref, data) is not None  # left in place, untouched


async def test_an_unleased_load_never_overwrites_a_delete(
    redis_url: str, redis_server: RedisServer
) -> None:
    def gated(started: asyncio.Event, gate: asyncio.Event) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            started.set()
            await gate.wait()
            return "old"

        return load

    holding, holder_gate = asyncio.Event(), asyncio.Event()
    unleased, impatient_gate = asyncio.Event(), asyncio.Event()
    async with (
        atc.ToolCache.from_url(redis_url, namespace="t") as holder,
        atc.ToolCache.from_url(redis_url, namespace="t", lease_wait=0.05) as impatient,
    ):
        slow = asyncio.create_task(holder.results.get_or_load("k", gated(holding, holder_gate)))
        await holding.wait()  # the holder has the lease
        # Waits 50 ms for the holder, then loads itself, without the lease.
        loading = asyncio.create_task(
            impatient.results.get_or_load("k", gated(unleased, impatient_gate))
        )
        await unleased.wait()
        await holder.results.delete("k")  # the truth changed while both loaded
        impatient_gate.set()
        assert await loading == "old"
        holder_gate.set()
        assert await slow == "old"
        assert keys(redis_server, "t:results:*") == []  # neither load wrote the old value


async def test_a_delete_racing_a_set_wins_in_the_setters_l1(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    writing = asyncio.create_task(cache.results.set("k", "v"))
    ref = cache.results.ref("k")
    await asyncio.sleep(0)  # the write is in flight
    cache.coherence.apply({"o": "elsewhere", "op": "del", "l": "results", "k": [ref.value_key]})
    await writing
    assert cache.l1.get(ref.value_key) is None


async def test_tag_invalidation_revokes_only_loads_carrying_the_tag(
    cache: atc.ToolCache,
) -> None:
    tagged = asyncio.create_task(cache.results.get_or_load("a", constant("A", 0.1), tags=["red"]))
    untagged = asyncio.create_task(cache.results.get_or_load("b", constant("B", 0.1)))
    await asyncio.sleep(0.03)
    await cache.invalidate(tags=["red"])
    assert await tagged == "A" and await untagged == "B"
    assert await cache.results.get("a") is None  # revoked: not stored
    assert await cache.results.get("b") == "B"


async def test_a_failed_refresh_keeps_the_stale_value_with_negative_caching(
    redis_url: str,
) -> None:
    layer = atc.LayerConfig(ttl=0.05, stale_ttl=30, jitter=0, beta=0, negative_ttl=10)
    async with atc.ToolCache.from_url(redis_url, namespace="n", layers={"x": layer}) as cache:
        await cache.layer("x").get_or_load("k", constant("good"))
        await asyncio.sleep(0.1)  # stale now

        async def fail() -> str:
            raise RuntimeError("down")

        assert await cache.layer("x").get_or_load("k", fail) == "good"  # refresh starts
        await eventually(lambda: cache.stats()["x"].refresh_errors == 1)
        cache.l1.clear()
        assert await cache.layer("x").get_or_load("k", fail) == "good"


# -- the fallback store and a deaf subscriber -----------------------------------------------


async def test_fallback_stores_hear_remote_deletes(redis_url: str, tmp_path: Any) -> None:
    fallback = atc.FileStore(str(tmp_path))
    async with (
        atc.ToolCache.from_url(
            redis_url, namespace="f", fallback=fallback, mirror_to_fallback=True
        ) as a,
        atc.ToolCache.from_url(redis_url, namespace="f") as b,
    ):
        await a.results.set("k", "v")
        value_key = a.results.ref("k").value_key
        assert await fallback.get_many([value_key]) != [None]
        await b.results.delete("k")

        async def gone() -> bool:
            return await fallback.get_many([value_key]) == [None]

        for _ in range(200):
            if await gone():
                break
            await asyncio.sleep(0.01)
        assert await gone()


async def test_a_deaf_worker_does_not_serve_l1(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    load = Counting("v")
    await cache.results.get_or_load("k", load)
    with redis_server.client() as client:
        client.client_kill_filter(_type="pubsub")
    await eventually(lambda: not cache.bus.hearing, within=3)
    # Disconnected, then resubscribed with L1 dropped: the value comes from the loader or L2.
    before = cache.stats()["results"].l1_hits
    assert await cache.results.get_or_load("k", load) == "v"
    assert cache.stats()["results"].l1_hits == before
    await eventually(lambda: cache.bus.hearing, within=5)


async def test_a_worker_cut_off_from_redis_stops_serving_l1_once_its_proof_is_old(
    redis_server: RedisServer,
) -> None:
    proxy = await FaultProxy(redis_server.port).start()
    try:
        async with (
            atc.ToolCache.from_url(proxy.url, namespace="cut") as reader,
            atc.ToolCache.from_url(redis_server.url, namespace="cut") as writer,
        ):
            await writer.results.set("k", "old")
            # The set's message reaches the reader through the proxy at its own pace; a read
            # begun before it is applied is (rightly) not kept. Wait until it is applied.
            since = reader.bus.want_proof()
            assert since is not None and await reader.bus.proof(since)
            assert await reader.results.get_or_load("k", constant("unused")) == "old"
            await eventually(lambda: reader.bus.hearing)
            assert reader.l1.get(reader.results.ref("k").value_key) is not None
            proxy.partitioned = True  # the reader's connections stall, the writer's do not
            await writer.results.set("k", "new")  # in Redis; the reader cannot hear it
            # Past max_staleness (80 ms), long before the connection is given up (0.5 s):
            # the reader has stopped trusting L1 while it still holds the connection.
            await asyncio.sleep(0.15)
            assert not reader.bus.hearing
            assert reader.bus.connected
            before = reader.stats()["results"].l1_hits
            assert await reader.results.get_or_load("k", constant("new")) == "new"
            assert reader.stats()["results"].l1_hits == before
            proxy.clear()
            await eventually(lambda: reader.bus.hearing, within=5)
    finally:
        proxy.clear()
        await proxy.close()


async def test_a_busy_event_loop_sends_reads_to_l2_never_to_the_loader(
    cache: atc.ToolCache,
) -> None:
    load = Counting("v")
    assert await cache.results.get_or_load("k", load) == "v"
    time.sleep(0.2)  # noqa: ASYNC251 - the loop is blocked: no ping can prove hearing meanwhile
    assert not cache.bus.hearing
    assert await cache.results.get_or_load("k", load) == "v"
    assert load.calls == 1  # the read waited for a fresh proof, which vouched for L1
    await eventually(lambda: cache.bus.hearing)
    before = cache.stats()["results"].l1_hits
    assert await cache.results.get_or_load("k", load) == "v"
    assert cache.stats()["results"].l1_hits == before + 1


async def test_a_burst_that_keeps_the_loop_busy_is_served_from_the_cache(
    cache: atc.ToolCache,
) -> None:
    keys = [("k", i) for i in range(5000)]
    await cache.results.set_many([(key, i) for i, key in enumerate(keys)])
    cache.l1.clear()

    async def read(key: Any) -> Any:
        time.sleep(0.0002)  # noqa: ASYNC251 - work between reads keeps the loop busy
        return await cache.results.get(key)

    # Over a second of work in one burst: proof of hearing comes late, but it comes.
    values = await asyncio.gather(*(read(key) for key in keys))
    assert [i for i, value in enumerate(values) if value != i] == []


async def test_reads_that_waited_for_proof_go_on_however_slowly_the_loop_resumes_them(
    redis_url: str,
) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="slow-resume") as cache:
        cache.add_layer("l2only", atc.LayerConfig(ttl=60, l1=False))
        layer = cache.layer("l2only")
        await layer.set_many([(f"k{i}", i) for i in range(20)])
        load = Counting("loaded")
        busy = True

        async def hog() -> None:
            while busy:
                time.sleep(0.1)  # noqa: ASYNC251 - every loop iteration outlasts the trust bound
                await asyncio.sleep(0)

        hogging = asyncio.create_task(hog())
        try:
            # Every proof is older than the bound by the time the loop resumes a waiting
            # read: a read that waited once must go on to L2, not wait for newer proofs.
            async with asyncio.timeout(60):
                values = await asyncio.gather(
                    *(layer.get_or_load(f"k{i}", load) for i in range(20))
                )
        finally:
            busy = False
            await hogging
        assert values == list(range(20)) and load.calls == 0


# -- fail-open ------------------------------------------------------------------------------


def test_tls_options_on_a_plain_url_are_refused_at_construction() -> None:
    with pytest.raises(atc.ConfigurationError, match="TLS"):
        atc.ToolCache.from_url("redis://127.0.0.1:6390/0", tls_ca_file="/tmp/ca.pem")


async def test_an_unexpected_backend_exception_never_loses_the_result(
    cache: atc.ToolCache,
) -> None:
    async def broken(_keys: Any) -> Any:
        raise TypeError("driver bug")

    cache.store.get_many = broken  # type: ignore[method-assign]
    load = Counting("v")
    assert await cache.results.get_or_load("k", load) == "v"
    assert load.calls == 1


async def test_a_read_that_waited_for_proof_of_hearing_is_served_from_l1(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="proof-l1") as cache:
        layer = cache.layer("results")
        calls = [0]

        async def load() -> str:
            calls[0] += 1
            return "v"

        assert await layer.get_or_load("k", load) == "v"
        hits, l2_hits = layer.counters.l1_hits, layer.counters.l2_hits
        cache.bus.deaf_after = time.monotonic()  # the last proof has just lapsed
        assert not cache.bus.hearing
        assert await layer.get_or_load("k", load) == "v"
        # The next ping's answer vouched for L1 again: no trip to L2, no load.
        assert (layer.counters.l1_hits - hits, layer.counters.l2_hits - l2_hits) == (1, 0)
        assert calls == [1]
