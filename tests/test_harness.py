"""The multi-process Redis deployments start healthy, fail over and leave nothing behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from tests.cluster_servers import (
    RedisClusterServers,
    RedisSentinelServers,
    TLSRedisServer,
    command,
    is_alive,
)
from tests.servers import RedisServer

# Startup is bounded by Redis itself: a cluster primary refuses to report
# cluster_state:ok during its first 2 s (CLUSTER_WRITABLE_DELAY).
STARTUP_BUDGET_S = 6.0

# redis-py retries a failed connect three times with backoff by default; a
# handshake that must fail would take seconds.
NO_RETRY = Retry(NoBackoff(), 0)


def assert_torn_down(servers: list[RedisServer]) -> None:
    """assert_torn_down fails unless every process has exited and every directory is gone."""
    assert not [server.port for server in servers if is_alive(server)]
    assert not [server.dir for server in servers if server.dir.exists()]


@contextmanager
def started(deployment: RedisClusterServers | RedisSentinelServers) -> Iterator[None]:
    """started runs `deployment` for one test and fails if startup or teardown falls short."""
    began = time.monotonic()
    with deployment:
        assert time.monotonic() - began < STARTUP_BUDGET_S
        yield
    assert_torn_down(deployment.all_servers())


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    """cluster is three primaries without replicas, serving every slot."""
    deployment = RedisClusterServers(primaries=3)
    with started(deployment):
        yield deployment


@pytest.fixture
def replicated_cluster() -> Iterator[RedisClusterServers]:
    """replicated_cluster is three primaries with one synced replica each."""
    deployment = RedisClusterServers(primaries=3, replicas_per_primary=1)
    with started(deployment):
        yield deployment


@pytest.fixture
def sentinel_set() -> Iterator[RedisSentinelServers]:
    """sentinel_set is a primary, its replica and three sentinels that agree on both."""
    deployment = RedisSentinelServers(sentinels=3)
    with started(deployment):
        yield deployment


@pytest.fixture
def tls_server() -> Iterator[TLSRedisServer]:
    """tls_server is a TLS-only Redis whose certificate only its own CA vouches for."""
    server = TLSRedisServer()
    with server:
        yield server
    assert_torn_down([server])


def cluster_client(deployment: RedisClusterServers) -> RedisCluster:
    """cluster_client is the async redis-py client under test, seeded with every node."""
    nodes = [ClusterNode(host, port) for host, port in deployment.startup_nodes]
    return RedisCluster(startup_nodes=nodes, socket_timeout=2)


# --------------------------------------------------------------------------- cluster


@pytest.mark.slow
async def test_cluster_serves_keys_on_every_primary(cluster: RedisClusterServers) -> None:
    ports = [port for _host, port in cluster.startup_nodes]
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    assert len(cluster.primaries) == 3
    assert cluster.replicas == []

    client = cluster_client(cluster)
    try:
        for i in range(1000):
            await client.set(f"key:{i}", i)
        values = [await client.get(f"key:{i}") for i in range(1000)]
    finally:
        await client.aclose()

    assert values == [str(i).encode() for i in range(1000)]
    # The keys spread across slots, so every primary holds some of them.
    sizes = [command(primary, "DBSIZE") for primary in cluster.primaries]
    assert sum(sizes) == 1000
    assert all(size > 0 for size in sizes)


@pytest.mark.slow
async def test_cluster_promotes_replica_and_keeps_replicated_keys(
    replicated_cluster: RedisClusterServers,
) -> None:
    cluster = replicated_cluster
    assert len(cluster.replicas) == 3
    successor = cluster.replicas[0]  # replicas are ordered like their primaries
    client = cluster_client(cluster)
    try:
        for i in range(200):
            await client.set(f"key:{i}", i)
        # WAIT counts acks for the writes of its own connection; sequential
        # commands reuse one connection per node. redis-py sums the replies.
        acks = await client.execute_command("WAIT", 1, 2000, target_nodes=RedisCluster.PRIMARIES)
        assert acks == 3

        killed = cluster.kill_primary(0)
        primaries = await asyncio.to_thread(cluster.wait_failover)

        assert primaries[0] is successor
        assert killed not in primaries
        assert len(primaries) == 3
        values = [await client.get(f"key:{i}") for i in range(200)]
        assert values == [str(i).encode() for i in range(200)]
        assert await client.set("after-failover", 1)
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- sentinel


@pytest.mark.slow
async def test_sentinel_promotes_replica_and_accepts_writes(
    sentinel_set: RedisSentinelServers,
) -> None:
    ports = [port for _host, port in sentinel_set.sentinel_addresses]
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    assert sentinel_set.url == f"redis+sentinel://{hosts}/mymaster/0"
    old_primary, old_replica = sentinel_set.primary, sentinel_set.replica

    sentinel = Sentinel(sentinel_set.sentinel_addresses, socket_timeout=2)  # type: ignore[no-untyped-call]
    primary = sentinel.master_for(sentinel_set.service_name, socket_timeout=2)
    try:
        assert await primary.set("before", 1)
        assert sentinel_set.kill_primary() is old_primary
        # In a thread, so the event loop sees the dead primary close its pooled
        # connection and the pool reconnects through the sentinels.
        assert await asyncio.to_thread(sentinel_set.wait_failover, 20) is old_replica

        assert sentinel_set.primary is old_replica
        assert await primary.set("after", 2)
        assert await primary.get("before") == b"1"
        assert await sentinel.discover_master("mymaster") == ("127.0.0.1", old_replica.port)
    finally:
        await primary.aclose()
        for sentinel_client in sentinel.sentinels:
            await sentinel_client.aclose()


# --------------------------------------------------------------------------- TLS


async def test_tls_server_accepts_clients_that_trust_its_ca(tls_server: TLSRedisServer) -> None:
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}/0"
    client = Redis(
        host=tls_server.host,
        port=tls_server.port,
        ssl=True,
        ssl_ca_certs=str(tls_server.ca_file),
        socket_timeout=2,
    )
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_tls_server_is_rejected_without_its_ca(tls_server: TLSRedisServer) -> None:
    client = Redis(
        host=tls_server.host, port=tls_server.port, ssl=True, socket_timeout=2, retry=NO_RETRY
    )
    try:
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


async def test_tls_server_refuses_plain_tcp(tls_server: TLSRedisServer) -> None:
    client = Redis(host=tls_server.host, port=tls_server.port, socket_timeout=2, retry=NO_RETRY)
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()
