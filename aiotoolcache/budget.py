"""Time budgets that measure the backend, not the event loop.

A budget of 0.25 s means "Redis answers within 0.25 s", but a plain
``asyncio.timeout`` also counts the time the event loop spends running
other tasks: with the CPU saturated, a reply that arrived in 1 ms sits in
the socket while the loop is busy, the timeout fires, and a healthy Redis
looks dead. Two measures separate the two:

* ``LoopLag`` keeps a heartbeat on the loop while any budgeted call is in
  flight, and adds up how late each beat runs: the time the loop kept a
  ready callback waiting. A call's deadline moves later by the lag measured
  during the call (at most its ``max_lag``).
* When the (moved) deadline passes, the call is given a few more loop
  iterations before it is abandoned: a reply that reached the socket by
  then is read and handed to the caller first, however long each iteration
  took.

So a call fails after about ``budget`` seconds of a responsive loop, plus
the loop's lag, and never later than ``budget + max_lag`` plus those few
iterations: a frozen Redis still fails every call and opens the breaker.

The same heartbeat checks every budgeted call's deadline, so a call costs
no timer, timeout context or task of its own: on the hot path a budget is
two set operations.
"""

from __future__ import annotations

import asyncio

__all__ = ["Budgeted", "LoopLag"]

# Loop iterations a call gets after its deadline: one to read a reply that
# reached the socket, one to resume the waiting task, one spare.
_GRACE_ITERATIONS = 3
# A loop that runs a ready callback within this is responsive: a reply is read
# at once. Each slower loop iteration counts as lag, less this much, so every
# iteration still spends a little of a call's budget.
_RESPONSIVE = 0.001


class Budgeted:
    """Budgeted is one call in flight under a time budget, run by ``task``.

    Once its deadline and grace have passed, the heartbeat sets ``expired``
    and cancels the task: the caller turns that cancellation into a
    ``TimeoutError``.
    """

    __slots__ = ("budget", "expired", "extended", "grace", "lag0", "max_lag", "start", "task")

    def __init__(
        self, task: asyncio.Task[object], start: float, budget: float, lag0: float, max_lag: float
    ) -> None:
        self.task = task
        self.start = start
        self.budget = budget
        self.lag0 = lag0  # the loop's lag when the call started
        self.max_lag = max_lag
        self.grace = -1  # loop iterations left after the deadline; -1: not due yet
        self.expired = False
        self.extended = False  # the deadline moved for loop lag at least once


class LoopLag:
    """LoopLag measures how late the event loop runs its callbacks, and times budgeted calls.

    ``lag(now)`` never decreases; the lag between two instants is the
    difference of two readings. While calls are tracked the heartbeat runs
    every ``period``; once a beat runs late it runs on every loop iteration
    until one is on time again, so the length of each busy iteration counts
    (less 1 ms, the time a responsive loop may take). Only the start of a
    busy spell, up to one ``period``, can be missed: the measure errs low
    (toward calling a backend slow), never high. Each beat also expires the
    tracked calls whose deadline (and grace) has passed.
    """

    def __init__(self, period: float = 0.005, linger: float = 0.05) -> None:
        self.period = period
        self.linger = linger
        self._idle_since = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: set[Budgeted] = set()  # budgeted calls in flight on _loop
        self._handle: asyncio.Handle | None = None
        self._due = 0.0  # when the pending beat should run
        self._total = 0.0  # lateness of every beat that has run

    def track(self, budget: float, max_lag: float) -> Budgeted:
        """Time the current task's call: it expires after ``budget`` s of a responsive loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or a new event loop (tests, asyncio.run twice): start afresh.
            if self._handle is not None:
                self._handle.cancel()
            self._loop, self._handle = loop, None
            self._calls = set()
        now = loop.time()
        if self._handle is None:
            self._due = now + self.period
            self._handle = loop.call_at(self._due, self._beat)
        task = asyncio.current_task(loop)
        assert task is not None, "a budgeted call runs in a task"
        call = Budgeted(task, now, budget, self.lag(now), max_lag)
        self._calls.add(call)
        return call

    def untrack(self, call: Budgeted) -> None:
        """The call ended; the heartbeat stops ``linger`` s after the last one.

        Calls in quick succession (the common case) reuse the heartbeat
        instead of re-arming it.
        """
        self._calls.discard(call)
        if not self._calls and self._loop is not None:
            self._idle_since = self._loop.time()

    def lag(self, now: float) -> float:
        """Seconds the loop ran late so far, including a beat that is overdue right now."""
        overdue = now - self._due - _RESPONSIVE if self._handle is not None else 0.0
        return self._total + max(0.0, overdue)

    def _beat(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if not self._calls and now - self._idle_since >= self.linger:
            self._handle = None  # nobody measures any more
            return
        late = now - self._due
        busy = late > _RESPONSIVE
        if busy:
            self._total += late - _RESPONSIVE
        in_grace = self._expire(now) if self._calls else False
        if busy or in_grace:
            # Busy: beat on every iteration, so the whole of each long iteration is
            # measured. In grace: each beat is one more iteration for a late reply.
            self._due = now
            self._handle = loop.call_soon(self._beat)
        else:
            self._due = now + self.period
            self._handle = loop.call_at(self._due, self._beat)

    def _expire(self, now: float) -> bool:
        """Expire the calls past their deadline and grace; True while any is in grace."""
        in_grace = False
        for call in list(self._calls):
            if call.grace < 0:
                if now < call.start + call.budget:
                    continue
                due = call.start + call.budget + min(self._total - call.lag0, call.max_lag)
                if now < due:
                    call.extended = True
                    continue
                call.grace = _GRACE_ITERATIONS
            call.grace -= 1
            if call.grace > 0:
                in_grace = True
                continue
            # Each grace beat was one loop iteration: its select() read any reply
            # that reached the socket, and the task it woke ran before this beat.
            self._calls.discard(call)
            call.expired = True
            call.task.cancel()
        return in_grace
