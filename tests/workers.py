"""Real worker processes for multi-process tests: each opens its own ToolCache on a URL.

A scenario is a module-level ``async def scenario(cache, link, arg) -> result``
(so it pickles by reference). Every worker is a fresh interpreter (the
multiprocessing "spawn" context): it shares nothing with the test but the
Redis server. ``link`` carries picklable messages both ways over a pipe
private to that worker, so killing one worker never corrupts another's channel.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from typing import Any

import aiotoolcache as atc

__all__ = ["Link", "Scenario", "Worker", "WorkerFailed", "eventually", "run_workers"]

_SPAWN = multiprocessing.get_context("spawn")


class WorkerFailed(Exception):
    """Raised in the test when a worker's scenario raised, or the worker died."""


class Link:
    """Link is one end of a worker's pipe; ``recv`` waits without blocking the event loop."""

    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index  # the worker's position in its group

    def send(self, message: Any) -> None:
        self.conn.send(("msg", message))

    async def recv(self, within: float = 30.0) -> Any:
        """Return the next message from the other end; raise WorkerFailed on anything else."""
        kind, payload = await self.frame(within)
        if kind == "msg":
            return payload
        raise WorkerFailed(f"worker {self.index} sent {kind!r}, not a message:\n{payload}")

    async def frame(self, within: float) -> tuple[str, Any]:
        """Return the next ``(kind, payload)``: kind is ready, msg, result or error."""
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        async with asyncio.timeout(within):
            while not self.conn.poll():
                readable = loop.create_future()
                loop.add_reader(fd, _resolve, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(fd)
        try:
            frame: tuple[str, Any] = self.conn.recv()
        except EOFError:
            raise WorkerFailed(f"worker {self.index} went away") from None
        return frame


Scenario = Callable[[atc.ToolCache, Link, Any], Awaitable[Any]]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _child(
    conn: Connection, index: int, url: str, options: dict[str, Any], scenario: Scenario, arg: Any
) -> None:
    asyncio.run(_serve(Link(conn, index), url, options, scenario, arg))


async def _serve(
    link: Link, url: str, options: dict[str, Any], scenario: Scenario, arg: Any
) -> None:
    try:
        async with atc.ToolCache.from_url(url, **options) as cache:
            link.conn.send(("ready", os.getpid()))
            result = await scenario(cache, link, arg)
        link.conn.send(("result", result))
    except BaseException:
        link.conn.send(("error", traceback.format_exc()))
    finally:
        link.conn.close()


class Worker:
    """Worker is one OS process running ``scenario`` on its own ToolCache."""

    def __init__(
        self, index: int, url: str, scenario: Scenario, arg: Any, options: dict[str, Any]
    ) -> None:
        parent, child = _SPAWN.Pipe()
        self.index = index
        self.link = Link(parent, index)
        self.process = _SPAWN.Process(
            target=_child,
            args=(child, index, url, options, scenario, arg),
            name=f"atc-worker-{index}",
            daemon=True,
        )
        self._child_end = child
        self.pid = 0

    def start(self) -> None:
        self.process.start()
        self._child_end.close()  # so the parent sees EOF when the worker dies
        self.pid = self.process.pid or 0

    async def ready(self, within: float = 30.0) -> None:
        kind, payload = await self.link.frame(within)
        if kind != "ready":
            raise WorkerFailed(f"worker {self.index} failed to start:\n{payload}")

    def send(self, message: Any) -> None:
        self.link.send(message)

    async def recv(self, within: float = 30.0) -> Any:
        """Return the next message the scenario sent; raise WorkerFailed if it failed instead."""
        return await self.link.recv(within)

    async def result(self, within: float = 30.0) -> Any:
        """Return the scenario's result, skipping messages it sent meanwhile."""
        while True:
            kind, payload = await self.link.frame(within)
            if kind == "result":
                return payload
            if kind == "error":
                raise WorkerFailed(f"worker {self.index} raised:\n{payload}")

    def kill(self) -> None:
        """SIGKILL the worker, as a crash or an OOM kill would."""
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if not self.pid:
            self.link.conn.close()
            return
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(5)
        if self.process.is_alive():
            self.kill()
            self.process.join(5)
        self.link.conn.close()
        self.process.close()


@asynccontextmanager
async def run_workers(
    count: int, url: str, scenario: Scenario, arg: Any = None, **options: Any
) -> AsyncIterator[list[Worker]]:
    """Start ``count`` workers (``ToolCache.from_url(url, **options)`` each), ready to go.

    Every worker receives ``arg``; its ``link.index`` tells it apart. The
    workers are stopped on exit, whatever state they are in.
    """
    workers = [Worker(i, url, scenario, arg, dict(options)) for i in range(count)]
    try:
        for worker in workers:
            worker.start()
        await asyncio.gather(*(worker.ready() for worker in workers))
        yield workers
    finally:
        await asyncio.to_thread(_close_all, workers)


def _close_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.close()


async def eventually(predicate: Callable[[], object], within: float = 5.0) -> float:
    """Wait until ``predicate()`` is true; return how long that took (raise on ``within``)."""
    began = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return time.monotonic() - began
            await asyncio.sleep(0.002)


class Counting:
    """Counting is a loader returning ``value`` after ``delay`` that counts its calls."""

    def __init__(self, value: Any, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


class Gated:
    """Gated is a loader that sets ``started`` when called and returns ``value`` once ``gate``
    is set: a load held in flight for as long as a test needs."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self) -> Any:
        self.started.set()
        await self.gate.wait()
        return self.value
