"""An asyncio event loop on a thread of its own, so synchronous code can use async objects.

A ToolCache and its Redis connections belong to the loop they were first used
on. An adapter with a synchronous API (LangChain's ``BaseStore.mget``…) gives
its cache a ``LoopThread`` and runs every coroutine of that cache there: from
synchronous code with ``call`` (blocking), from other event loops with ``run``
(awaiting, without blocking them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from aiotoolcache.errors import BlockingCallInEventLoop, StoreClosed

__all__ = ["LoopThread"]

P = ParamSpec("P")
T = TypeVar("T")


class LoopThread:
    """LoopThread runs an event loop on a daemon thread until ``close()``; thread-safe.

    ``call`` blocks its caller until the coroutine finished on the loop, and
    refuses (``BlockingCallInEventLoop``) when the calling thread runs an event
    loop itself, where blocking would stall that loop or, on the loop's own
    thread, never return. After ``close()`` every call raises ``StoreClosed``.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._close_lock = threading.Lock()  # makes close() run once
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def in_loop_thread(self) -> bool:
        """Whether the calling thread is the loop's own."""
        return threading.current_thread() is self._thread

    def _submit(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StoreClosed("the store is closed")
        coro = fn(*args, **kwargs)
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop closed meanwhile
            coro.close()
            raise StoreClosed("the store is closed") from None

    def call(self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and return its result, blocking until then."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no event loop runs in this thread: blocking it is fine
        else:
            raise BlockingCallInEventLoop(
                "a blocking call was made from a running event loop; "
                "await the async method instead (or run the call in a worker thread)"
            )
        return self._submit(fn, *args, **kwargs).result()

    async def run(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` run on the loop; cancelling the caller cancels it."""
        if self.in_loop_thread():
            return await fn(*args, **kwargs)
        return await asyncio.wrap_future(self._submit(fn, *args, **kwargs))

    def build(self, factory: Callable[[], T]) -> T:
        """Call the synchronous ``factory`` on the loop's thread and return what it made.

        Meant for constructors that do no I/O, so the wait is short and it is
        allowed from any thread but the loop's own.
        """
        if self.in_loop_thread():
            return factory()

        async def made() -> T:
            return factory()

        return self._submit(made).result()

    def close(self, final: Callable[[], Awaitable[object]] | None = None) -> None:
        """Await ``final()`` on the loop, cancel what still runs there, stop and join the thread.

        Idempotent; blocking, so not callable from the loop's own thread.
        """
        if self.in_loop_thread():
            raise BlockingCallInEventLoop("a LoopThread cannot close itself from its own thread")
        with self._close_lock:
            if self._closed:
                return
            try:
                self._submit(self._shutdown, final).result()
            finally:
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()  # the thread closes the loop once it stopped

    def close_soon(self, final: Callable[[], Awaitable[object]] | None = None) -> None:
        """Start what ``close`` does without waiting for it; callable from any thread.

        For finalizers: an owner collected without ``close()`` still lets its
        thread end.
        """
        with self._close_lock:
            if self._closed:
                return
            done = self._submit(self._shutdown, final)
            self._closed = True
        done.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._loop.stop))

    async def _shutdown(self, final: Callable[[], Awaitable[object]] | None) -> None:
        # The same clean-up asyncio.run does when its main coroutine ends.
        try:
            if final is not None:
                await final()
        finally:
            current = asyncio.current_task()
            others = [task for task in asyncio.all_tasks() if task is not current]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await self._loop.shutdown_asyncgens()
            await self._loop.shutdown_default_executor()
