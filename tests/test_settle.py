"""Writes that settle: once a write returns, no worker serves what it replaced.

Against real redis-server processes; the frozen worker is a real process
stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
import redis.asyncio as aredis

import aiotoolcache as atc
from aiotoolcache.invalidation import RedisBus
from benchmarks.chaos_support import FaultProxy
from tests.servers import RedisServer
from tests.workers import Counting, Gated, Link, run_workers


def settlement(cache: atc.ToolCache) -> Any:
    bus = cache.bus
    assert isinstance(bus, RedisBus)
    return bus.settlement


# -- two workers in one process -------------------------------------------------------------


async def test_a_tool_write_returns_only_once_the_other_worker_dropped_its_copy(
    redis_url: str,
) -> None:
    truth = {"v": 0}

    async def read() -> int:
        return truth["v"]

    async with (
        atc.ToolCache.from_url(redis_url, namespace="rw") as writer,
        atc.ToolCache.from_url(redis_url, namespace="rw") as reader,
    ):
        stale = 0
        for i in range(200):
            assert await reader.call_tool("srv", "get", {}, read) == i

            async def write(value: int = i + 1) -> str:
                truth["v"] = value
                return "ok"

            await writer.call_tool("srv", "set", {"v": i + 1}, write, writes=True)
            # No await between the write's return and this read: only settling makes it fresh.
            if await reader.call_tool("srv", "get", {}, read) != i + 1:
                stale += 1
        assert stale == 0
        assert reader.stats()["results"].l1_hits >= 100  # the old answer was in L1 each time
        assert settlement(writer).by_acks == 200


async def test_a_read_after_a_settled_write_never_joins_a_load_begun_before_it(
    redis_url: str, redis_server: RedisServer
) -> None:
    async def write() -> str:
        return "ok"

    # The reader hears everything 30 ms late (its proof of hearing still holds): only
    # settling keeps the write from returning before the reader applied it.
    proxy = await FaultProxy(redis_server.port).start()
    proxy.latency = 0.03
    try:
        async with (
            atc.ToolCache.from_url(redis_server.url, namespace="inflight") as writer,
            atc.ToolCache.from_url(proxy.url, namespace="inflight") as reader,
        ):
            old = Gated("old")
            before = asyncio.create_task(reader.call_tool("srv", "get", {}, old))
            await old.started.wait()
            await writer.call_tool("srv", "set", {}, write, writes=True)
            fresh = Counting("new")
            after = asyncio.create_task(reader.call_tool("srv", "get", {}, fresh))
            old.gate.set()
            assert await before == "old"  # begun before the write: concurrent with it
            assert await after == "new" and fresh.calls == 1
            # The old load stored nothing: the write revoked it.
            assert await reader.call_tool("srv", "get", {}, Counting("unused")) == "new"
    finally:
        await proxy.close()


@pytest.mark.parametrize("operation", ["set", "delete", "invalidate"])
async def test_a_plain_write_settles_when_asked(redis_url: str, operation: str) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="plain") as writer,
        atc.ToolCache.from_url(redis_url, namespace="plain") as reader,
    ):
        stale = 0
        for i in range(100):
            await writer.results.set("k", i, settle=True)
            assert await reader.results.get("k") == i
            if operation == "set":
                await writer.results.set("k", -i, settle=True)
                fresh = await reader.results.get("k") == -i
            elif operation == "delete":
                await writer.results.delete("k", settle=True)
                fresh = await reader.results.get("k") is None
            else:
                await writer.invalidate(layer="results", settle=True)
                fresh = await reader.results.get("k") is None
            stale += not fresh
        assert stale == 0
        assert settlement(writer).by_acks >= 100


async def test_plain_writes_do_not_settle_unless_asked(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="unasked") as cache:
        await cache.results.set("k", 1)
        await cache.results.delete("k")
        await cache.invalidate(layer="results")
        assert settlement(cache).by_acks == settlement(cache).by_bound == 0
        await cache.results.set("k", 1, settle=True)
        assert settlement(cache).by_acks == 1


async def test_settle_writes_sets_the_default_both_ways(redis_url: str) -> None:
    async def run() -> str:
        return "ok"

    async with (
        atc.ToolCache.from_url(redis_url, namespace="every", settle_writes=True) as every,
        atc.ToolCache.from_url(redis_url, namespace="never", settle_writes=False) as never,
    ):
        await every.results.set("k", 1)
        await every.results.delete("k")
        assert settlement(every).by_acks == 2
        await never.call_tool("srv", "set", {}, run, writes=True)
        assert settlement(never).by_acks == settlement(never).by_bound == 0


async def test_settling_in_process_returns_at_once() -> None:
    async with atc.ToolCache() as cache:
        await cache.results.set("k", 1, settle=True)
        assert await cache.bus.settle() is True


# -- across processes -----------------------------------------------------------------------

TRIALS = 1000


async def read_after_write(cache: atc.ToolCache, link: Link, url: str) -> dict[str, int]:
    """Each trial: cache the current answer, say so, wait for the write's flag, read at once."""
    plain = aredis.Redis.from_url(url)

    async def read() -> int:
        return int(await plain.get("truth") or 0)

    stale = 0
    try:
        for i in range(TRIALS):
            before = await cache.call_tool("srv", "get", {}, read)
            if before != i:
                raise AssertionError(f"trial {i} began at {before}")
            await plain.set("ready", i)
            while int(await plain.get("flag") or -1) != i:
                pass
            if await cache.call_tool("srv", "get", {}, read) != i + 1:
                stale += 1
    finally:
        await plain.aclose()
    return {"stale": stale, "l1_hits": cache.stats()["results"].l1_hits}


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_write_in_one_process_is_never_undone_by_another_processs_cache(
    redis_url: str,
) -> None:
    plain = aredis.Redis.from_url(redis_url)
    try:
        async with (
            atc.ToolCache.from_url(redis_url, namespace="xproc") as writer,
            run_workers(1, redis_url, read_after_write, redis_url, namespace="xproc") as [reader],
        ):
            for i in range(TRIALS):
                while int(await plain.get("ready") or -1) != i:
                    pass  # each GET is a round trip: the spin yields to the loop

                async def write(value: int = i + 1) -> str:
                    await plain.set("truth", value)
                    return "ok"

                await writer.call_tool("srv", "book", {"v": i + 1}, write, writes=True)
                await plain.set("flag", i)  # the write returned
            seen = await reader.result(within=120)
            assert seen["stale"] == 0
            assert seen["l1_hits"] >= TRIALS // 2  # the old answer sat in L1 most times
            assert settlement(writer).by_acks + settlement(writer).by_bound == TRIALS
    finally:
        await plain.aclose()


# -- a frozen worker ----------------------------------------------------------------------


async def idle(cache: atc.ToolCache, link: Link, arg: Any) -> None:
    """Stay subscribed until told to stop."""
    await link.recv(within=60)


async def test_a_frozen_worker_delays_a_write_by_the_bound_at_most(redis_url: str) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="frozen") as writer,
        run_workers(1, redis_url, idle, namespace="frozen") as [worker],
    ):
        await writer.invalidate(tags=["t"], settle=True)
        assert (settlement(writer).by_acks, settlement(writer).by_bound) == (1, 0)
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            await writer.invalidate(tags=["t"], settle=True)
            # Its subscriber still counts as a receiver but never acknowledges: the
            # write returned because max_staleness passed.
            assert (settlement(writer).by_acks, settlement(writer).by_bound) == (1, 1)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        worker.send("stop")
        await worker.result()
