"""Writes and deletes that cannot reach Redis, or cannot name their keys yet, still land.

Each test turns one kind of Redis call away for one worker with an ACL on a
server of its own, while the others keep working, then lets it through again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

import aiotoolcache as atc
from tests.servers import RedisServer
from tests.workers import Gated


def constant(value: Any) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        return value

    return load


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def admin(own_redis: RedisServer) -> Iterator[redis.Redis]:
    with own_redis.client() as client:
        yield client


def user_url(server: RedisServer, user: str, admin: redis.Redis, *rules: str) -> str:
    """A URL for a new ACL user ``user`` of ``server``, allowed everything, then ``rules``."""
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", *rules)
    return f"redis://{user}:pw@127.0.0.1:{server.port}/0"


def in_redis(admin: redis.Redis, *keys: str) -> int:
    return int(admin.exists(*keys))


async def test_a_failed_delete_is_never_read_back_through_a_lease_reply(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    url = own_redis.url
    async with (
        atc.ToolCache.from_url(url, namespace="r") as worker,
        atc.ToolCache.from_url(url, namespace="r") as other,
    ):
        await other.results.set("k", "old")
        assert await worker.results.get("k") == "old"
        admin.execute_command("ACL", "SETUSER", "default", "-eval", "-evalsha")
        try:
            await worker.results.delete("k")  # its script is refused: queued
            assert worker.outbox is not None and worker.outbox.pending == 1
            assert await worker.results.get("k") is None
            await worker.results.get("other")  # a call that works: the next miss leases
            assert not worker.breaker.failing
            # The lease request (SET NX GET) answers with the old value still in Redis.
            assert await worker.results.get_or_load("k", constant("new")) == "new"
        finally:
            admin.execute_command("ACL", "SETUSER", "default", "+eval", "+evalsha")
        await eventually(lambda: worker.outbox is not None and worker.outbox.pending == 0)
        assert not in_redis(admin, worker.results.ref("k").value_key)
        # The replay's own echo is ignored: it dropped the value loaded meanwhile itself.
        assert worker.l1.get(worker.results.ref("k").value_key) is None
        assert await worker.results.get("k") is None
        await eventually(lambda: other.l1.get(other.results.ref("k").value_key) is None)
        assert await other.results.get("k") is None


async def test_changes_made_before_the_generations_are_known_land_under_current_ones(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    late_url = user_url(own_redis, "late", admin)
    admin.execute_command("ACL", "SETUSER", "late", "off")
    async with atc.ToolCache.from_url(own_redis.url, namespace="r") as first:
        await first.invalidate(layer="results")  # live keys no longer use generation 0
        await first.results.set("deleted", "old")
        await first.results.set("written", "old")
        assert await first.results.get("deleted") == "old"
        assert await first.results.get("written") == "old"
        live = [first.results.ref(key).value_key for key in ("deleted", "written")]
        late = atc.ToolCache.from_url(late_url, namespace="r")
        try:
            await late.start()  # Redis refuses it: the generations are unknown
            assert not late.coherence.known
            await late.results.delete("deleted")
            await late.results.set("written", "new")  # queued as a delete of the old value
            assert late.outbox is not None and late.outbox.pending == 2
            admin.execute_command("ACL", "SETUSER", "late", "on")
            await eventually(lambda: late.outbox is not None and late.outbox.pending == 0)
            assert not in_redis(admin, *live)
            await eventually(lambda: all(first.l1.get(key) is None for key in live))
            assert await first.results.get("deleted") is None
            assert await first.results.get("written") is None
            assert await late.results.get("deleted") is None
        finally:
            await late.aclose()


async def test_a_strict_change_that_cannot_name_its_key_raises_and_still_lands(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    late_url = user_url(own_redis, "late", admin)
    admin.execute_command("ACL", "SETUSER", "late", "off")
    async with atc.ToolCache.from_url(own_redis.url, namespace="r") as first:
        await first.invalidate(layer="results")
        await first.results.set("k", "old")
        live = first.results.ref("k").value_key
        late = atc.ToolCache.from_url(late_url, namespace="r", strict=True)
        try:
            await late.start()
            with pytest.raises(atc.BackendError):
                await late.results.delete("k")
            with pytest.raises(atc.BackendError):
                await late.results.set("k", "new")
            assert late.outbox is not None and late.outbox.pending == 1
            assert in_redis(admin, live)  # nothing went out under a guessed name
            admin.execute_command("ACL", "SETUSER", "late", "on")
            await eventually(lambda: late.outbox is not None and late.outbox.pending == 0)
            assert not in_redis(admin, live)
        finally:
            await late.aclose()


async def deafen(admin: redis.Redis, worker: atc.ToolCache, user: str, *rules: str) -> None:
    """Refuse ``user`` SUBSCRIBE (and ``rules``), and cut its subscriber off: the worker
    is deaf while its connection pool keeps working."""
    admin.execute_command("ACL", "SETUSER", user, "-subscribe", *rules)
    for client in admin.client_list(_type="pubsub"):
        if client["user"] == user:
            admin.client_kill_filter(_id=client["id"])
    await eventually(lambda: not worker.bus.connected)


async def test_a_deaf_worker_deletes_under_the_generations_redis_holds(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    deaf_url = user_url(own_redis, "deaf", admin)
    async with (
        atc.ToolCache.from_url(deaf_url, namespace="r", strict=True) as deaf,
        atc.ToolCache.from_url(own_redis.url, namespace="r") as writer,
        atc.ToolCache.from_url(own_redis.url, namespace="r") as reader,
    ):
        await deaf.results.set("k", "v0")
        await deafen(admin, deaf, "deaf")
        await writer.invalidate(layer="results")  # the deaf worker never hears of it
        field = "layer:results"
        await eventually(lambda: reader.bus.generation(field) == writer.bus.generation(field))
        assert deaf.bus.generation(field) < writer.bus.generation(field)
        assert await reader.results.get_or_load("k", constant("v1")) == "v1"
        live = reader.results.ref("k").value_key
        assert in_redis(admin, live)
        await deaf.results.delete("k")  # strict: it returns only if it reached the live key
        assert not in_redis(admin, live)
        await eventually(lambda: reader.l1.get(live) is None)
        assert await reader.results.get("k") is None
        assert await writer.results.get("k") is None


async def test_a_deaf_worker_that_cannot_read_the_generations_raises_and_still_deletes(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    deaf_url = user_url(own_redis, "deaf", admin)
    async with (
        atc.ToolCache.from_url(deaf_url, namespace="r", strict=True) as deaf,
        atc.ToolCache.from_url(own_redis.url, namespace="r") as writer,
    ):
        await deafen(admin, deaf, "deaf", "-hgetall")
        await writer.invalidate(layer="results")
        await writer.results.set("k", "v1")
        live = writer.results.ref("k").value_key
        with pytest.raises(atc.BackendError):
            await deaf.results.delete("k")
        assert deaf.outbox is not None and deaf.outbox.pending == 1
        assert in_redis(admin, live)  # not deleted under the old generation's name
        admin.execute_command("ACL", "SETUSER", "deaf", "+subscribe", "+hgetall")
        await eventually(lambda: deaf.outbox is not None and deaf.outbox.pending == 0)
        assert not in_redis(admin, live)
        await eventually(lambda: writer.l1.get(live) is None)
        assert await writer.results.get("k") is None


# -- a restart of Redis, with the writer not yet subscribed again ---------------------------


async def restart_with_deaf_writer(
    server: RedisServer, reader: atc.ToolCache, writer: atc.ToolCache, *rules: str
) -> None:
    """Restart Redis empty; the reader subscribes again (and finds the generations lost, so
    its keys move on) while the writer's user comes back unable to subscribe (and ``rules``)."""
    before = reader.bus.generation("ns")
    await asyncio.to_thread(server.restart)  # the writer's user is gone until set up below
    await eventually(lambda: not writer.bus.connected)
    await eventually(lambda: reader.bus.connected and reader.bus.generation("ns") > before)
    with server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "writer", "on", ">pw", "~*", "&*", "+@all", "-subscribe", *rules
        )
    # It has not heard of the move.
    assert writer.bus.generation("ns") < reader.bus.generation("ns")


async def test_after_a_restart_a_writer_not_subscribed_again_still_revokes_an_old_load(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    writer_url = user_url(own_redis, "writer", admin)
    async with (
        atc.ToolCache.from_url(writer_url, namespace="r", strict=True) as writer,
        atc.ToolCache.from_url(own_redis.url, namespace="r") as reader,
    ):
        await writer.invalidate(layer="results")  # a generation Redis will lose
        await eventually(lambda: reader.bus.generation("layer:results") > 0)
        await restart_with_deaf_writer(own_redis, reader, writer)
        old = Gated("old")  # a load that reads the data before the writer changes it
        load = asyncio.create_task(reader.results.get_or_load("k", old))
        await old.started.wait()
        live = reader.results.ref("k").value_key
        with own_redis.client() as fresh_admin:
            assert in_redis(fresh_admin, live)  # its lease
            await writer.results.delete("k")  # the data changed: returns once it reached Redis
            old.gate.set()
            assert await load == "old"
            assert not in_redis(fresh_admin, live)  # the old value did not fill L2
        assert await reader.results.get_or_load("k", constant("new")) == "new"


async def test_after_a_restart_a_strict_delete_that_raised_is_replayed_under_current_names(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    writer_url = user_url(own_redis, "writer", admin)
    async with (
        atc.ToolCache.from_url(writer_url, namespace="r", strict=True) as writer,
        atc.ToolCache.from_url(own_redis.url, namespace="r") as reader,
    ):
        await writer.invalidate(layer="results")
        await eventually(lambda: reader.bus.generation("layer:results") > 0)
        await restart_with_deaf_writer(own_redis, reader, writer, "-eval", "-evalsha")
        old = Gated("old")
        load = asyncio.create_task(reader.results.get_or_load("k", old))
        await old.started.wait()
        with pytest.raises(atc.BackendError):
            await writer.results.delete("k")  # refused: it did not reach Redis
        old.gate.set()
        assert await load == "old"  # nothing revoked it: it fills L2
        live = reader.results.ref("k").value_key
        with own_redis.client() as fresh_admin:
            assert in_redis(fresh_admin, live)
            fresh_admin.execute_command("ACL", "SETUSER", "writer", "+eval", "+evalsha")
            await eventually(lambda: writer.outbox is not None and writer.outbox.pending == 0)
            assert not in_redis(fresh_admin, live)
        await eventually(lambda: reader.l1.get(live) is None)
        assert await reader.results.get("k") is None


async def test_generations_written_back_after_a_restart_reach_the_other_workers(
    own_redis: RedisServer, admin: redis.Redis
) -> None:
    writer_url = user_url(own_redis, "writer", admin)
    async with atc.ToolCache.from_url(writer_url, namespace="r", strict=True) as writer:
        await writer.invalidate(layer="results")  # a generation Redis will lose
        await asyncio.to_thread(own_redis.restart)  # the writer's user is gone for now
        await eventually(lambda: not writer.bus.connected)
        # A worker started on the empty server has never heard of that generation.
        async with atc.ToolCache.from_url(own_redis.url, namespace="r") as reader:
            assert reader.bus.generation("layer:results") == 0
            with own_redis.client() as fresh_admin:
                user_url(own_redis, "writer", fresh_admin)
            # The writer subscribes again, finds its generations lost, writes them back
            # and moves the namespace on: the reader must take all of it, not only the move.
            await eventually(lambda: writer.bus.connected)
            ns = writer.bus.generation("ns")
            await eventually(lambda: reader.bus.generation("ns") == ns)
            assert await reader.results.get_or_load("k", constant("old")) == "old"
            await writer.results.delete("k")
            with own_redis.client() as fresh_admin:
                assert not in_redis(fresh_admin, reader.results.ref("k").value_key)
            await eventually(lambda: reader.l1.get(reader.results.ref("k").value_key) is None)
            assert await reader.results.get("k") is None
