"""The circuit breaker: opens on failures, refuses while open, probes, closes."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from aiotoolcache.breaker import BreakerState, CircuitBreaker
from aiotoolcache.errors import BackendError, BackendTimeout, CircuitOpen
from tests.servers import RedisServer


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


# -- the budget measures Redis, not the event loop ---------------------------------------
class LoopHog:
    """LoopHog blocks the event loop in slices, as CPU-bound work between awaits does."""

    def __init__(self, slice_seconds: float = 0.05) -> None:
        self.slice_seconds = slice_seconds
        self.slices = 0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop:
            time.sleep(self.slice_seconds)  # noqa: ASYNC251 - nothing else runs on the loop meanwhile
            self.slices += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopHog:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop = True
        assert self._task is not None
        await self._task


async def test_a_lagging_loop_with_a_healthy_redis_never_opens_the_breaker(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    breaker = CircuitBreaker(failure_threshold=3, budget=0.1, cooldown=60)
    try:
        async with LoopHog(slice_seconds=0.05) as hog:
            await breaker.call(lambda: client.mset({f"k{i}": f"v{i}" for i in range(10)}))
            for _ in range(5):
                # Waves of concurrent GETs; the first ones also open the pool's
                # connections, a dozen round trips each, every one behind a slice.
                values = await asyncio.gather(
                    *(breaker.call(lambda i=i: client.get(f"k{i % 10}")) for i in range(20))
                )
                assert values == [f"v{i % 10}".encode() for i in range(20)]
        assert hog.slices >= 20  # the loop was blocked for far longer than the budget
    finally:
        await client.aclose()
    assert breaker.opened == 0 and breaker.timeouts == 0 and breaker.failures == 0
    assert breaker.lag_extended > 0
    assert breaker.state is BreakerState.CLOSED


async def test_lag_during_one_call_extends_only_that_call() -> None:
    breaker = CircuitBreaker(failure_threshold=1, budget=0.02)

    async def quick_reply() -> str:
        await asyncio.sleep(0.005)
        return "reply"

    async def block_loop() -> None:
        time.sleep(0.1)  # noqa: ASYNC251 - five budgets, while the reply is due

    blocker = asyncio.create_task(block_loop())
    assert await breaker.call(quick_reply) == "reply"
    await blocker
    assert breaker.lag_extended == 1 and breaker.failures == 0
    with pytest.raises(BackendTimeout):
        await breaker.call(slow)  # a responsive loop: the budget is the budget again
    assert breaker.state is BreakerState.OPEN


async def test_a_frozen_redis_fails_and_opens_the_breaker(own_redis: RedisServer) -> None:
    client = Redis.from_url(own_redis.url, socket_timeout=30)
    breaker = CircuitBreaker(failure_threshold=3, budget=0.05, cooldown=60)
    try:
        assert await breaker.call(client.ping)
        own_redis.pause()
        for _ in range(3):
            with pytest.raises(BackendTimeout):
                await breaker.call(lambda: client.get("k"))
        assert breaker.state is BreakerState.OPEN and breaker.opened == 1
        with pytest.raises(CircuitOpen):
            await breaker.call(lambda: client.get("k"))
    finally:
        own_redis.resume()
        await client.aclose()
    assert breaker.timeouts == 3


async def test_a_frozen_redis_fails_even_while_the_loop_lags(own_redis: RedisServer) -> None:
    client = Redis.from_url(own_redis.url, socket_timeout=30)
    breaker = CircuitBreaker(failure_threshold=3, budget=0.05, cooldown=60, max_lag=0.5)
    try:
        assert await breaker.call(client.ping)
        own_redis.pause()
        async with LoopHog():
            for _ in range(3):
                with pytest.raises(BackendTimeout):
                    # The bound is budget + max_lag + a few slices; 10 s only keeps
                    # a hang from passing unnoticed.
                    await asyncio.wait_for(breaker.call(lambda: client.get("k")), 10)
        assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    finally:
        own_redis.resume()
        await client.aclose()


async def test_a_caller_cancelled_during_a_call_is_cancelled_not_timed_out() -> None:
    breaker = CircuitBreaker(failure_threshold=1, budget=5.0)
    task = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.timeouts == 0 and breaker.state is BreakerState.CLOSED


async def test_an_expired_call_leaves_its_task_free_to_go_on() -> None:
    breaker = CircuitBreaker(failure_threshold=5, budget=0.02)
    with pytest.raises(BackendTimeout):
        await breaker.call(slow)
    # The expiry was consumed as a TimeoutError: no cancellation is left pending.
    await asyncio.sleep(0.01)
    assert await breaker.call(ok) == "ok"
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    assert breaker.timeouts == 1
