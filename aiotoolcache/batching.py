"""Auto-batching: requests made in the same event-loop tick share one backend call.

The first request of a tick schedules a flush with ``call_soon``, so a lone
request waits one loop iteration, never a timer; every request made before
that iteration runs joins the same batch (up to ``max_batch`` per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

ItemT = TypeVar("ItemT")
R = TypeVar("R")


class Batcher(Generic[ItemT, R]):
    """Batcher collects items and runs ``run_batch(items) -> results`` once per tick.

    ``run_batch`` returns one result per item, in order. Its exception, if
    any, reaches every request of the batch.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[ItemT]], Awaitable[Sequence[R]]],
        max_batch: int = 512,
        run_one: Callable[[ItemT], Awaitable[R]] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._run_one = run_one
        self._max_batch = max_batch
        # This tick's requests, side by side (no pair object per request: a burst holds
        # thousands of them while its reads are in flight).
        self._pending: list[ItemT] = []
        self._futures: list[asyncio.Future[R]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._direct = 0  # calls running inline (see call); changed only on the event loop

    def call(self, item: ItemT) -> Awaitable[R]:
        """Return the result for one item (to await at once), joining this tick's batch if
        there is one.

        When nothing else is pending or running, the call goes out at once
        from the caller's own task (as ``run_one(item)`` when given, a batch of
        one otherwise): a lone request pays for no flush task. Requests that
        arrive while it runs are batched as usual. A batched request is this
        tick's future itself: awaiting it costs no coroutine of its own.
        """
        if self._pending or self._tasks or self._direct:
            return self.submit(item)
        return self._alone(item)

    async def _alone(self, item: ItemT) -> R:
        self._direct += 1
        try:
            if self._run_one is not None:
                return await self._run_one(item)
            return (await self._run_batch([item]))[0]
        finally:
            self._direct -= 1

    def submit(self, item: ItemT) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(item)
        self._futures.append(future)
        return future

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        futures, self._futures = self._futures, []
        for start in range(0, len(items), self._max_batch):
            end = start + self._max_batch
            task = asyncio.ensure_future(self._run(items[start:end], futures[start:end]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[ItemT], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._run_batch(items)
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, Exception):
                return
            raise
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Wait until every batch already submitted has finished."""
        await asyncio.sleep(0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
