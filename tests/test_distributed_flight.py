"""Fleet-wide single-flight: one load per cold key across worker processes sharing one Redis.

Workers are real OS processes (tests/workers.py); loads are counted with a
Redis INCR made by the loader itself, so the count covers every process.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

import aiotoolcache as atc
from aiotoolcache.lease import is_marker
from tests.servers import RedisServer
from tests.workers import Link, eventually, run_workers

# Each assertion about time is a loose bound that only a broken mechanism can miss.
LEASE_MS = 1000


async def _start_together(link: Link) -> None:
    """Wait for the test's go: a wall-clock instant every worker starts at."""
    start_at = await link.recv()
    await asyncio.sleep(max(0.0, start_at - time.time()))


def _layer_stats(cache: atc.ToolCache) -> dict[str, Any]:
    stats = cache.stats()["results"]
    return {
        "loads": stats.loads,
        "remote_coalesced": stats.remote_coalesced,
        "coalesced": stats.coalesced,
        "lease_takeovers": stats.lease_takeovers,
    }


async def stampede(cache: atc.ToolCache, link: Link, arg: dict[str, Any]) -> dict[str, Any]:
    """Many concurrent readers of one cold key, in one worker."""
    plain = Redis.from_url(arg["url"])

    async def load() -> dict[str, Any]:
        await plain.incr(arg["counter"])
        await asyncio.sleep(arg["delay"])
        return {"loaded_by": os.getpid(), "payload": "x" * 100}

    try:
        await _start_together(link)
        values = await asyncio.gather(
            *(cache.results.get_or_load("cold", load) for _ in range(arg["callers"]))
        )
    finally:
        await plain.aclose()
    return {
        "values": Counter(repr(sorted(value.items())) for value in values),
        **_layer_stats(cache),
    }


async def takeover(cache: atc.ToolCache, link: Link, arg: dict[str, Any]) -> dict[str, Any]:
    """Concurrent readers of one cold key; the first load in the fleet never finishes."""
    plain = Redis.from_url(arg["url"])

    async def load() -> dict[str, Any]:
        attempt = await plain.incr(arg["counter"])
        if attempt == 1:
            await plain.set(arg["holder"], os.getpid())
            await asyncio.sleep(60)  # the test SIGKILLs this process meanwhile
        await asyncio.sleep(0.1)
        return {"attempt": attempt}

    try:
        await _start_together(link)
        values = await asyncio.gather(
            *(cache.results.get_or_load("doomed", load) for _ in range(arg["callers"]))
        )
    finally:
        await plain.aclose()
    return {
        "done_at": time.time(),
        "values": Counter(value["attempt"] for value in values),
        **_layer_stats(cache),
    }


async def remote_waiter(cache: atc.ToolCache, link: Link, arg: dict[str, Any]) -> dict[str, Any]:
    """One reader of a key whose lease another worker holds; it must not load."""

    async def must_not_load() -> str:
        raise AssertionError("the waiter loaded although the leaseholder filled the key")

    await link.recv()
    link.send("waiting")
    value = await cache.results.get_or_load("shared", must_not_load)
    return {"woken_at": time.time(), "value": value, **_layer_stats(cache)}


@pytest.mark.slow
async def test_one_load_for_four_processes_times_250_concurrent_callers(
    redis_url: str, redis_server: RedisServer
) -> None:
    arg = {"url": redis_url, "counter": "loads:cold", "callers": 250, "delay": 0.2}
    async with asyncio.timeout(45), run_workers(4, redis_url, stampede, arg) as workers:
        start_at = time.time() + 0.3
        for worker in workers:
            worker.send(start_at)
        results = await asyncio.gather(*(worker.result() for worker in workers))

    with redis_server.client() as plain:
        assert int(plain.get("loads:cold") or 0) == 1
    values: Counter[str] = Counter()
    for result in results:
        values.update(result["values"])
    assert len(values) == 1, values  # every caller in every process got the same value
    assert sum(values.values()) == 4 * 250
    assert sum(result["loads"] for result in results) == 1
    # Three processes learned the value from the leaseholder's fill, not from a load.
    assert sum(result["remote_coalesced"] for result in results) >= 3


@pytest.mark.slow
async def test_leaseholder_killed_mid_load_another_process_takes_over(
    redis_url: str, redis_server: RedisServer
) -> None:
    arg = {"url": redis_url, "counter": "loads:doomed", "holder": "holder", "callers": 50}
    async with run_workers(4, redis_url, takeover, arg, lease_ms=LEASE_MS) as workers:
        async with asyncio.timeout(30):  # no caller may hang
            start_at = time.time() + 0.3
            for worker in workers:
                worker.send(start_at)
            with redis_server.client() as plain:
                await eventually(lambda: plain.exists("holder"), within=10)
                holder = plain.get("holder")
            assert holder is not None
            [victim] = [worker for worker in workers if worker.pid == int(holder)]
            victim.kill()
            killed_at = time.time()
            survivors = [worker for worker in workers if worker is not victim]
            results = await asyncio.gather(*(worker.result() for worker in survivors))

    with redis_server.client() as plain:
        assert int(plain.get("loads:doomed") or 0) == 2  # the killed load, then exactly one more
    print(f"takeover done {max(r['done_at'] for r in results) - killed_at:.3f} s after the kill")
    # One takeover and two loads in all: the survivors took over when the lease expired,
    # not each on its own after giving up the wait (lease_wait).
    for result in results:
        assert result["values"] == {2: 50}
    assert sum(result["lease_takeovers"] for result in results) == 1


@pytest.mark.slow
async def test_remote_waiter_is_woken_by_the_fill_message_not_by_lease_expiry(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The lease lasts 30 s; a waiter that polled or waited for expiry would be seconds late."""
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow_load() -> str:
        started.set()
        await gate.wait()
        return "filled by the leaseholder"

    async with (
        asyncio.timeout(30),
        atc.ToolCache.from_url(redis_url, lease_ms=30_000) as holder,
        run_workers(1, redis_url, remote_waiter) as [waiter],
    ):
        loading = asyncio.create_task(holder.results.get_or_load("shared", slow_load))
        await started.wait()
        waiter.send("go")
        assert await waiter.recv() == "waiting"
        value_key = holder.results.ref("shared").value_key
        with redis_server.client() as plain:  # the waiter marked the holder's marker
            await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"), within=20)
        released_at = time.time()
        gate.set()
        assert await loading == "filled by the leaseholder"
        filled_at = time.time()
        result = await waiter.result()

    assert result["value"] == "filled by the leaseholder"
    assert result["loads"] == 0 and result["remote_coalesced"] == 1
    wake_latency = result["woken_at"] - filled_at
    print(f"remote wake latency after the fill: {wake_latency * 1000:.1f} ms")
    assert result["woken_at"] - released_at < 2.0


async def test_cancelled_waiters_do_not_disturb_the_others_across_workers(
    redis_url: str, redis_server: RedisServer
) -> None:
    # A namespace of its own: no cache left over from another test on the shared server
    # can move this one's generations (its keys) while the callers gather.
    namespace = f"cancel-{uuid.uuid4().hex[:8]}"
    async with (
        atc.ToolCache.from_url(redis_url, namespace=namespace) as cache,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as other_worker,
    ):
        await _cancelled_waiters_across_workers(cache, other_worker, redis_server)


async def _cancelled_waiters_across_workers(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_server: RedisServer
) -> None:
    gate = asyncio.Event()
    loads = 0

    async def slow_load() -> str:
        nonlocal loads
        loads += 1
        await gate.wait()
        return "value"

    async def other_load() -> str:
        raise AssertionError("the second worker loaded although the first holds the lease")

    async with asyncio.timeout(10):
        here = [asyncio.create_task(cache.results.get_or_load("k", slow_load)) for _ in range(3)]
        await eventually(lambda: loads == 1)
        value_key = cache.results.ref("k").value_key
        # All three callers share the one load before one of them is cancelled.
        calls = cache.flight._calls  # type: ignore[attr-defined]
        await eventually(lambda: value_key in calls and calls[value_key].waiters == 3)
        there = [
            asyncio.create_task(other_worker.results.get_or_load("k", other_load)) for _ in range(3)
        ]
        with redis_server.client() as plain:  # the second worker waits for the fill
            await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"))
        here[0].cancel()
        there[0].cancel()
        await asyncio.sleep(0.05)
        gate.set()
        outcomes = await asyncio.gather(*here, *there, return_exceptions=True)

    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[3], asyncio.CancelledError)
    assert outcomes[1:3] + outcomes[4:] == ["value"] * 4
    assert loads == 1


async def test_cancelling_every_waiter_cancels_the_load_and_frees_the_lease(
    redis_url: str, redis_server: RedisServer
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def endless_load() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    # A lease of a minute: the key can only clear by the release, never by expiry.
    async with (
        asyncio.timeout(30),
        atc.ToolCache.from_url(redis_url, namespace="t", lease_ms=60_000) as cache,
    ):
        value_key = cache.results.ref("k").value_key
        callers = [
            asyncio.create_task(cache.results.get_or_load("k", endless_load)) for _ in range(3)
        ]
        await started.wait()
        with redis_server.client() as plain:
            assert is_marker(plain.get(value_key) or b"")  # the lease, held in the value key
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await cancelled.wait()
        with redis_server.client() as plain:
            await eventually(lambda: not plain.exists(value_key), within=20)


async def test_released_lease_wakes_a_remote_waiter_to_take_over(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The lease lasts a minute; the waiter takes over as soon as it is released."""
    started = asyncio.Event()

    async def endless_load() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    async def takeover_load() -> str:
        return "loaded by the second worker"

    options: dict[str, Any] = {"namespace": "t", "lease_ms": 60_000}
    async with (
        asyncio.timeout(30),
        atc.ToolCache.from_url(redis_url, **options) as cache,
        atc.ToolCache.from_url(redis_url, **options) as other_worker,
    ):
        caller = asyncio.create_task(cache.results.get_or_load("k", endless_load))
        await started.wait()
        waiter = asyncio.create_task(other_worker.results.get_or_load("k", takeover_load))
        value_key = cache.results.ref("k").value_key
        with redis_server.client() as plain:  # the waiter marked the holder's marker
            await eventually(lambda: (plain.get(value_key) or b"").endswith(b"+"))
        caller.cancel()
        assert await waiter == "loaded by the second worker"
        assert other_worker.stats()["results"].lease_takeovers == 1
