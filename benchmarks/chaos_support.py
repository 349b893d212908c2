"""The chaos checker's faulty link: loopback TCP proxies in front of a redis-server.

``FaultProxy`` adds reply latency, drops replies and partitions on command;
``LoopbackProxy`` is the listener and connection bookkeeping it shares with
the test suite's lost-reply proxy. The servers themselves are the test
suite's ``RedisServer`` (its own directory, persistence off), which the
checker kills, restarts empty and freezes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from typing import Any, Self

__all__ = ["FaultProxy", "LoopbackProxy"]

HOST = "127.0.0.1"
CHUNK = 65536


class _Link:
    """_Link is one proxied connection: its upstream address and whether it went silent."""

    __slots__ = ("silent", "upstream_port")

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        # Set when a reply was dropped: like a lost segment on a hung connection,
        # nothing more flows until the client gives up and closes it.
        self.silent = False


class LoopbackProxy:
    """LoopbackProxy listens on 127.0.0.1 and serves each connection with ``_serve``.

    Subclasses decide what happens to the bytes; this class owns the listener
    and the connection tasks, so ``close`` ends every one of them.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()  # the client side of each connection
        self._server: asyncio.Server | None = None

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._connection, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def close(self) -> None:
        """Stop listening and end every connection, both sides closed before returning.

        A connection is ended by closing its client side, so its pumps see the end of
        the stream and its handler closes the upstream side itself. Cancelling the
        handler instead would leave asyncio's stream callback to report the
        cancellation as an error and the transports to be closed by the collector.
        """
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:  # a handler that ignored the end of its stream
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @staticmethod
    async def _pump_both(*pumps: Coroutine[Any, Any, None]) -> None:
        """Run the two directions of a connection until either ends, then stop both."""
        tasks = [asyncio.create_task(pump) for pump in pumps]
        try:
            # Either side closing ends the connection on both sides.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class FaultProxy(LoopbackProxy):
    """FaultProxy forwards loopback connections to one Redis port, with the faults set on it.

    ``latency`` delays every reply chunk by that many seconds (order kept);
    ``drop`` is the probability that a reply chunk is dropped, after which its
    connection forwards nothing more (the client's own timeout must notice);
    ``partitioned`` holds everything in flight on open connections and closes
    new ones at once, until it is cleared. It listens on 127.0.0.1 only.
    """

    def __init__(self, upstream_port: int, seed: int = 0) -> None:
        super().__init__(upstream_port)
        self.latency = 0.0
        self.drop = 0.0
        self._connected = asyncio.Event()
        self._connected.set()
        self.dropped = 0
        self.refused = 0
        self._rng = random.Random(seed)
        self._links: set[_Link] = set()

    @property
    def partitioned(self) -> bool:
        return not self._connected.is_set()

    @partitioned.setter
    def partitioned(self, value: bool) -> None:
        if value:
            self._connected.clear()
        else:
            self._connected.set()

    def upstream_addresses(self) -> list[str]:
        """The ``host:port`` Redis sees for each open proxied connection (for CLIENT KILL)."""
        return [f"{HOST}:{link.upstream_port}" for link in self._links]

    def clear(self) -> None:
        """Remove every fault (connections already silent stay silent)."""
        self.latency = self.drop = 0.0
        self.partitioned = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._forward(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.partitioned:
            self.refused += 1
            return
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        link = _Link(int(up_writer.get_extra_info("sockname")[1]))
        self._links.add(link)
        try:
            await self._pump_both(
                self._pump(reader, up_writer, link, replies=False),
                self._pump(up_reader, writer, link, replies=True),
            )
        finally:
            self._links.discard(link)
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: _Link,
        *,
        replies: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def receive() -> None:
            try:
                while data := await source.read(CHUNK):
                    if replies and self.drop and self._rng.random() < self.drop:
                        self.dropped += 1
                        link.silent = True
                    if not link.silent:
                        delay = self.latency if replies else 0.0
                        queue.put_nowait((loop.time() + delay, data))
            except OSError:
                pass
            finally:
                queue.put_nowait(None)

        receiver = asyncio.create_task(receive())
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self._connected.wait()
                if link.silent:
                    continue
                sink.write(data)
                await sink.drain()
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
