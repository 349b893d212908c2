"""A loopback TCP proxy in front of a real redis-server that loses one chosen reply.

``lose_reply_to(marker)`` arms it: the next request that contains ``marker``
still reaches Redis (so the command runs), but its reply, and everything
after it on that connection, never comes back, as on a link that hung after
the request went out. The client's own timeout must notice. Other
connections are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks.chaos_support import HOST, LoopbackProxy


class ReplyLossProxy(LoopbackProxy):
    """ReplyLossProxy forwards loopback connections to one Redis port and loses one reply."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.lost = 0  # requests whose reply was lost
        self._marker: bytes | None = None

    def lose_reply_to(self, marker: bytes) -> None:
        """Lose the reply to the next request containing ``marker`` (once)."""
        self._marker = marker

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            return
        try:
            await self._forward(reader, writer, up_reader, up_writer)
        except OSError:
            pass
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        silent = asyncio.Event()

        async def requests() -> None:
            while data := await reader.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    self.lost += 1
                    silent.set()  # before forwarding: no byte of its reply gets through
                up_writer.write(data)
                await up_writer.drain()

        async def replies() -> None:
            while data := await up_reader.read(65536):
                if not silent.is_set():
                    writer.write(data)
                    await writer.drain()

        await self._pump_both(requests(), replies())
