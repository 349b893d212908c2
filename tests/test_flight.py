"""In-process single-flight: one execution per key among concurrent callers, Go's semantics."""

from __future__ import annotations

import asyncio

import pytest

from aiotoolcache.flight import SingleFlight


class Gate:
    """Gate is work that blocks until opened, counting runs and noticing cancellation."""

    def __init__(self, result: object = "value") -> None:
        self.result = result
        self.runs = 0
        self.cancelled = 0
        self.started = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> object:
        self.runs += 1
        self.started.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.result


async def test_do_dup_suppress_runs_work_once_for_concurrent_callers() -> None:
    flight: SingleFlight[object] = SingleFlight()
    work = Gate(result={"v": 1})
    callers = [asyncio.create_task(flight.do("k", work)) for _ in range(100)]
    await work.started.wait()
    work.opened.set()
    results = await asyncio.gather(*callers)
    assert work.runs == 1
    assert all(value is results[0][0] for value, _ in results)
    assert sorted(shared for _, shared in results).count(False) == 1
    assert len(flight) == 0


async def test_do_different_keys_run_separately() -> None:
    flight: SingleFlight[object] = SingleFlight()
    a, b = Gate("a"), Gate("b")
    tasks = [asyncio.create_task(flight.do("a", a)), asyncio.create_task(flight.do("b", b))]
    await asyncio.gather(a.started.wait(), b.started.wait())
    a.opened.set()
    b.opened.set()
    assert [value for value, _ in await asyncio.gather(*tasks)] == ["a", "b"]
    assert (a.runs, b.runs) == (1, 1)


async def test_do_error_reaches_every_caller() -> None:
    flight: SingleFlight[object] = SingleFlight()
    error = RuntimeError("backend exploded")
    started = asyncio.Event()

    async def fail() -> object:
        started.set()
        await asyncio.sleep(0.01)
        raise error

    callers = [asyncio.create_task(flight.do("k", fail)) for _ in range(10)]
    await started.wait()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(outcome is error for outcome in outcomes)
    assert len(flight) == 0


async def test_do_error_is_not_remembered() -> None:
    flight: SingleFlight[object] = SingleFlight()
    calls = 0

    async def flaky() -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("first call fails")
        return "second"

    with pytest.raises(ValueError):
        await flight.do("k", flaky)
    assert await flight.do("k", flaky) == ("second", False)


async def test_cancelled_caller_does_not_disturb_the_others() -> None:
    flight: SingleFlight[object] = SingleFlight()
    work = Gate()
    callers = [asyncio.create_task(flight.do("k", work)) for _ in range(3)]
    await work.started.wait()
    callers[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    assert work.cancelled == 0
    work.opened.set()
    assert [value for value, _ in await asyncio.gather(*callers[1:])] == ["value", "value"]
    assert work.runs == 1


async def test_cancelling_every_caller_cancels_the_work() -> None:
    flight: SingleFlight[object] = SingleFlight()
    work = Gate()
    callers = [asyncio.create_task(flight.do("k", work)) for _ in range(3)]
    await work.started.wait()
    for caller in callers:
        caller.cancel()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    await asyncio.sleep(0)
    assert work.cancelled == 1
    assert not flight.in_flight("k")


async def test_caller_after_everyone_gave_up_starts_afresh() -> None:
    """A caller arriving while an abandoned call is still being torn down is not cancelled."""
    flight: SingleFlight[object] = SingleFlight()
    abandoned = Gate("old")
    first = asyncio.create_task(flight.do("k", abandoned))
    await abandoned.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    fresh = Gate("new")
    fresh.opened.set()
    assert await flight.do("k", fresh) == ("new", False)
    assert fresh.runs == 1


async def test_caller_cancelled_after_the_work_finished_still_lets_others_have_it() -> None:
    flight: SingleFlight[object] = SingleFlight()
    work = Gate()
    waiter = asyncio.create_task(flight.do("k", work))
    other = asyncio.create_task(flight.do("k", work))
    await work.started.wait()
    work.opened.set()
    await asyncio.sleep(0)  # the work completes; both callers are about to resume
    waiter.cancel()
    assert (await other)[0] == "value"
    assert work.cancelled == 0


async def test_forget_lets_a_later_call_start_a_new_execution() -> None:
    flight: SingleFlight[object] = SingleFlight()
    old, new = Gate("old"), Gate("new")
    first = asyncio.create_task(flight.do("k", old))
    await old.started.wait()
    flight.forget("k")
    second = asyncio.create_task(flight.do("k", new))
    await new.started.wait()
    assert (old.runs, new.runs) == (1, 1)
    old.opened.set()
    assert await first == ("old", False)
    await asyncio.sleep(0)
    # The old call's completion must not remove the entry that now belongs to the new call.
    assert flight.in_flight("k")
    joined = asyncio.create_task(flight.do("k", Gate("never runs")))
    new.opened.set()
    assert await second == ("new", False)
    assert await joined == ("new", True)
    assert not flight.in_flight("k")


async def test_forget_all_keeps_callers_already_waiting() -> None:
    flight: SingleFlight[object] = SingleFlight()
    work = Gate()
    waiting = asyncio.create_task(flight.do("k", work))
    await work.started.wait()
    flight.forget_all()
    assert len(flight) == 0
    work.opened.set()
    assert await waiting == ("value", False)
    assert work.cancelled == 0
