"""LoopThread: coroutines run on a loop thread of their own, from sync code and other loops."""

from __future__ import annotations

import asyncio
import threading

import pytest

import aiotoolcache as atc
from aiotoolcache.integrations._loop_thread import LoopThread


async def where() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_call_runs_on_the_loop_thread_and_returns_the_result() -> None:
    thread = LoopThread("loop-under-test")
    try:
        assert thread.call(where) == "loop-under-test"
    finally:
        thread.close()


def test_exceptions_reach_the_caller() -> None:
    thread = LoopThread("loop-under-test")

    async def fail() -> None:
        raise KeyError("missing")

    try:
        with pytest.raises(KeyError, match="missing"):
            thread.call(fail)
    finally:
        thread.close()


def test_a_blocking_call_from_the_loop_thread_raises_instead_of_deadlocking() -> None:
    thread = LoopThread("loop-under-test")

    async def nested() -> str:
        return thread.call(where)  # would wait for itself forever

    try:
        with pytest.raises(atc.BlockingCallInEventLoop):
            thread.call(nested)
        assert thread.call(where) == "loop-under-test"  # the loop is still fine
    finally:
        thread.close()


async def test_run_awaits_from_another_loop_and_cancellation_reaches_the_work() -> None:
    thread = LoopThread("loop-under-test")
    started = threading.Event()
    cancelled = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        assert await thread.run(where) == "loop-under-test"
        task = asyncio.create_task(thread.run(forever))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 10)
    finally:
        await asyncio.to_thread(thread.close)


def test_close_runs_the_final_step_cancels_leftovers_and_joins() -> None:
    thread = LoopThread("loop-under-test")
    events: list[str] = []

    async def leftover() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(leftover())
        await asyncio.sleep(0)

    async def final() -> None:
        events.append("final")

    thread.call(spawn)
    thread.close(final)
    thread.close()  # idempotent
    assert events == ["final", "cancelled"]
    assert thread.closed
    assert "loop-under-test" not in {t.name for t in threading.enumerate()}
    with pytest.raises(atc.StoreClosed):
        thread.call(where)
