"""The cache on Redis Cluster and Sentinel: the core behaviour, many slots, and failovers.

The core cases run on a standalone Redis, a three-primary Cluster and a
Sentinel-managed primary alike (one deployment of each per module; every test
uses a namespace of its own). The failover tests kill a primary of deployments
of their own while two workers keep calling ``get_or_load``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection
from redis.crc import key_slot

import aiotoolcache as atc
from aiotoolcache import connect
from aiotoolcache.cluster_bus import ClusterBus
from aiotoolcache.connect import parse_server_list
from tests.cluster_servers import (
    RedisClusterServers,
    RedisSentinelServers,
    command,
    slot_ranges,
)
from tests.servers import free_port

pytestmark = pytest.mark.slow

Workers = tuple[atc.ToolCache, atc.ToolCache]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(primaries=3) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinelServers]:
    with RedisSentinelServers() as deployment:
        yield deployment


@pytest.fixture(params=["standalone", "cluster", "sentinel"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "standalone":
        return str(request.getfixturevalue("redis_url"))
    deployment = request.getfixturevalue(request.param)
    return str(deployment.url)


def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def workers(url: str) -> AsyncIterator[Workers]:
    """Two ToolCaches on one deployment and namespace: two workers."""
    ns = namespace()
    async with (
        atc.ToolCache.from_url(url, namespace=ns) as first,
        atc.ToolCache.from_url(url, namespace=ns) as second,
    ):
        assert first.bus.connected and second.bus.connected
        yield first, second


def loader_of(value: Any, delay: float = 0.0) -> tuple[list[int], Callable[[], Awaitable[Any]]]:
    calls = [0]

    async def load() -> Any:
        calls[0] += 1
        if delay:
            await asyncio.sleep(delay)
        return value

    return calls, load


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- the client each URL builds -----------------------------------------------------------


async def test_cluster_url_builds_a_cluster_client(cluster: RedisClusterServers) -> None:
    async with atc.ToolCache.from_url(cluster.url, namespace=namespace()) as cache:
        assert isinstance(cache.client, RedisCluster)
        assert cache.redis is None
        assert (await cache.health()).reachable


async def test_sentinel_url_builds_one_client_on_the_primary(
    sentinel: RedisSentinelServers,
) -> None:
    async with atc.ToolCache.from_url(sentinel.url, namespace=namespace()) as cache:
        assert cache.redis is not None
        assert isinstance(cache.redis.connection_pool, SentinelConnectionPool)
        await cache.results.set("k", "v")
        with sentinel.primary.client() as client:
            assert client.exists(cache.results.ref("k").value_key) == 1
        assert (await cache.health()).reachable


def test_server_list_urls() -> None:
    servers = parse_server_list(
        "rediss+sentinel://u:p%40ss@h1:1,[::1]:2,h3/svc/3?sentinel_password=s"
    )
    assert servers.tls
    assert servers.hosts == [("h1", 1), ("::1", 2), ("h3", 6379)]
    assert (servers.username, servers.password) == ("u", "p@ss")
    assert servers.path == ["svc", "3"]
    assert servers.query == {"sentinel_password": "s"}
    for bad in ("redis+sentinel://h:1", "redis+cluster://h:1/2", "redis+cluster://h:x"):
        with pytest.raises(atc.ConfigurationError):
            atc.ToolCache.from_url(bad)


@pytest.mark.parametrize("scheme", ["redis+cluster://{}", "redis+sentinel://{}/mymaster"])
async def test_unreachable_deployment_fails_open(scheme: str) -> None:
    url = scheme.format(f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    cache = atc.ToolCache.from_url(url, namespace=namespace(), budget=0.1)
    try:
        calls, load = loader_of("fresh")
        assert await cache.results.get_or_load("k", load) == "fresh"
        await cache.results.delete("k")
        await cache.invalidate(layer="results")
        assert calls[0] == 1
        assert cache.stats()["results"].backend_errors > 0
        assert not (await cache.health()).reachable
    finally:
        await cache.aclose()


def test_tls_urls_turn_tls_on_for_every_connection(tmp_path: Any) -> None:
    ca = str(tmp_path / "ca.pem")
    cluster = connect.client_for(
        "rediss+cluster://127.0.0.1:7000", "cluster", 0.25, 8, {"ssl_ca_certs": ca}
    )
    assert isinstance(cluster, RedisCluster)
    kwargs = cluster.nodes_manager.connection_kwargs
    assert kwargs["connection_class"] is SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"]) == (ca, "required")

    options = {"ssl_ca_certs": ca, "ssl_cert_reqs": "none", "ssl_check_hostname": False}
    primary = connect.client_for(
        "rediss+sentinel://127.0.0.1:26379/svc", "sentinel", 0.25, 8, dict(options)
    )
    pool = primary.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert isinstance(pool, connect.BlockingSentinelConnectionPool)
    sentinel_pool = pool.sentinel_manager.sentinels[0].connection_pool
    assert sentinel_pool.connection_class is SSLConnection
    assert sentinel_pool.connection_kwargs["ssl_ca_certs"] == ca

    plain = connect.client_for("redis+cluster://127.0.0.1:7000", "cluster", 0.25, 8, options)
    assert isinstance(plain, RedisCluster)
    assert "ssl_ca_certs" not in plain.nodes_manager.connection_kwargs


# -- the core of the cache, on every deployment -------------------------------------------


async def test_get_or_load_runs_once_across_two_workers(workers: Workers) -> None:
    first, second = workers
    calls, load = loader_of({"tools": ["search"]}, delay=0.1)
    values = await asyncio.gather(
        first.discovery.get_or_load("srv", load), second.discovery.get_or_load("srv", load)
    )
    assert values == [{"tools": ["search"]}] * 2
    assert calls[0] == 1
    assert await second.discovery.get_or_load("srv", load) == {"tools": ["search"]}
    assert calls[0] == 1


async def test_delete_reaches_the_other_workers_l1(workers: Workers) -> None:
    first, second = workers
    _, old = loader_of("old")
    await first.results.get_or_load("k", old)
    assert await second.results.get_or_load("k", old) == "old"  # now in its L1
    key = second.results.ref("k").value_key
    assert second.l1.get(key) is not None

    await first.results.delete("k")

    await eventually(lambda: second.l1.get(key) is None)
    calls, new = loader_of("new")
    assert await second.results.get_or_load("k", new) == "new"
    assert calls[0] == 1


async def test_tag_and_layer_invalidation_reach_the_other_worker(workers: Workers) -> None:
    first, second = workers
    _, old = loader_of("old")
    await first.call_tool("srv", "t", {"a": 1}, old)
    await second.call_tool("srv", "t", {"a": 1}, old)
    await first.search.get_or_load("q", old)
    await second.search.get_or_load("q", old)

    await first.invalidate_server("srv")
    await first.invalidate(layer="search")

    await eventually(
        lambda: (
            second.bus.generation("tag:server:srv") > 0
            and second.bus.generation("layer:search") > 0
        )
    )
    _, new = loader_of("new")
    assert await second.call_tool("srv", "t", {"a": 1}, new) == "new"
    assert await second.search.get_or_load("q", new) == "new"


async def test_a_settled_write_is_seen_at_once_by_the_other_worker(workers: Workers) -> None:
    first, second = workers
    for i in range(10):
        await first.results.set("k", i, settle=True)
        assert await second.results.get("k") == i  # no await in between: settling made it so
    settlement = first.bus.settlement  # type: ignore[attr-defined]
    if isinstance(first.bus, ClusterBus):
        # PUBLISH counts one node's subscribers only: every write waits for the bound.
        assert (settlement.by_acks, settlement.by_bound) == (0, 10)
    else:
        assert settlement.by_acks + settlement.by_bound == 10 and settlement.by_acks > 0


async def test_100_concurrent_get_or_load_run_one_load(workers: Workers) -> None:
    first, second = workers
    calls, load = loader_of([1, 2, 3], delay=0.2)
    values = await asyncio.gather(
        *(worker.results.get_or_load("hot", load) for worker in (first, second) * 50)
    )
    assert values == [[1, 2, 3]] * 100
    assert calls[0] == 1


async def test_a_cold_batch_of_keys_loads_each_once_and_fills_l2(workers: Workers) -> None:
    """Leases and fills of many keys in one loop tick: on a Cluster they span every slot."""
    first, second = workers
    loaders = [loader_of(f"v{i}", delay=0.05) for i in range(60)]
    values = await asyncio.gather(
        *(
            worker.results.get_or_load(("k", i), load)
            for i, (_, load) in enumerate(loaders)
            for worker in (first, second)
        )
    )
    assert values == [f"v{i}" for i in range(60) for _ in range(2)]
    assert [calls[0] for calls, _ in loaders] == [1] * 60
    first.l1.clear()
    assert await first.results.get_many([("k", i) for i in range(60)]) == values[::2]


# -- many slots ---------------------------------------------------------------------------


async def test_cluster_reads_10000_keys_over_all_primaries_in_order(
    cluster: RedisClusterServers,
) -> None:
    ns = namespace()
    count = 10_000
    # redis-py spends ~50 us of CPU per slot: give a busy (shared, 2-core) machine room.
    budget = 5.0
    async with atc.ToolCache.from_url(cluster.url, namespace=ns, budget=budget) as writer:
        layer = writer.results
        await layer.set_many([(("k", i), i) for i in range(count)])
        assert layer.counters.dropped_writes == 0
        slots = {key_slot(layer.ref(("k", i)).value_key.encode()) for i in range(count)}
    assert len(slots) > 4000  # the digests spread the keys over the slots
    sizes = [command(primary, "DBSIZE") for primary in cluster.primaries]
    assert sum(sizes) >= count and min(sizes) > count // 5

    keys = [("k", i) for i in range(count)]
    async with atc.ToolCache.from_url(cluster.url, namespace=ns, budget=budget) as reader:
        assert await reader.results.get_many(keys) == list(range(count))
        assert reader.stats()["results"].l2_hits == count
        reader.l1.clear()
        values = await asyncio.gather(*(reader.results.get(key) for key in keys))
        wrong = [i for i, value in enumerate(values) if value != i]  # no 10,000-line diff
        assert not wrong, (len(wrong), wrong[:5], reader.breaker.stats())
        assert reader.stats()["results"].backend_errors == 0


# -- failovers ----------------------------------------------------------------------------


class Traffic:
    """Traffic keeps two workers calling get_or_load on many keys, and records any error."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.errors: list[BaseException] = []
        self.calls = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self, cache: atc.ToolCache, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            i += 1
            try:
                await cache.results.get_or_load(("traffic", i % 64), loader_of(i)[1])
                self.calls += 1
            except Exception as exc:
                self.errors.append(exc)
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> Traffic:
        self._tasks = [
            asyncio.create_task(self._run(cache, n * 7)) for n, cache in enumerate(self.workers * 4)
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def hold_stale_copies(workers: Workers, deleted: str, tagged: str) -> None:
    """Cache two tool results (value "old") in both workers' L1: ``deleted`` of server
    "keep" and ``tagged`` of server "srv"."""
    _, old = loader_of("old")
    for worker in workers:
        assert await worker.call_tool("keep", "t", deleted, old) == "old"
        assert await worker.call_tool("srv", "t", tagged, old) == "old"


async def invalidate_both(first: atc.ToolCache, deleted: str) -> None:
    """Delete one entry and invalidate server "srv" (while a primary is down)."""
    await first.results.delete(("call_tool", "keep", "t", deleted), label="t")
    await first.invalidate_server("srv")


async def assert_recovered(workers: Workers, deleted: str, tagged: str, url: str) -> None:
    """After the failover: pending invalidations landed, no stale copies, L2 hits again."""
    first, second = workers
    assert first.outbox is not None
    await eventually(
        lambda: (
            first.outbox is not None
            and first.outbox.pending == 0
            and first.bus.connected
            and second.bus.connected
        ),
        within=15,
    )
    assert first.outbox.replayed >= 1  # the delete failed during the failover, then landed
    await asyncio.sleep(0.05)  # the replayed messages' delivery
    _, new = loader_of("new")
    for worker in workers:
        assert await worker.results.get(("call_tool", "keep", "t", deleted), label="t") is None
    for worker in workers:
        assert await worker.call_tool("keep", "t", deleted, new) == "new"
        assert await worker.call_tool("srv", "t", tagged, new) == "new"

    # L2 serves hits again: a value written now is read back by a fresh worker.
    async def written() -> str:
        return "after"

    await eventually(lambda: first.breaker.allows(), within=10)
    await first.results.get_or_load("after-failover", written)
    async with atc.ToolCache.from_url(url, namespace=first.namespace) as third:
        assert await third.results.get_or_load("after-failover", loader_of("wrong")[1]) == "after"
        assert third.stats()["results"].l2_hits == 1


def key_on_slots(cache: atc.ToolCache, slots: tuple[int, int], server: str) -> str:
    """Return an argument of tool ``server``/t whose entry lives in the slot range ``slots``."""
    for i in range(10_000):
        argument = f"arg{i}"
        ref = cache.results.ref(("call_tool", server, "t", argument), label="t")
        if slots[0] <= key_slot(ref.value_key.encode()) <= slots[1]:
            return argument
    raise AssertionError("no key found in the slot range")


async def test_cluster_primary_failover() -> None:
    with RedisClusterServers(primaries=3, replicas_per_primary=1) as deployment:
        ns = namespace()
        async with (
            atc.ToolCache.from_url(deployment.url, namespace=ns) as first,
            atc.ToolCache.from_url(deployment.url, namespace=ns) as second,
        ):
            workers = (first, second)
            doomed = slot_ranges(3)[0]
            deleted = key_on_slots(first, doomed, "keep")
            tagged = key_on_slots(first, doomed, "srv")
            await hold_stale_copies(workers, deleted, tagged)
            async with Traffic(workers) as traffic:
                await asyncio.sleep(0.2)
                deployment.kill_primary(0)
                await asyncio.sleep(0.1)
                await invalidate_both(first, deleted)  # while the primary is gone
                await asyncio.to_thread(deployment.wait_failover)
                await asyncio.sleep(0.5)
            assert traffic.errors == []
            assert traffic.calls > 100
            await assert_recovered(workers, deleted, tagged, deployment.url)


async def test_sentinel_primary_failover() -> None:
    with RedisSentinelServers() as deployment:
        ns = namespace()
        async with (
            atc.ToolCache.from_url(deployment.url, namespace=ns) as first,
            atc.ToolCache.from_url(deployment.url, namespace=ns) as second,
        ):
            workers = (first, second)
            deleted, tagged = "deleted", "tagged"
            await hold_stale_copies(workers, deleted, tagged)
            with deployment.primary.client() as client:
                assert client.wait(1, 2000) == 1  # the replica has the old values
            async with Traffic(workers) as traffic:
                await asyncio.sleep(0.2)
                deployment.kill_primary()
                await asyncio.sleep(0.1)
                await invalidate_both(first, deleted)  # while the primary is gone
                await asyncio.to_thread(deployment.wait_failover)
                await asyncio.sleep(0.5)
            assert traffic.errors == []
            assert traffic.calls > 100
            await assert_recovered(workers, deleted, tagged, deployment.url)
