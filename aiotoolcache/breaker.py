"""A circuit breaker with a time budget, guarding every call to the shared tier.

closed ──N consecutive failures──▶ open ──cool-down──▶ half-open
  ▲                                  ▲                    │
  └─────────── probe succeeds ───────┴── probe fails ─────┘

While open, calls are refused at once (``CircuitOpen``) so a dead or frozen
Redis costs nothing; after the cool-down one probe call is let through.

A call's budget measures the backend, not the event loop: time the loop
spent running other work during the call extends the deadline (see
``aiotoolcache.budget``), so a saturated CPU with a healthy Redis never
opens the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from aiotoolcache.budget import LoopLag
from aiotoolcache.errors import BackendError, BackendTimeout, CircuitOpen

__all__ = ["BreakerState", "BreakerStats", "CircuitBreaker"]

T = TypeVar("T")
log = logging.getLogger("aiotoolcache.breaker")


class BreakerState(Enum):
    """BreakerState is where a circuit breaker is: closed (calls pass), open, or half-open."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """BreakerStats is a snapshot of the breaker's state and history."""

    state: str
    consecutive_failures: int
    opened: int
    closed: int
    refused: int
    failures: int
    timeouts: int
    lag_extended: int = 0


class CircuitBreaker:
    """CircuitBreaker runs backend calls within ``budget`` seconds and stops calling a sick backend.

    Every failure is raised as a ``BackendError`` subclass; callers decide
    whether it becomes a miss, a dropped write or (strict mode) an error.
    The budget counts only time the event loop was responsive, extended by
    at most ``max_lag`` seconds of loop lag per call.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown: float = 2.0,
        budget: float = 0.25,
        translate: tuple[type[BaseException], ...] = (OSError,),
        concurrency: int | None = None,
        queue_wait: float = 1.0,
        max_lag: float = 2.0,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.budget = budget
        self._translate = translate
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False  # a half-open probe is in flight
        # Calls beyond the pool's size queue here, before their budget starts: a
        # burst that saturates the local pool says nothing about Redis's health.
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self.queue_wait = queue_wait
        self.max_lag = max_lag
        self._lag = LoopLag()
        self.saturated = 0
        self.opened = self.closed = self.refused = self.failures = self.timeouts = 0
        self.lag_extended = 0  # calls whose deadline moved because the loop lagged

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker reads as half-open once its cool-down is over."""
        if self._state is BreakerState.OPEN and time.monotonic() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def failing(self) -> bool:
        """True when the last backend call failed or the breaker is not closed."""
        return self._consecutive > 0 or self._state is not BreakerState.CLOSED

    def allows(self) -> bool:
        """True when a call would be let through now."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    async def call(self, operation: Callable[[], Awaitable[T]], budget: float | None = None) -> T:
        """Run ``operation()`` within the budget; raise BackendError on any backend trouble."""
        state = self.state
        probe = False
        if state is not BreakerState.CLOSED:
            if state is BreakerState.OPEN or self._probing:
                self.refused += 1
                raise CircuitOpen("circuit breaker is open")
            self._probing = probe = True
        try:
            if self._slots is not None and self._slots.locked():
                try:
                    async with asyncio.timeout(self.queue_wait):
                        await self._slots.acquire()
                except TimeoutError:
                    self.saturated += 1
                    raise BackendTimeout("no free backend connection in time") from None
                if self._state is BreakerState.OPEN and not probe:
                    # Opened while this call queued: do not pile onto a sick backend.
                    self._slots.release()
                    self.refused += 1
                    raise CircuitOpen("circuit breaker is open")
            elif self._slots is not None:
                # A free slot: taken at once, with no timer (the common case).
                await self._slots.acquire()
            # Timed by the loop-lag heartbeat: no timer or timeout context of its own.
            call = self._lag.track(self.budget if budget is None else budget, self.max_lag)
            try:
                result = await operation()
            except asyncio.CancelledError:
                # Our own expiry, unless the caller was cancelled too (then it wins).
                if call.expired and call.task.uncancel() == 0:
                    raise TimeoutError from None
                raise
            finally:
                self._lag.untrack(call)
                if call.extended:
                    self.lag_extended += 1
                if self._slots is not None:
                    self._slots.release()
        except TimeoutError:
            self.timeouts += 1
            self._failure()
            raise BackendTimeout("backend call exceeded its time budget") from None
        except self._translate as exc:
            self._failure()
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            # Cancellation and programming errors say nothing about backend health.
            raise
        finally:
            if probe:
                self._probing = False
        self._success()
        return result

    def _success(self) -> None:
        self._consecutive = 0
        if self._state is not BreakerState.CLOSED:
            self._state = BreakerState.CLOSED
            self.closed += 1
            log.warning("circuit breaker closed: backend calls succeed again")

    def _failure(self) -> None:
        self.failures += 1
        self._consecutive += 1
        reopen = self._state is not BreakerState.CLOSED
        if reopen or self._consecutive >= self.failure_threshold:
            if self._state is BreakerState.CLOSED:
                log.warning(
                    "circuit breaker opened after %d consecutive backend failures",
                    self._consecutive,
                )
                self.opened += 1
            self._state = BreakerState.OPEN
            self._opened_at = time.monotonic()

    def stats(self) -> BreakerStats:
        """Return a snapshot of the state and of every transition and failure counted."""
        return BreakerStats(
            state=self.state.value,
            consecutive_failures=self._consecutive,
            opened=self.opened,
            closed=self.closed,
            refused=self.refused,
            failures=self.failures,
            timeouts=self.timeouts,
            lag_extended=self.lag_extended,
        )
