"""A TLS terminator in front of a plain server, for a server built without TLS.

The bundled ``valkey-server`` has no TLS support compiled in, so the TLS tests put this
in front of it: ``python -m tests.tls_terminator LISTEN UPSTREAM CERT KEY`` accepts only
TLS on ``127.0.0.1:LISTEN`` and forwards each decrypted stream to ``127.0.0.1:UPSTREAM``.
To a client it is a TLS-only server: a plain connection fails its handshake.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

HOST = "127.0.0.1"


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve(listen: int, upstream: int, cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    server = await asyncio.start_server(connection, HOST, listen, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, upstream, cert, key = sys.argv[1:5]
    asyncio.run(serve(int(listen), int(upstream), cert, key))
