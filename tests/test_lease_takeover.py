"""A dead leaseholder's lease is taken over at once; a slow live one keeps its lease.

Workers are real OS processes (tests/workers.py). Worker 0 takes the lease of
a cold key and holds it in its loader until the test kills it or lets it
finish; worker 1 waits for it. Loads are counted with a Redis INCR made by the
loader itself, so the count covers both processes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

import aiotoolcache as atc
from tests.cluster_servers import RedisClusterServers, RedisSentinelServers
from tests.servers import RedisServer
from tests.workers import Link, eventually, run_workers

# The lease's term: a waiter that only waited it out would be this late, or later.
LEASE_MS = 3000


async def hold_or_wait(cache: atc.ToolCache, link: Link, arg: dict[str, Any]) -> dict[str, Any]:
    """Worker 0 loads ``k`` and holds its loader until told to finish; worker 1 waits."""
    plain: Any = Redis.from_url(arg["url"])
    if "node" in arg:  # a Cluster: count through a cluster client
        plain = RedisCluster(host=arg["node"][0], port=arg["node"][1])

    async def load() -> dict[str, Any]:
        attempt = int(await plain.incr("loads"))
        if link.index == 0:
            link.send("loading")
            await link.recv(within=60)  # "finish", unless the test kills this process first
        return {"attempt": attempt, "by": link.index}

    try:
        leases = cache.loads.leases
        assert leases is not None
        await leases.presence.connected()  # however slowly this process started
        await link.recv()  # go
        value = await cache.results.get_or_load("k", load)
    finally:
        await plain.aclose()
    stats = cache.stats()["results"]
    return {"value": value, "done_at": time.time(), "takeovers": stats.lease_takeovers}


def _awaited_marker(*servers: RedisServer) -> bool:
    """True once a lease marker in Redis says another worker waits for it."""
    values = []
    for server in servers:
        with server.client() as plain:
            values += [plain.get(key) for key in plain.keys("*") if plain.type(key) == b"string"]
    return any(v is not None and v.startswith(b"\x00lease:") and v.endswith(b"+") for v in values)


async def _holder_then_waiter(workers: list[Any], *servers: RedisServer) -> None:
    holder, waiter = workers
    holder.send("go")
    assert await holder.recv() == "loading"
    waiter.send("go")
    await eventually(lambda: _awaited_marker(*servers), within=10)


@pytest.mark.slow
async def test_a_killed_leaseholder_is_taken_over_well_within_its_term(
    redis_url: str, redis_server: RedisServer
) -> None:
    arg = {"url": redis_url}
    options = {"namespace": "t", "lease_ms": LEASE_MS}
    async with run_workers(2, redis_url, hold_or_wait, arg, **options) as workers:
        async with asyncio.timeout(30):
            await _holder_then_waiter(workers, redis_server)
            workers[0].kill()
            killed_at = time.time()
            result = await workers[1].result()

    took = result["done_at"] - killed_at
    print(f"value served {took:.3f} s after the leaseholder's SIGKILL")
    assert result["value"] == {"attempt": 2, "by": 1}
    assert result["takeovers"] == 1
    # Asked Redis whether the holder lived, instead of waiting out the 3 s term.
    assert took < LEASE_MS / 1000 / 2


@pytest.mark.slow
async def test_a_slow_live_leaseholder_keeps_its_lease_and_its_fill_lands(
    redis_url: str, redis_server: RedisServer
) -> None:
    arg = {"url": redis_url}
    # A short term: the holder outlives several terms (renewed) and many probes.
    options = {"namespace": "t", "lease_ms": 600}
    async with run_workers(2, redis_url, hold_or_wait, arg, **options) as workers:
        async with asyncio.timeout(30):
            await _holder_then_waiter(workers, redis_server)
            asked_before, _ = _client_calls(redis_server, "client|list")
            # The waiter asked after the holder several times and found it alive.
            await eventually(
                lambda: _client_calls(redis_server, "client|list")[0] >= asked_before + 5, within=10
            )
            workers[0].send("finish")
            held, waited = await asyncio.gather(workers[0].result(), workers[1].result())

    with redis_server.client() as plain:
        assert int(plain.get("loads") or 0) == 1
    assert held["value"] == waited["value"] == {"attempt": 1, "by": 0}
    assert waited["takeovers"] == 0


def _client_calls(server: RedisServer, command: str) -> tuple[int, int]:
    """How many calls of ``command`` (e.g. client|list) the server answered, and refused."""
    with server.client() as plain:
        stats = plain.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)), int(stats.get("rejected_calls", 0))


@pytest.mark.slow
@pytest.mark.parametrize("refused", ["client|list", "client|setname"])
async def test_when_an_acl_refuses_presence_a_dead_holder_s_lease_runs_out_its_term(
    redis_server: RedisServer, refused: str
) -> None:
    """An ACL user without CLIENT LIST (or SETNAME): waiters fall back to the lease's term."""
    with redis_server.client() as plain:
        plain.flushall()
        plain.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all")
        plain.execute_command("ACL", "SETUSER", "app", f"-{refused}")
    url = f"redis://app:pw@{redis_server.host}:{redis_server.port}/0"
    _, refused_before = _client_calls(redis_server, refused)
    options = {"namespace": "t", "lease_ms": 1000}
    try:
        async with run_workers(2, url, hold_or_wait, {"url": url}, **options) as workers:
            async with asyncio.timeout(30):
                await _holder_then_waiter(workers, redis_server)
                workers[0].kill()
                result = await workers[1].result()
    finally:
        with redis_server.client() as plain:
            plain.execute_command("ACL", "DELUSER", "app")

    assert result["value"] == {"attempt": 2, "by": 1}
    assert result["takeovers"] == 1
    assert _client_calls(redis_server, refused)[1] > refused_before  # asked, and was refused


@pytest.mark.slow
async def test_on_a_cluster_a_killed_leaseholder_is_taken_over_well_within_its_term() -> None:
    """The marker names the node the holder's connection is on; the waiter asks that node."""
    with RedisClusterServers(primaries=3) as cluster:
        first = cluster.nodes[0]
        arg = {"url": first.url, "node": (first.host, first.port)}
        options = {"namespace": "t", "lease_ms": LEASE_MS}
        async with run_workers(2, cluster.url, hold_or_wait, arg, **options) as workers:
            async with asyncio.timeout(30):
                await _holder_then_waiter(workers, *cluster.nodes)
                workers[0].kill()
                killed_at = time.time()
                result = await workers[1].result()

    took = result["done_at"] - killed_at
    print(f"value served {took:.3f} s after the leaseholder's SIGKILL, on a cluster")
    assert result["value"] == {"attempt": 2, "by": 1}
    assert result["takeovers"] == 1
    assert took < LEASE_MS / 1000 / 2


@pytest.mark.slow
async def test_under_sentinel_a_killed_leaseholder_is_taken_over_well_within_its_term() -> None:
    """The presence connection follows the primary the Sentinel pool connects to."""
    with RedisSentinelServers() as group:
        primary = group.primary
        arg = {"url": primary.url}
        options = {"namespace": "t", "lease_ms": LEASE_MS}
        async with run_workers(2, group.url, hold_or_wait, arg, **options) as workers:
            async with asyncio.timeout(30):
                await _holder_then_waiter(workers, primary)
                workers[0].kill()
                killed_at = time.time()
                result = await workers[1].result()

    took = result["done_at"] - killed_at
    print(f"value served {took:.3f} s after the leaseholder's SIGKILL, under Sentinel")
    assert result["value"] == {"attempt": 2, "by": 1}
    assert result["takeovers"] == 1
    assert took < LEASE_MS / 1000 / 2
