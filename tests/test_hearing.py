"""Proof of hearing on demand: pings follow use, and a reader's ping goes out at once.

Pings are counted where they land, in the ``INFO commandstats`` of a
redis-server the test alone uses (the subscriber's pings are the only PINGs
it gets). Counts over a stretch of wall time only ever fall on a slow
machine, so each bound is checked in the direction a slow machine cannot
break.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

import aiotoolcache as atc
from aiotoolcache.hearing import IN_USE_FOR
from tests.servers import RedisServer
from tests.workers import Counting, eventually


def pings(server: RedisServer) -> int:
    """PINGs the server has answered since its statistics were last reset."""
    with server.client() as client:
        stats = client.info("commandstats").get("cmdstat_ping", {})
        client.config_resetstat()
    return int(stats.get("calls", 0))


async def only_reads_ping(cache: atc.ToolCache, server: RedisServer) -> None:
    """Slow the subscriber's own pings to one every 30 s, and count pings from zero: from now
    on only a ping sent for a read can vouch for it in time."""
    cache.bus.ears._ping_every = cache.bus.ears._idle_ping_every = 30.0  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)  # the subscriber waits for its next ping, 30 s away
    pings(server)


async def test_an_idle_worker_pings_at_the_liveness_cadence_and_fast_again_once_used(
    own_redis: RedisServer,
) -> None:
    # health_interval 0.5 s: idle, a ping every 0.25 s; in use, every 80 / 3 ms.
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="idle", health_interval=0.5
    ) as cache:
        assert await cache.results.get_or_load("k", Counting("v")) == "v"
        await asyncio.sleep(IN_USE_FOR + 0.3)  # out of use, and settled into the slow cadence
        pings(own_redis)
        await asyncio.sleep(1.0)
        idle = pings(own_redis)
        assert 0 < idle <= 8  # at the fast cadence it would be about 37

        began = time.monotonic()
        while time.monotonic() - began < 1.0:
            assert await cache.results.get("k") == "v"  # an L1 hit
            await asyncio.sleep(0.02)
        used = pings(own_redis)
        assert used >= 15 * (time.monotonic() - began)  # about 37 a second


async def test_a_load_in_flight_keeps_the_fast_cadence_and_fills_l1(own_redis: RedisServer) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="load", health_interval=0.5
    ) as cache:
        counts: list[int] = []

        async def slow_load() -> str:
            # Out of use by the last lookup's measure: only the load in flight keeps it fast.
            await asyncio.sleep(IN_USE_FOR + 0.2)
            pings(own_redis)
            began = time.monotonic()
            await asyncio.sleep(1.0)
            counts.append(pings(own_redis))
            counts.append(int(15 * (time.monotonic() - began)))
            return "v"

        assert await cache.results.get_or_load("k", slow_load) == "v"
        sent, fast = counts
        assert sent >= fast  # about 37 a second; idle it would be 4
        # The load ended with proof fresh, so its value went into L1 too.
        assert cache.l1.get(cache.results.ref("k").value_key) is not None


async def test_a_read_after_a_lapse_has_its_ping_sent_at_once(own_redis: RedisServer) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="lapse", health_interval=60
    ) as cache:
        load = Counting("v")
        assert await cache.results.get_or_load("k", load) == "v"
        bus = cache.bus
        await only_reads_ping(cache, own_redis)
        hits = cache.stats()["results"].l1_hits
        bus.deaf_after = time.monotonic()  # the last proof has just lapsed
        async with asyncio.timeout(5):
            assert await cache.results.get_or_load("k", load) == "v"
        assert pings(own_redis) == 1  # one ping, sent for the read, proved it
        assert cache.stats()["results"].l1_hits == hits + 1 and load.calls == 1


async def test_a_reader_cancelled_while_it_waits_for_proof_leaves_the_subscriber_alone(
    own_redis: RedisServer,
) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="cancel", health_interval=60
    ) as cache:
        assert await cache.results.get_or_load("k", Counting("v")) == "v"
        bus = cache.bus
        await only_reads_ping(cache, own_redis)
        bus.deaf_after = time.monotonic()
        reader = asyncio.create_task(cache.results.get_or_load("k", Counting("unused")))
        await asyncio.sleep(0)  # it waits for proof now
        reader.cancel()
        # Its ping still went out on the same connection, and was answered.
        await eventually(lambda: bus.hearing)
        assert pings(own_redis) == 1
        assert bus.reconnects == 0 and bus.connected


async def test_work_begun_while_the_subscriber_sleeps_its_idle_interval_wakes_it(
    own_redis: RedisServer,
) -> None:
    # Idle, the subscriber pings every 5 s here; the load outlasts the trust its start had.
    async with atc.ToolCache.from_url(own_redis.url, namespace="wake", health_interval=10) as cache:
        await cache.start()
        await asyncio.sleep(0.03)  # its first ping answered, it sleeps; the proof holds 80 ms
        assert await cache.results.get_or_load("k", Counting("v", delay=0.3)) == "v"
        # Proof stayed fresh while it loaded, so its value went into L1 too.
        assert cache.l1.get(cache.results.ref("k").value_key) is not None


async def test_a_blocked_loop_never_makes_the_subscriber_give_up_on_a_live_connection(
    redis_url: str,
) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="blocked") as cache:
        layer = cache.layer("results")
        load = Counting("v")
        assert await layer.get_or_load("k", load) == "v"
        for _ in range(3):
            cache.bus.deaf_after = time.monotonic()  # trust lapsed: the next read pings
            reading = asyncio.create_task(layer.get_or_load("k", load))
            for _ in range(3):
                await asyncio.sleep(0)  # the read starts, its ping goes out
            # Blocked past both verdicts (1x and 2x health_interval) while the ping's
            # answer waits in the socket: it must be read before any verdict.
            time.sleep(3 * cache.bus.health_interval)  # noqa: ASYNC251 - a blocked loop
            assert await reading == "v"
        assert cache.bus.reconnects == 0
        assert load.calls == 1


# -- reads of what L1 does not hold, after a lapse -----------------------------------------
Read = Callable[[atc.Layer, list[str]], Awaitable[list[object]]]


async def by_get_or_load(layer: atc.Layer, keys: list[str]) -> list[object]:
    return list(await asyncio.gather(*(layer.get_or_load(k, Counting("unused")) for k in keys)))


async def by_get(layer: atc.Layer, keys: list[str]) -> list[object]:
    return list(await asyncio.gather(*(layer.get(k, "unused") for k in keys)))


async def by_get_many(layer: atc.Layer, keys: list[str]) -> list[object]:
    halves = await asyncio.gather(layer.get_many(keys[::2]), layer.get_many(keys[1::2]))
    by_key = dict(zip(keys[::2] + keys[1::2], halves[0] + halves[1], strict=True))
    return [by_key[k] for k in keys]


async def by_peek(layer: atc.Layer, keys: list[str]) -> list[object]:
    with atc.cache_control("only-if-cached"):
        return await by_get_or_load(layer, keys)


EVERY_READ = pytest.mark.parametrize("read", [by_get_or_load, by_get, by_get_many, by_peek])


@EVERY_READ
async def test_a_burst_after_a_lapse_reads_l2_alongside_one_ping(
    own_redis: RedisServer, read: Read
) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="burst", health_interval=60
    ) as cache:
        cache.add_layer("plain", atc.LayerConfig(ttl=60, l1=False))
        layer = cache.layer("plain")
        await layer.set_many([(f"k{i}", i) for i in range(100)])
        bus = cache.bus
        await only_reads_ping(cache, own_redis)
        bus.deaf_after = time.monotonic()  # the last proof has just lapsed
        async with asyncio.timeout(5):
            values = await read(layer, [f"k{i}" for i in range(100)])
        assert values == list(range(100))
        assert pings(own_redis) == 1  # one proof vouched for the whole burst
        assert cache.stats()["plain"].l2_hits == 100


def reads(server: RedisServer) -> int:
    """GETs and MGETs the server has answered so far."""
    with server.client() as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "mget"))


@EVERY_READ
async def test_an_invalidation_heard_with_the_proof_sends_the_read_to_the_new_entry(
    own_redis: RedisServer, read: Read
) -> None:
    config = atc.LayerConfig(ttl=60, l1=False)
    async with (
        atc.ToolCache.from_url(own_redis.url, namespace="moved", health_interval=60) as reader,
        atc.ToolCache.from_url(own_redis.url, namespace="moved") as writer,
    ):
        for cache in (reader, writer):
            cache.add_layer("plain", config)
        layer = reader.layer("plain")

        await writer.layer("plain").set("k", "old")
        assert await read(layer, ["k"]) == ["old"]
        bus = reader.bus
        await only_reads_ping(reader, own_redis)
        # The reader's subscriber falls behind: what reaches it is held back, in order.
        held: list[dict[str, object]] = []
        handle = bus._handle  # type: ignore[attr-defined]
        bus._handle = held.append  # type: ignore[attr-defined]
        # Invalidated and rewritten; the old entry stays in Redis under the old generation.
        await writer.invalidate("plain")
        await writer.layer("plain").set("k", "new")
        # Both published before the read begins, and not applied yet.
        await eventually(lambda: len(held) == 2)
        before = reads(own_redis)
        bus.deaf_after = time.monotonic()  # the last proof has just lapsed
        reading = asyncio.create_task(read(layer, ["k"]))
        # It read the old entry and waits for its proof, whose answer is held too: the read
        # went out without waiting for the proof.
        await eventually(lambda: bus.ears._regaining and len(held) == 3)  # type: ignore[attr-defined]
        assert reads(own_redis) == before + 1
        bus._handle = handle  # type: ignore[attr-defined]
        for reply in held:  # the invalidation, then the proof
            handle(reply)
        async with asyncio.timeout(5):
            assert await reading == ["new"]


async def test_reads_without_l1_keep_the_fast_cadence(own_redis: RedisServer) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="stream", health_interval=60
    ) as cache:
        cache.add_layer("plain", atc.LayerConfig(ttl=60, l1=False))
        layer = cache.layer("plain")
        await layer.set("k", "v")
        idle = 0
        began = time.monotonic()
        while time.monotonic() - began < IN_USE_FOR + 1.0:
            idle += cache.bus.idle
            assert await layer.get_or_load("k", Counting("unused")) == "v"
            await asyncio.sleep(0.005)
        # Every read counts as use (not only one that finds the subscriber idle): past
        # IN_USE_FOR of reads too, the subscriber never falls back to its idle cadence.
        assert idle == 0


async def test_a_value_read_before_its_proof_came_enters_l1_once_the_proof_comes(
    own_redis: RedisServer,
) -> None:
    async with (
        atc.ToolCache.from_url(own_redis.url, namespace="late", health_interval=60) as reader,
        atc.ToolCache.from_url(own_redis.url, namespace="late") as writer,
    ):
        await writer.results.set("k", "v")
        bus = reader.bus
        await only_reads_ping(reader, own_redis)
        held: list[dict[str, object]] = []
        handle = bus._handle  # type: ignore[attr-defined]
        bus._handle = held.append  # type: ignore[attr-defined]
        bus.deaf_after = time.monotonic()  # the last proof has just lapsed
        reading = asyncio.create_task(reader.results.get_or_load("k", Counting("unused")))
        # The L2 read has answered and the read waits for its proof, which is held back.
        await eventually(lambda: bus.ears._regaining and len(held) == 1)  # type: ignore[attr-defined]
        bus._handle = handle  # type: ignore[attr-defined]
        handle(held.pop())
        async with asyncio.timeout(5):
            assert await reading == "v"
        assert reader.l1.get(reader.results.ref("k").value_key) is not None
