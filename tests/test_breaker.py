"""The circuit breaker: opens on failures, refuses while open, probes, closes."""

from __future__ import annotations

import asyncio

import pytest

from aiotoolcache.breaker import BreakerState, CircuitBreaker
from aiotoolcache.errors import BackendError, BackendTimeout, CircuitOpen


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise OSError("connection refused")


async def slow() -> str:
    await asyncio.sleep(1)
    return "late"


async def test_opens_after_consecutive_failures_and_refuses_at_once() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=60)
    for _ in range(3):
        with pytest.raises(BackendError):
            await breaker.call(boom)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)
    assert breaker.refused == 1


async def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2)
    with pytest.raises(BackendError):
        await breaker.call(boom)
    assert await breaker.call(ok) == "ok"
    with pytest.raises(BackendError):
        await breaker.call(boom)
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_probe_closes_or_reopens() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown=0.05)
    with pytest.raises(BackendError):
        await breaker.call(boom)
    await asyncio.sleep(0.06)
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(BackendError):
        await breaker.call(boom)  # the probe fails: open again
    assert breaker.state is BreakerState.OPEN
    await asyncio.sleep(0.06)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED and breaker.closed == 1


async def test_only_one_probe_at_a_time() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown=0.01, budget=0.5)
    with pytest.raises(BackendError):
        await breaker.call(boom)
    await asyncio.sleep(0.02)

    async def probe() -> str:
        await asyncio.sleep(0.05)
        return "probed"

    first = asyncio.create_task(breaker.call(probe))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)
    assert await first == "probed"


async def test_budget_overrun_is_a_timeout_failure() -> None:
    breaker = CircuitBreaker(failure_threshold=1, budget=0.01)
    with pytest.raises(BackendTimeout):
        await breaker.call(slow)
    assert breaker.timeouts == 1 and breaker.state is BreakerState.OPEN


async def test_a_saturated_pool_queues_without_counting_as_failure() -> None:
    breaker = CircuitBreaker(failure_threshold=1, budget=0.5, concurrency=2, queue_wait=1.0)

    async def short() -> str:
        await asyncio.sleep(0.02)
        return "done"

    results = await asyncio.gather(*(breaker.call(short) for _ in range(20)))
    assert results == ["done"] * 20
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


async def test_cancellation_is_not_a_failure() -> None:
    breaker = CircuitBreaker(failure_threshold=1, budget=5)
    task = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0
