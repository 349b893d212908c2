"""Proof of hearing: until when a worker's L1 may be trusted, and the pings that prove it.

A live connection proves nothing by itself: a stalled one looks the same
until a timeout. So the subscriber proves that it hears. It sends a PING on
its own connection, noting the time ``t0`` just before sending; Redis
answers in order on one connection, so once the answer is read, every
message published before ``t0`` has been read and applied. The bus is
``hearing`` (L1 may be served) only until ``t0 + max_staleness`` of the last
answered ping. A message that arrives proves nothing of the kind: when Redis
sent it is unknown in this worker's clock. A busy event loop only makes the
proof older (``t0`` is taken before the send, the answer is read after the
messages before it), so it errs towards not trusting L1, never towards
serving what was invalidated.

Pings cost CPU, so they follow use. While the cache is in use (an L1 entry
looked up, a reader waiting for proof, or a read, load or write begun,
within the last second; or one still in flight) the subscriber pings every
``max_staleness / 3``, so trust never lapses; otherwise every
``health_interval / 2``, enough to find a dead connection. A reader that
finds trust lapsed, or work begun while the subscriber sleeps its idle
interval, has a ping sent at once from a short task (its answer wakes the
subscriber), not at the subscriber's next wake-up.

A ping unanswered for ``health_interval``, with nothing left to read, means
the connection has stalled: readers stop waiting for proof until an answer
comes. At twice that the subscriber gives the connection up.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["DEFAULT_MAX_STALENESS", "IN_USE_FOR", "MAX_PINGS", "Hearing", "Heard"]

# How long L1 stays trusted after the last proof that the subscriber hears (seconds):
# below the 100 ms the consistency guarantee promises, with room for a late ping.
DEFAULT_MAX_STALENESS = 0.08
# Pings in flight at most: a stalled connection is found by the oldest one anyway.
MAX_PINGS = 32
# The cache counts as in use (pings at the fast cadence) this long after its last use (s).
IN_USE_FOR = 1.0


class Heard(Protocol):
    """Heard is the bus state proof of hearing reads and writes (``RedisBus`` has it).

    Plain attributes, not calls: the L1 hit path reads ``deaf_after`` and
    stores ``used_at`` on every lookup.
    """

    proven_at: float
    deaf_after: float
    idle: bool
    used_at: float
    busy: Callable[[], bool] | None

    @property
    def connected(self) -> bool: ...


class Hearing:
    """Hearing keeps the pings of one bus's subscriber and what their answers prove.

    It sends nothing itself: the bus sends each ping this numbers (``sending``)
    and hands over the answers (``answered``). What the hot path reads it
    writes onto the bus as plain attributes: ``proven_at``, ``deaf_after`` and
    ``idle``; it reads the bus's ``used_at``, ``busy`` and ``connected``.
    """

    def __init__(self, bus: Heard, *, max_staleness: float, health_interval: float) -> None:
        self._bus = bus
        self._max_staleness = max_staleness
        self._health_interval = health_interval
        self._ping_every = max_staleness / 3  # while in use: trust never lapses
        # Otherwise: often enough to find a dead connection, as before the proof rule.
        self._idle_ping_every = max(self._ping_every, health_interval / 2)
        # Pings sent and not yet answered, oldest first: (number, time.monotonic() before send).
        self._pings: deque[tuple[int, float]] = deque()
        self._pinged = 0  # the number of the last ping sent
        self._last_ping = float("-inf")  # t0 of the last ping sent, whoever sent it
        # Set by the subscriber when, with nothing left to read, a ping has waited longer
        # than health_interval: reads stop waiting for proof. Cleared by the next answer.
        self._stalled = False
        self._closed = False  # the bus is closing: no proof will come
        # Readers waiting for proof, one future each, resolved at every proof or give-up.
        self._regaining: list[asyncio.Future[None]] = []
        self.wanted = float("-inf")  # when a ping was last asked for (a reader, note_use)
        bus.proven_at = float("-inf")  # t0 of the last answered ping
        bus.deaf_after = float("-inf")

    # -- the cadence -----------------------------------------------------------------
    def cadence(self, now: float) -> float:
        """The interval between pings from ``now`` on; notes on the bus whether it is ``idle``."""
        bus = self._bus
        bus.idle = not self._in_use(now)
        return self._idle_ping_every if bus.idle else self._ping_every

    def _in_use(self, now: float) -> bool:
        """True while proof must stay fresh: L1 used lately, or work in flight may fill it."""
        bus = self._bus
        return now - bus.used_at < IN_USE_FOR or (bus.busy is not None and bus.busy())

    def ping_due(self, now: float, every: float) -> bool:
        """True when the subscriber pings now: its cadence says so, or a ping was asked for."""
        return len(self._pings) < MAX_PINGS and (
            now - self._last_ping >= every or self.wanted > self._last_ping
        )

    def ping_wanted(self) -> bool:
        """True while a ping asked for (``note_use``) has not been sent, and one may be."""
        return self.wanted > self._last_ping and len(self._pings) < MAX_PINGS

    def until_wake(self, every: float) -> float:
        """Seconds the subscriber may wait for a reply: until the next ping is due, or the
        oldest ping in flight has waited long enough for a verdict."""
        # (With MAX_PINGS in flight no ping is due: only the verdict can come.)
        wake = self._last_ping + every if len(self._pings) < MAX_PINGS else float("inf")
        if self._pings:
            oldest = self._pings[0][1]
            verdict = 2 if self._stalled else 1
            wake = min(wake, oldest + verdict * self._health_interval)
        return max(0.001, wake - time.monotonic())

    # -- the pings and their answers -------------------------------------------------
    def sending(self) -> int:
        """Note a ping about to be sent and the time before sending; return its number.

        Numbers and times rise together whoever sends, so an answer proves its own
        ping's ``t0`` even if the pings reached Redis out of order (then the earlier
        ones are dropped unproven, which only errs towards not trusting L1).
        """
        t0 = time.monotonic()
        self._pinged += 1
        number = self._pinged
        self._pings.append((number, t0))
        self._last_ping = t0
        return number

    def answered(self, data: Any) -> None:
        """A ping was answered: it and every earlier one prove hearing up to their send time."""
        try:
            number = int(data)
        except (TypeError, ValueError):
            return  # not one of ours
        proven = None
        while self._pings and self._pings[0][0] <= number:
            proven = self._pings.popleft()[1]
        if proven is not None:
            self._stalled = False
            self._proven(proven)

    def waited(self, now: float) -> float:
        """How long the oldest ping in flight has waited for its answer (0 with none)."""
        return now - self._pings[0][1] if self._pings else 0.0

    def stall(self) -> None:
        """A ping went unanswered too long: readers stop waiting until an answer comes."""
        if not self._stalled:
            self._stalled = True
            self._wake_regaining()

    def _proven(self, t0: float) -> None:
        """Everything published before ``t0`` has been applied: trust L1 until t0 + bound."""
        bus = self._bus
        if t0 > bus.proven_at:
            bus.proven_at = t0
            bus.deaf_after = t0 + self._max_staleness
        self._wake_regaining()

    # -- readers ---------------------------------------------------------------------
    def note_use(self) -> None:
        """The cache is in use from now on: the fast cadence, and a ping wanted now."""
        bus = self._bus
        bus.idle = False
        self.wanted = bus.used_at = time.monotonic()

    def may_prove(self) -> bool:
        """False when no proof can come: disconnected, stalled or closing."""
        return self._bus.connected and not self._stalled and not self._closed

    async def proof(self, since: float) -> bool:
        """Wait until everything published before ``since`` has been applied (see Bus.proof)."""
        # No timer of its own: a busy event loop would make it expire while the answer
        # waits unread. The subscriber ends the wait: a proof, or its own verdict, reached
        # after reading what arrived, that the connection is stalled or gone.
        while self._bus.proven_at < since:
            if not self.may_prove():
                return False
            # One future per reader: a reader cancelled while it waits affects no other.
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._regaining.append(waiter)
            await waiter
        return True

    def _wake_regaining(self) -> None:
        """Let every reader waiting for proof look again (proven, stalled or disconnected)."""
        waiters, self._regaining = self._regaining, []
        for waiter in waiters:
            if not waiter.done():  # a reader cancelled meanwhile left its own future
                waiter.set_result(None)

    # -- the subscriber's connection -------------------------------------------------
    def subscribed(self, at: float) -> None:
        """Subscribed afresh (L1 flushed, generations reloaded): all before ``at`` is applied."""
        self._pings.clear()
        self._stalled = False
        self._proven(at)

    def lost(self) -> None:
        """The connection is gone: nothing is proven, and no ping in flight will be answered."""
        bus = self._bus
        bus.deaf_after = float("-inf")
        bus.proven_at = float("-inf")
        self._pings.clear()
        self._wake_regaining()

    def close(self) -> None:
        """The bus is closing: readers waiting for proof give up."""
        self._closed = True
        self._wake_regaining()
