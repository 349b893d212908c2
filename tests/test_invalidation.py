"""Invalidation across workers: deletes, generations, in-flight races and subscriber outages.

Promptness is checked with bounded waits; the only bound stated as a
guarantee is PROPAGATION_BOUND, the time after which an invalidation that
has completed (its DEL and PUBLISH executed) is visible to every worker.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

import aiotoolcache as atc
from aiotoolcache.invalidation import encode_message
from tests.servers import RedisServer
from tests.workers import Link, eventually, run_workers

PROPAGATION_BOUND = 0.1  # seconds


def constant(value: Any) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        return value

    return load


class Counting:
    """Counting is a loader returning ``value`` that counts its calls."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.value


def in_l1(cache: atc.ToolCache, layer: atc.Layer, key: Any, **ref: Any) -> bool:
    return cache.l1.get(layer.ref(key, **ref).value_key) is not None


# -- one key deleted, four processes ------------------------------------------------------


async def hold_then_watch(cache: atc.ToolCache, link: Link, key: str) -> dict[str, Any]:
    """Hold ``key`` in L1; then either delete it or report when this worker's copy went."""
    await cache.results.get_or_load(key, constant("v1"))
    value_key = cache.results.ref(key).value_key
    assert cache.l1.get(value_key) is not None
    link.send("holding")
    if await link.recv() == "delete":
        began = time.time()
        await cache.results.delete(key)
        return {"began": began, "deleted_at": time.time()}
    link.send("watching")
    await eventually(lambda: cache.l1.get(value_key) is None, within=10)
    missed_at = time.time()
    return {"missed_at": missed_at, "after": await cache.results.get(key, "gone")}


@pytest.mark.slow
async def test_delete_in_one_process_drops_the_l1_copy_in_every_other(redis_url: str) -> None:
    async with asyncio.timeout(40), run_workers(4, redis_url, hold_then_watch, "k") as workers:
        for worker in workers:
            assert await worker.recv() == "holding"
        deleter, *watchers = workers
        for worker in watchers:
            worker.send("watch")
            assert await worker.recv() == "watching"
        deleter.send("delete")
        deleted = await deleter.result()
        watched = await asyncio.gather(*(worker.result() for worker in watchers))

    latencies = [result["missed_at"] - deleted["began"] for result in watched]
    print(f"delete propagation to L1 of 3 processes: max {max(latencies) * 1000:.1f} ms")
    assert all(result["after"] == "gone" for result in watched)
    assert max(latencies) < 5.0  # loose: the guarantee is checked below, under load


# -- consistency under concurrent writes ----------------------------------------------------


async def read_or_write(cache: atc.ToolCache, link: Link, arg: dict[str, Any]) -> list[Any]:
    """Worker 0 bumps the version and invalidates; the others read through their cache."""
    plain = Redis.from_url(arg["url"])
    log: list[Any] = []
    try:
        start_at = await link.recv()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        if link.index == 0:
            # A fixed number of writes, however fast the machine; then the readers stop.
            for _ in range(arg["writes"]):
                await asyncio.sleep(0.02)
                version = await plain.incr("truth")
                await cache.results.delete("item")
                log.append((version, time.time()))
            await plain.set("done", 1)
            return log

        async def load() -> int:
            return int(await plain.get("truth") or 0)

        async def reader() -> None:
            while not await plain.exists("done"):
                began = time.time()
                log.append((began, await cache.results.get_or_load("item", load)))
                await asyncio.sleep(0.001)

        await asyncio.gather(*(reader() for _ in range(4)))
        return log
    finally:
        await plain.aclose()


def stale_reads(
    writes: Sequence[tuple[int, float]], reads: Sequence[tuple[float, int]], bound: float
) -> tuple[list[tuple[float, int, int]], float]:
    """Return the reads that saw a version invalidated at least ``bound`` before they began.

    ``writes`` are (version, invalidation completed at), versions 1, 2, 3…;
    ``reads`` are (began at, version seen). Also return the lag: the longest
    time after the invalidation replacing a version that a read began and
    still saw it.
    """
    assert [version for version, _ in writes] == list(range(1, len(writes) + 1))
    done_at = [at for _, at in writes]
    violations, lag = [], 0.0
    for began, seen in reads:
        settled = bisect.bisect_right(done_at, began - bound)  # versions 1..settled are settled
        if seen < settled:
            violations.append((began, seen, settled))
        if seen < len(writes) and done_at[seen] <= began:
            lag = max(lag, began - done_at[seen])
    return violations, lag


@pytest.mark.slow
async def test_no_read_returns_a_version_invalidated_longer_ago_than_the_bound(
    redis_url: str, redis_server: RedisServer
) -> None:
    with redis_server.client() as plain:
        plain.set("truth", 0)
    arg = {"url": redis_url, "writes": 60}
    async with asyncio.timeout(40), run_workers(4, redis_url, read_or_write, arg) as workers:
        start_at = time.time() + 0.3
        for worker in workers:
            worker.send(start_at)
        writes, *per_reader = await asyncio.gather(*(worker.result() for worker in workers))

    reads = [read for log in per_reader for read in log]
    assert len(writes) == 60 and len(reads) > len(writes)
    versions = {version for _, version in reads}
    # The versions moved under the readers: they saw early ones and late ones.
    assert min(versions) <= len(writes) // 4 and max(versions) >= len(writes) * 3 // 4
    violations, lag = stale_reads(writes, reads, PROPAGATION_BOUND)
    print(
        f"{len(reads)} reads, {len(writes)} invalidations, longest stale window {lag * 1000:.1f} ms"
    )
    assert violations == []


def test_stale_reads_finds_reads_older_than_the_bound() -> None:
    writes = [(1, 10.0), (2, 20.0)]
    reads = [(10.05, 0), (10.2, 0), (19.0, 1), (20.5, 1), (20.5, 2)]
    violations, lag = stale_reads(writes, reads, 0.1)
    assert violations == [(10.2, 0, 1), (20.5, 1, 2)]
    assert lag == pytest.approx(0.5)


# -- the in-flight race -----------------------------------------------------------------------


async def until_processed(reader: atc.ToolCache, writer: atc.ToolCache) -> None:
    """Wait until ``reader`` has applied every message ``writer`` published so far.

    Pub/sub keeps order per channel, so once a probe deleted afterwards is gone
    from the reader's L1, everything published before it has been applied.
    """
    await reader.results.get_or_load("probe", constant("p"))
    await writer.results.delete("probe")
    await eventually(lambda: not in_l1(reader, reader.results, "probe"))


@pytest.mark.parametrize("deleter", ["same worker", "other worker"])
async def test_delete_during_a_load_keeps_the_old_value_out_of_l1_and_l2(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer, deleter: str
) -> None:
    """Miss, load the old truth, the truth changes and is invalidated, then the load finishes."""
    gate, started = asyncio.Event(), asyncio.Event()

    async def old_truth() -> str:
        started.set()
        await gate.wait()
        return "old"

    ref = cache.results.ref("k")
    async with asyncio.timeout(10):
        loading = asyncio.create_task(cache.results.get_or_load("k", old_truth))
        await started.wait()
        if deleter == "same worker":
            await cache.results.delete("k")
        else:
            await other_worker.results.delete("k")
            await until_processed(cache, other_worker)
        gate.set()
        assert await loading == "old"  # its caller asked before the invalidation

    assert cache.l1.get(ref.value_key) is None
    with redis_server.client() as plain:
        assert not plain.exists(ref.value_key)  # the delete revoked the lease: no stale fill
    assert await cache.results.get_or_load("k", constant("new")) == "new"
    assert await other_worker.results.get_or_load("k", constant("newer")) == "new"


@pytest.mark.parametrize("read", ["get", "get_many", "get_or_load"])
async def test_delete_during_an_l2_read_keeps_the_old_value_out_of_l1(
    cache: atc.ToolCache,
    other_worker: atc.ToolCache,
    monkeypatch: pytest.MonkeyPatch,
    read: str,
) -> None:
    await other_worker.results.set("k", "old")
    gate, read_done = asyncio.Event(), asyncio.Event()
    real_get = cache.store.get  # every read of one key from Redis goes through it

    async def held_get(key: str, *, batched: bool = False) -> bytes | None:
        value = await real_get(key, batched=batched)  # the old value, read before the delete
        read_done.set()
        await gate.wait()
        return value

    reads = {
        "get": lambda: cache.results.get("k"),
        "get_many": lambda: cache.results.get_many(["k"]),
        "get_or_load": lambda: cache.results.get_or_load("k", constant("loaded")),
    }
    monkeypatch.setattr(cache.store, "get", held_get)
    async with asyncio.timeout(10):
        reading = asyncio.create_task(reads[read]())
        await read_done.wait()
        monkeypatch.undo()
        await other_worker.results.delete("k")
        await until_processed(cache, other_worker)
        gate.set()
        assert await reading in ("old", ["old"])  # its caller asked before the delete
    assert not in_l1(cache, cache.results, "k")
    assert await cache.results.get("k", "gone") == "gone"


@pytest.mark.parametrize("deleter", ["same worker", "other worker"])
async def test_read_starting_after_a_delete_does_not_join_a_load_started_before(
    cache: atc.ToolCache, other_worker: atc.ToolCache, deleter: str
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    async def old_truth() -> str:
        started.set()
        await gate.wait()
        return "old"

    async with asyncio.timeout(10):
        early = asyncio.create_task(cache.results.get_or_load("k", old_truth))
        await started.wait()
        if deleter == "same worker":
            await cache.results.delete("k")
        else:
            await other_worker.results.delete("k")
            await until_processed(cache, other_worker)
        late = await cache.results.get_or_load("k", constant("new"))
        gate.set()
        assert await early == "old"
    assert late == "new"
    assert await cache.results.get("k") == "new"


async def test_waiter_on_a_revoked_lease_loads_at_once(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    """The holder's lease is revoked by a delete; its waiters must not sit out the lease."""
    gate, started = asyncio.Event(), asyncio.Event()

    async def old_truth() -> str:
        started.set()
        await gate.wait()
        return "old"

    try:
        async with asyncio.timeout(5):  # the lease lasts 10 s
            holding = asyncio.create_task(cache.results.get_or_load("k", old_truth))
            await started.wait()
            waiting = asyncio.create_task(other_worker.results.get_or_load("k", constant("x")))
            await asyncio.sleep(0.1)  # the other worker waits for the holder's fill
            await cache.results.delete("k")
            assert await waiting == "x"
    finally:
        gate.set()
    assert await holding == "old"


# -- the subscriber losing its connection ---------------------------------------------------


async def test_killed_and_restarted_redis_flushes_l1_reloads_generations_and_recovers(
    own_redis: RedisServer,
) -> None:
    options: dict[str, Any] = {"namespace": "t", "cooldown": 0.3}
    async with (
        asyncio.timeout(30),
        atc.ToolCache.from_url(own_redis.url, **options) as a,
        atc.ToolCache.from_url(own_redis.url, **options) as b,
    ):
        await a.results.get_or_load("k", constant("v1"))
        await b.results.get_or_load("k", constant("v1"))
        assert in_l1(a, a.results, "k") and in_l1(b, b.results, "k")

        own_redis.kill()
        await eventually(lambda: not a.bus.connected and not b.bus.connected)
        assert len(a.l1) == len(b.l1) == 0
        assert a.bus.reconnects == b.bus.reconnects == 1

        own_redis.start()
        with own_redis.client() as plain:  # the loop is blocked: no one resubscribed yet
            plain.hset("t:generations", "layer:results", 7)
        await eventually(lambda: a.bus.connected and b.bus.connected, within=10)
        assert a.bus.generation("layer:results") == b.bus.generation("layer:results") == 7

        await a.results.get_or_load("k", constant("v2"))
        assert await b.results.get_or_load("k", constant("other")) == "v2"
        await a.results.delete("k")
        await eventually(lambda: not in_l1(b, b.results, "k"), within=2)
        assert await b.results.get("k", "gone") == "gone"


async def test_invalidation_sent_while_the_subscriber_was_away_is_not_missed(
    own_redis: RedisServer,
) -> None:
    """The subscriber connection drops and comes back; what was published between is lost.

    redis-py reconnects and resubscribes by itself, so the loss must be
    noticed and L1 flushed, or the old value would be served until l1_ttl.
    """
    async with asyncio.timeout(20), atc.ToolCache.from_url(own_redis.url, namespace="t") as a:
        await a.results.get_or_load("k", constant("old"))
        ref = a.results.ref("k")
        assert in_l1(a, a.results, "k")
        before = a.bus.reconnects
        message = encode_message(
            {"o": "elsewhere", "op": "del", "l": "results", "k": [ref.value_key]}
        )
        with own_redis.client() as plain:
            [subscriber] = plain.client_list(_type="pubsub")
            transaction = plain.pipeline(transaction=True)
            transaction.execute_command("CLIENT", "KILL", "ID", subscriber["id"])
            transaction.delete(ref.value_key, ref.lease_key)
            transaction.publish(a.bus_channel, message)
            assert transaction.execute()[2] == 0  # nobody was subscribed to hear it
        await eventually(lambda: a.bus.reconnects > before and a.bus.connected, within=10)
        assert await a.results.get("k", "gone") == "gone"
        assert await a.results.get_or_load("k", constant("new")) == "new"


# -- group invalidation across two workers -------------------------------------------------


async def test_layer_invalidation_reaches_the_other_worker_and_spares_other_layers(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    results, discovery = Counting("r"), Counting("d")
    for worker in (cache, other_worker):
        await worker.results.get_or_load("k", results)
        await worker.discovery.get_or_load("k", discovery)
    assert (results.calls, discovery.calls) == (1, 1)

    await cache.invalidate(layer="results")
    await eventually(lambda: not in_l1(other_worker, other_worker.results, "k"), within=2)
    assert other_worker.bus.generation("layer:results") > 0
    await other_worker.results.get_or_load("k", results)
    await other_worker.discovery.get_or_load("k", discovery)
    assert (results.calls, discovery.calls) == (2, 1)


async def test_tag_invalidation_reaches_the_other_worker_and_spares_other_tags(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    red, blue = Counting("red"), Counting("blue")
    for worker in (cache, other_worker):
        await worker.results.get_or_load("a", red, tags=["red"])
        await worker.results.get_or_load("b", blue, tags=["blue"])
    assert (red.calls, blue.calls) == (1, 1)

    await cache.invalidate(tags=["red"])
    await eventually(lambda: other_worker.bus.generation("tag:red") > 0, within=2)
    assert not in_l1(other_worker, other_worker.results, "a")
    await other_worker.results.get_or_load("a", red, tags=["red"])
    await other_worker.results.get_or_load("b", blue, tags=["blue"])
    assert (red.calls, blue.calls) == (2, 1)


async def test_namespace_invalidation_drops_everything_in_the_other_worker(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    loaders = {name: Counting(name) for name in ("results", "discovery", "search")}
    for worker in (cache, other_worker):
        for name, loader in loaders.items():
            await worker.layer(name).get_or_load("k", loader)
    await cache.invalidate()
    await eventually(lambda: len(other_worker.l1) == 0, within=2)
    for name, loader in loaders.items():
        await other_worker.layer(name).get_or_load("k", loader)
        assert loader.calls == 2, name


@pytest.mark.parametrize("how", ["invalidate_server", "on_tools_list_changed"])
async def test_server_invalidation_drops_that_servers_entries_in_the_other_worker(
    cache: atc.ToolCache, other_worker: atc.ToolCache, how: str
) -> None:
    loaders = {name: Counting(name) for name in ("tools1", "call1", "search1", "tools2")}

    async def read_all(worker: atc.ToolCache) -> None:
        await worker.list_tools("srv1", loaders["tools1"])
        await worker.call_tool("srv1", "echo", {"text": "hi"}, loaders["call1"])
        await worker.search_tools("echo", loaders["search1"], servers=["srv1", "srv2"])
        await worker.list_tools("srv2", loaders["tools2"])

    await read_all(cache)
    await read_all(other_worker)
    assert {name: loader.calls for name, loader in loaders.items()} == dict.fromkeys(loaders, 1)

    await getattr(cache, how)("srv1")
    await eventually(lambda: other_worker.bus.generation("tag:server:srv1") > 0, within=2)
    await read_all(other_worker)
    calls = {name: loader.calls for name, loader in loaders.items()}
    assert calls == {"tools1": 2, "call1": 2, "search1": 2, "tools2": 1}


# -- request paths never scan the keyspace --------------------------------------------------


async def test_no_scan_or_keys_on_request_paths(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer
) -> None:
    with redis_server.client() as plain:
        plain.config_resetstat()
    for i in range(50):
        for worker in (cache, other_worker):
            await worker.results.get_or_load(("k", i), constant(i), tags=["t"])
            await worker.list_tools(f"srv{i % 3}", constant(["tool"]))
    await cache.results.set("x", 1)
    await other_worker.results.get_many(["x", "y"])
    await cache.results.delete("x")
    await cache.invalidate(layer="results")
    await cache.invalidate(tags=["t"])
    await cache.invalidate_server("srv1")
    await cache.invalidate()
    await asyncio.gather(
        *(other_worker.results.get_or_load(("k", i), constant(i)) for i in range(50))
    )
    with redis_server.client() as plain:
        stats = plain.info("commandstats")
    assert "cmdstat_get" in stats or "cmdstat_mget" in stats  # the workload did reach Redis
    assert {"cmdstat_scan", "cmdstat_keys"}.isdisjoint(stats)
