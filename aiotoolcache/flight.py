"""In-process single-flight: concurrent calls for one key share one execution.

Ported from Go's ``singleflight`` with asyncio semantics: the work runs in
its own task that callers await through ``asyncio.shield``, so a cancelled
caller never cancels the others; when every caller has gone, the work is
cancelled. The result or exception reaches every caller.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    """One execution in flight, and how many callers still wait for it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0  # changed only by SingleFlight.do, on the event loop


class SingleFlight(Generic[T]):
    """SingleFlight runs ``work`` once per key among concurrent ``do`` calls.

    A key's entry is removed when its task finishes, and only if the entry
    still belongs to that task (a later call may have replaced it).
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def in_flight(self, key: Hashable) -> bool:
        return key in self._calls

    async def do(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(result, shared)``; ``shared`` is True for callers that joined a call."""
        call = self._calls.get(key)
        shared = call is not None
        if call is None:
            call = _Call(asyncio.ensure_future(work()))
            self._calls[key] = call
            call.task.add_done_callback(functools.partial(self._forget, key, call))
        call.waiters += 1
        try:
            return await asyncio.shield(call.task), shared
        except asyncio.CancelledError:
            if call.task.done() and not call.task.cancelled():
                # The work finished; it is this caller that was cancelled.
                raise
            if call.waiters == 1:
                # The last caller left: stop the work, and let the next caller start a
                # new execution instead of joining one that is being cancelled.
                call.task.cancel()
                self._drop(key, call)
            raise
        finally:
            call.waiters -= 1

    def forget(self, key: Hashable) -> None:
        """Make the next ``do(key)`` start a new execution; callers already waiting keep theirs.

        Used when the key's data was invalidated: a caller arriving afterwards
        must not join a load that may have read the old data.
        """
        self._calls.pop(key, None)

    def forget_all(self) -> None:
        """Forget every key (see ``forget``)."""
        self._calls.clear()

    def _drop(self, key: Hashable, call: _Call[T]) -> None:
        # Only if the entry still belongs to this call: a later call may have replaced it.
        if self._calls.get(key) is call:
            del self._calls[key]

    def _forget(self, key: Hashable, call: _Call[T], _task: object = None) -> None:
        self._drop(key, call)
        if not call.task.cancelled():
            # Retrieve the exception so an error nobody awaited is not logged as lost.
            call.task.exception()
