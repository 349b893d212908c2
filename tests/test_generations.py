"""Generations in Redis: bumps announced in the same script, bounded values, loss found by all.

Every test runs against real redis-server processes; faults are real (a reply
lost on the wire, a refused PUBLISH, a hash deleted or overwritten).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aredis

import aiotoolcache as atc
from aiotoolcache.bus_messages import MAX_GENERATION, now_ms
from aiotoolcache.invalidation import RedisBus
from tests.reply_loss import ReplyLossProxy
from tests.servers import RedisServer
from tests.workers import Counting, eventually


def redis_bus(cache: atc.ToolCache) -> RedisBus:
    bus = cache.bus
    assert isinstance(bus, RedisBus)
    return bus


def stop_checking(cache: atc.ToolCache) -> None:
    """Stop the worker's periodic generation check: what it learns comes off the bus only."""
    task = redis_bus(cache)._checker
    assert task is not None
    task.cancel()


def stored(server: RedisServer, namespace: str = "test") -> dict[str, bytes]:
    with server.client() as client:
        return {k.decode(): v for k, v in client.hgetall(f"{namespace}:generations").items()}


def constant(value: Any) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        return value

    return load


# -- one script: the bump and its announcement --------------------------------------------


async def test_a_bump_whose_reply_is_lost_still_reached_every_worker(
    redis_server: RedisServer, other_worker: atc.ToolCache
) -> None:
    stop_checking(other_worker)
    proxy = await ReplyLossProxy(redis_server.port).start()
    try:
        async with atc.ToolCache.from_url(proxy.url, namespace="test", budget=0.2) as writer:
            # The reply to the bump script is lost after Redis ran it: the announcement
            # went out from inside the script, so the other worker hears of it anyway.
            proxy.lose_reply_to(b"tag:lost")
            await writer.invalidate(tags=["lost"])
            assert proxy.lost == 1
            landed = int(stored(redis_server)["tag:lost"])
            await eventually(lambda: other_worker.bus.generation("tag:lost") == landed)
    finally:
        await proxy.close()


async def test_a_bump_announces_itself_within_its_script(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer
) -> None:
    stop_checking(other_worker)
    await other_worker.results.get_or_load("k", constant("old"), tags=["t"])
    await cache.invalidate(tags=["t"])
    value = cache.bus.generation("tag:t")
    assert int(stored(redis_server)["tag:t"]) == value
    await eventually(lambda: other_worker.bus.generation("tag:t") == value)
    assert await other_worker.results.get_or_load("k", constant("new"), tags=["t"]) == "new"


async def test_a_bump_that_landed_unannounced_is_found_by_the_others_check(
    redis_server: RedisServer, other_worker: atc.ToolCache
) -> None:
    with redis_server.client() as client:
        client.acl_setuser(
            "mute",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-publish"],
        )
    url = f"redis://mute:pw@127.0.0.1:{redis_server.port}/0"
    try:
        async with atc.ToolCache.from_url(url, namespace="test") as writer:
            assert await other_worker.results.get_or_load("k", constant("old"), tags=["t"]) == "old"
            await writer.invalidate(tags=["t"])  # the script's PUBLISH is refused; it raised
            assert writer.outbox is not None and writer.outbox.pending
            landed = int(stored(redis_server)["tag:t"])
            # Kept in use, the other worker reads the hash every max_staleness.
            await eventually(lambda: other_worker.bus.generation("tag:t") >= landed, within=3)
            assert await other_worker.results.get_or_load("k", constant("new"), tags=["t"]) == "new"
    finally:
        with redis_server.client() as client:
            client.acl_deluser("mute")


async def test_a_replayed_bump_is_announced_by_the_same_script(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer
) -> None:
    stop_checking(other_worker)
    with redis_server.client() as client:
        client.delete("test:generations")
        client.set("test:generations", "not a hash")  # every bump fails: nothing lands
    await cache.invalidate(tags=["t"])
    assert cache.outbox is not None and cache.outbox.pending
    assert other_worker.bus.generation("tag:t") == 0
    with redis_server.client() as client:
        client.delete("test:generations")
    await eventually(lambda: cache.outbox is not None and not cache.outbox.pending)
    landed = int(stored(redis_server)["tag:t"])
    await eventually(lambda: other_worker.bus.generation("tag:t") == landed)


async def test_a_bump_proposed_behind_another_workers_goes_past_it(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    ahead = now_ms() + 60_000  # another worker's clock runs a minute ahead
    with redis_server.client() as client:
        client.hset("test:generations", "layer:results", ahead)
    assert await cache.bus.bump("layer:results") == ahead + 1
    assert int(stored(redis_server)["layer:results"]) == ahead + 1


# -- values no worker could have written ------------------------------------------------------


@pytest.mark.parametrize(
    "planted", [str(2**62), str(2**53 + 1), "1e15", "-5", "12abc", "", "\xff", "0x10"]
)
async def test_a_planted_generation_never_freezes_invalidation(
    redis_url: str, redis_server: RedisServer, planted: str
) -> None:
    with redis_server.client() as client:
        client.hset("planted:generations", mapping={"tag:server:gh": planted, "ns": planted})
    options: dict[str, Any] = {"namespace": "planted", "secret": "fleet secret"}
    async with (
        atc.ToolCache.from_url(redis_url, **options) as first,
        atc.ToolCache.from_url(redis_url, **options) as second,
    ):
        assert await first.list_tools("gh", constant("v1")) == "v1"
        assert await second.list_tools("gh", constant("v1")) == "v1"
        await first.invalidate_server("gh")
        await eventually(
            lambda: second.bus.generation("tag:server:gh") == first.bus.generation("tag:server:gh")
        )
        assert await first.list_tools("gh", constant("v2")) == "v2"
        assert await second.list_tools("gh", constant("v2")) == "v2"
        held = stored(redis_server, "planted")
        assert all(0 < int(value) < MAX_GENERATION for value in held.values())
    if planted and planted.isdigit() and int(planted) < 2**53 - 10**15:
        return  # (a plausible value is a generation like any other)
    assert first.bus.rejected + second.bus.rejected >= 1


async def test_a_generation_planted_under_a_running_worker_is_treated_as_data_loss(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    await cache.results.get_or_load("k", constant("old"))
    ns = cache.bus.generation("ns")
    with redis_server.client() as client:
        client.hset("test:generations", "layer:results", str(2**62))
    bus = redis_bus(cache)
    await bus.load_generations()
    assert bus.rejected >= 1 and bus.data_losses == 1
    assert cache.bus.generation("layer:results") < 2**53
    assert cache.bus.generation("ns") > ns  # every entry written before is unreachable
    assert len(cache.l1) == 0
    held = stored(redis_server)
    assert int(held["layer:results"]) == cache.bus.generation("layer:results")
    assert await cache.results.get_or_load("k", constant("new")) == "new"


# -- a bump heard while the hash is read is not data loss --------------------------------------


async def test_a_bump_heard_while_the_hash_is_read_is_not_data_loss(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    stop_checking(cache)
    bus = redis_bus(cache)
    await cache.results.get_or_load("kept", constant("v"))
    ns = cache.bus.generation("ns")
    real = bus.client.hgetall
    replied, release = asyncio.Event(), asyncio.Event()

    async def held_back(name: str) -> Any:
        reply = await real(name)  # the real reply, then held until the bump was heard
        replied.set()
        await release.wait()
        return reply

    bus.client.hgetall = held_back  # type: ignore[method-assign]
    try:
        check = asyncio.create_task(bus.load_generations())
        await replied.wait()
        await other_worker.invalidate(tags=["t"])
        bumped = other_worker.bus.generation("tag:t")
        await eventually(lambda: cache.bus.generation("tag:t") == bumped)
        release.set()
        await check
    finally:
        bus.client.hgetall = real  # type: ignore[method-assign]
    assert bus.data_losses == 0
    assert cache.bus.generation("ns") == ns
    assert cache.bus.generation("tag:t") == bumped
    assert cache.l1.get(cache.results.ref("kept").value_key) is not None


# -- the hash lost while entries remain ---------------------------------------------------------


@pytest.mark.parametrize("old_worker_alive", [True, False])
async def test_a_new_worker_sees_a_lost_hash_as_data_loss(
    redis_url: str, redis_server: RedisServer, old_worker_alive: bool
) -> None:
    old = atc.ToolCache.from_url(redis_url, namespace="lost")
    await old.start()
    try:
        await old.results.set("k", "old")
        await old.invalidate(layer="results")
        assert await old.results.get("k") is None
        if not old_worker_alive:
            await old.aclose()
        with redis_server.client() as client:
            client.delete("lost:generations")  # evicted; the entry stays
        async with atc.ToolCache.from_url(redis_url, namespace="lost") as new:
            assert await new.results.get("k") is None
            load = Counting("fresh")
            assert await new.results.get_or_load("k", load) == "fresh"
            assert load.calls == 1
            if old_worker_alive:
                await redis_bus(old).load_generations()
                assert redis_bus(old).data_losses == 1
                assert await old.results.get("k") is None
    finally:
        await old.aclose()


async def test_workers_starting_together_agree_on_one_namespace_generation(
    redis_url: str,
) -> None:
    caches = [atc.ToolCache.from_url(redis_url, namespace="fresh") for _ in range(4)]
    try:
        await asyncio.gather(*(cache.start() for cache in caches))
        assert len({cache.bus.generation("ns") for cache in caches}) == 1
        assert caches[0].bus.generation("ns") > 0
        assert all(redis_bus(cache).data_losses == 0 for cache in caches)
    finally:
        await asyncio.gather(*(cache.aclose() for cache in caches))


@pytest.fixture
async def plain(redis_server: RedisServer) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis(port=redis_server.port)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_namespace_field_is_written_once_and_kept(
    cache: atc.ToolCache, plain: aredis.Redis
) -> None:
    first = int(await plain.hget("test:generations", "ns") or 0)
    assert first == cache.bus.generation("ns") > 0
    await redis_bus(cache).load_generations()
    assert int(await plain.hget("test:generations", "ns") or 0) == first
