"""Time budgets that measure the backend, not the event loop.

A budget of 0.25 s means "Redis answers within 0.25 s", but a plain
``asyncio.timeout`` also counts the time the event loop spends running
other tasks: with the CPU saturated, a reply that arrived in 1 ms sits in
the socket while the loop is busy, the timeout fires, and a healthy Redis
looks dead. Two measures separate the two:

* ``LoopLag`` keeps a heartbeat on the loop while any budgeted call is in
  flight, and adds up how late each beat runs: the time the loop kept a
  ready callback waiting. A call's deadline moves later by the lag measured
  during the call (at most ``max_lag``).
* When the (moved) deadline passes, the call is given a few more loop
  iterations before it is abandoned: a reply that reached the socket by
  then is read and handed to the caller first, however long each iteration
  took.

So a call fails after about ``budget`` seconds of a responsive loop, plus
the loop's lag, and never later than ``budget + max_lag`` plus those few
iterations: a frozen Redis still fails every call and opens the breaker.
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadline", "LoopLag"]

# Loop iterations a call gets after its deadline: one to read a reply that
# reached the socket, one to resume the waiting task, one spare.
_GRACE_ITERATIONS = 3
# A loop that runs a ready callback within this is responsive: a reply is read
# at once. Each slower loop iteration counts as lag, less this much, so every
# iteration still spends a little of a call's budget.
_RESPONSIVE = 0.001


class LoopLag:
    """LoopLag measures how late the event loop runs its callbacks, while anyone measures.

    ``lag(now)`` never decreases; the lag between two instants is the
    difference of two readings. While the loop is idle the heartbeat runs
    every ``period``; once a beat runs late it runs on every loop iteration
    until one is on time again, so the length of each busy iteration counts
    (less 1 ms, the time a responsive loop may take). Only the start of a
    busy spell, up to one ``period``, can be missed: the measure errs low
    (toward calling a backend slow), never high.
    """

    def __init__(self, period: float = 0.005, linger: float = 0.05) -> None:
        self.period = period
        self.linger = linger
        self._idle_since = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0  # budgeted calls in flight on _loop
        self._handle: asyncio.Handle | None = None
        self._due = 0.0  # when the pending beat should run
        self._total = 0.0  # lateness of every beat that has run

    def acquire(self, loop: asyncio.AbstractEventLoop) -> float:
        """Start measuring on ``loop`` (until the matching release) and return the lag so far."""
        if self._loop is not loop:
            # First use, or a new event loop (tests, asyncio.run twice): start afresh.
            if self._handle is not None:
                self._handle.cancel()
            self._loop, self._users, self._handle = loop, 0, None
        self._users += 1
        now = loop.time()
        if self._handle is None:
            self._due = now + self.period
            self._handle = loop.call_at(self._due, self._beat)
        return self.lag(now)

    def release(self) -> None:
        """Stop measuring for one call; the heartbeat stops soon after the last one.

        It keeps beating for ``linger`` seconds after the last release: calls in
        quick succession (the common case) reuse it instead of re-arming it.
        """
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            if self._loop is not None:
                self._idle_since = self._loop.time()

    def lag(self, now: float) -> float:
        """Seconds the loop ran late so far, including a beat that is overdue right now."""
        overdue = now - self._due - _RESPONSIVE if self._handle is not None else 0.0
        return self._total + max(0.0, overdue)

    def _beat(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if self._users == 0 and now - self._idle_since >= self.linger:
            self._handle = None  # nobody measures any more
            return
        late = now - self._due
        if late > _RESPONSIVE:
            self._total += late - _RESPONSIVE
            # The loop is busy: beat on every iteration, so the whole of each
            # long iteration is measured, not only the part after a due time.
            self._due = now
            self._handle = self._loop.call_soon(self._beat)
        else:
            self._due = now + self.period
            self._handle = self._loop.call_at(self._due, self._beat)


class Deadline:
    """Deadline expires ``timeout`` once a call used its budget of a responsive loop.

    It is armed on an ``asyncio.timeout(None)`` that the call runs under, so
    expiry cancels the call and raises ``TimeoutError`` as usual.
    """

    __slots__ = (
        "_budget",
        "_handle",
        "_hops",
        "_lag0",
        "_loop",
        "_max_lag",
        "_meter",
        "_start",
        "_timeout",
        "extended",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: asyncio.Timeout,
        budget: float,
        meter: LoopLag,
        max_lag: float,
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._budget = budget
        self._meter = meter
        self._max_lag = max_lag
        self._start = loop.time()
        self._lag0 = meter.acquire(loop)
        self._hops = _GRACE_ITERATIONS
        self.extended = False  # the deadline moved for loop lag at least once
        self._handle: asyncio.Handle | None = loop.call_at(self._start + budget, self._check)

    def close(self) -> None:
        """Disarm (the call ended); every Deadline must be closed once."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._meter.release()

    def _check(self) -> None:
        now = self._loop.time()
        lag = min(self._meter.lag(now) - self._lag0, self._max_lag)
        due = self._start + self._budget + lag
        if now < due:
            self.extended = True
            self._handle = self._loop.call_at(due, self._check)
            return
        self._handle = self._loop.call_soon(self._hop)

    def _hop(self) -> None:
        # Each hop is one loop iteration: its select() reads any reply that
        # reached the socket, and the task it wakes runs before the next hop.
        self._hops -= 1
        if self._hops > 1:
            self._handle = self._loop.call_soon(self._hop)
        else:
            self._handle = None
            self._timeout.reschedule(self._loop.time())  # expires on the next iteration
