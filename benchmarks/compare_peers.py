"""The libraries benchmarks/compare.py sets side by side, each in its fastest documented setup.

Every peer reads through ``get_or_load(key, loader)`` with its own idiomatic API, the
same key names (under its own prefix) and the same values, and gets a blocking
connection pool of ``POOL_SIZE`` connections (aiotoolcache's default). aiotoolcache
is also measured through each of its other public read paths: ``layer.get``,
``layer.get_many`` (a ``BatchPeer``), ``ToolCache.call_tool`` and ``@cache.cached``.
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

import aiotoolcache as atc

Loader = Callable[[str], Awaitable[Any]]

POOL_SIZE = 64
# Longer than a full run (both servers): no entry primed at the start expires during a hit
# measurement, in any peer.
TTL = 3600
BATCH = 50  # keys per layer.get_many call
# The tool a cached call names: its arguments are the key, as an agent's would be.
TOOL_SERVER, TOOL_NAME = "search", "web_search"
_ABSENT: Any = object()  # a ``default`` no cached value can equal


def tool_result(key: str) -> dict[str, Any]:
    """A typical small tool result (~300 bytes of msgpack), the same for every peer."""
    return {
        "content": [{"type": "text", "text": f"result for {key}: " + "lorem ipsum " * 18}],
        "isError": False,
        "meta": {"server": "search", "tool": "web_search", "elapsed_ms": 12},
    }


class Peer:
    """Peer is one library configured for read-through caching: ``get_or_load(key, loader)``."""

    name = "peer"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        raise NotImplementedError


def blocking_client(url: str) -> Redis:
    """A redis-py client with hiredis (when installed, its default parser) and a blocking pool."""
    return Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE))


class RawRedisPeer(Peer):
    """redis-py alone: GET + msgpack.unpackb, then loader + SET EX on a miss (no coalescing)."""

    name = "raw redis-py"

    def __init__(self, url: str) -> None:
        self.client = blocking_client(url)

    async def close(self) -> None:
        await self.client.aclose()

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        name = "raw:" + key
        data = await self.client.get(name)
        if data is not None:
            return msgpack.unpackb(data)
        value = await loader(key)
        await self.client.set(name, msgpack.packb(value), ex=TTL)
        return value


class MgetBatcherPeer(RawRedisPeer):
    """A reference, not a library: redis-py GETs merged per event-loop tick into one MGET.

    It shows the floor a batching cache can reach for concurrent hits: about as
    little Python per call as a batch can cost. Misses go through raw redis-py.
    """

    name = "MGET batcher (reference)"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._pending: dict[str, list[asyncio.Future[Any]]] = {}

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        name = "raw:" + key
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future = loop.create_future()
        self._pending.setdefault(name, []).append(future)
        data = await future
        if data is not None:
            return msgpack.unpackb(data)
        return await super().get_or_load(key, loader)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        task = asyncio.ensure_future(self._mget(pending))
        task.add_done_callback(lambda t: t.exception())

    async def _mget(self, pending: dict[str, list[asyncio.Future[Any]]]) -> None:
        try:
            values = await self.client.mget(list(pending))
        except Exception as exc:
            for futures in pending.values():
                for future in futures:
                    future.set_exception(exc)
            return
        for futures, value in zip(pending.values(), values, strict=True):
            for future in futures:
                future.set_result(value)


class CashewsPeer(Peer):
    """cashews' ``@cache(ttl=...)`` decorator (values pickled, its default serializer)."""

    def __init__(self, url: str, *, client_side: bool) -> None:
        from cashews import Cache

        self.name = "cashews client_side" if client_side else "cashews"
        self.cache = Cache()
        self.cache.setup(url, client_side=client_side, max_connections=POOL_SIZE)
        self.prefix = prefix = "cwcs:" if client_side else "cw:"
        self._loader: Loader | None = None

        @self.cache(ttl=f"{TTL}s", key=prefix + "{key}")
        async def fetch(key: str) -> Any:
            assert self._loader is not None
            return await self._loader(key)

        self._fetch = fetch

    async def open(self) -> None:
        await self.cache.init()

    async def close(self) -> None:
        await self.cache.close()

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        self._loader = loader
        return await self._fetch(key)

    async def direct_get(self, key: str) -> Any:
        return await self.cache.get(self.prefix + key)


class AiocachePeer(Peer):
    """aiocache's ``@cached(ttl=...)`` decorator on Cache.REDIS with MsgPackSerializer."""

    name = "aiocache"

    def __init__(self, host: str, port: int) -> None:
        from aiocache import Cache, cached  # type: ignore[import-untyped]
        from aiocache.serializers import MsgPackSerializer  # type: ignore[import-untyped]

        class RedisMsgPack(MsgPackSerializer):  # type: ignore[misc]
            """MsgPackSerializer as it works on Redis: bytes in, str keys and values out.

            aiocache 0.12.3's own MsgPackSerializer either has the Redis backend decode the
            msgpack bytes as UTF-8 (encoding="utf-8": every read fails) or returns strings
            as bytes (encoding=None).
            """

            DEFAULT_ENCODING = None

            def loads(self, value: bytes | None) -> Any:
                if value is None:
                    return None
                return msgpack.unpackb(value, raw=False, use_list=self.use_list)

        self._loader: Loader | None = None

        @cached(  # type: ignore[untyped-decorator]
            ttl=TTL,
            cache=Cache.REDIS,
            serializer=RedisMsgPack(),
            namespace="aio",
            key_builder=lambda _f, key: key,
            endpoint=host,
            port=port,
            pool_max_size=POOL_SIZE,
            connection_pool_class=BlockingConnectionPool,
        )
        async def fetch(key: str) -> Any:
            assert self._loader is not None
            return await self._loader(key)

        self._fetch = fetch

    async def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # aiocache calls Redis.close()
            await self._fetch.cache.close()

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        self._loader = loader
        return await self._fetch(key)

    async def direct_get(self, key: str) -> Any:
        return await self._fetch.cache.get(key)


class DirectGet(Peer):
    """DirectGet reads a peer's cache with its plain ``get`` first, the decorator on a miss.

    A library's bare ``get`` skips its decorator's key formatting and miss
    protection: for hits it is that library's fastest documented path.
    """

    def __init__(self, peer: CashewsPeer | AiocachePeer) -> None:
        self.peer = peer
        self.name = peer.name + " get"

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        value = await self.peer.direct_get(key)
        if value is None:
            return await self.peer.get_or_load(key, loader)
        return value


class AiotoolcachePeer(Peer):
    """aiotoolcache's ``layer.get_or_load(key, loader)`` on one layer of a shared ToolCache.

    Fleet-wide single-flight (leases in Redis) is on, as it is by default.
    """

    def __init__(self, cache: atc.ToolCache, layer: str, name: str) -> None:
        if cache.tier.leases is None:
            raise RuntimeError("fleet-wide single-flight must stay on in every measurement")
        self.cache = cache
        self.layer = cache.layer(layer)
        self.name = name

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        return await self.layer.get_or_load(key, functools.partial(loader, key))


class AiotoolcacheGetPeer(AiotoolcachePeer):
    """``layer.get(key)``: a hit without a loader; a miss falls back to ``get_or_load``."""

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        value = await self.layer.get(key, _ABSENT)
        if value is _ABSENT:
            return await super().get_or_load(key, loader)
        return value


class BatchPeer(Peer):
    """BatchPeer also reads many keys in one call; its figures are per key, not per call."""

    batch = BATCH

    async def get_many(self, keys: Sequence[str], loader: Loader) -> list[Any]:
        raise NotImplementedError


class AiotoolcacheGetManyPeer(AiotoolcachePeer, BatchPeer):
    """``layer.get_many(keys)``; each key it misses is loaded through ``get_or_load``."""

    async def get_many(self, keys: Sequence[str], loader: Loader) -> list[Any]:
        values = await self.layer.get_many(keys, _ABSENT)
        for i, value in enumerate(values):
            if value is _ABSENT:
                values[i] = await super().get_or_load(keys[i], loader)
        return values


class CallToolPeer(Peer):
    """``ToolCache.call_tool(server, tool, arguments, loader)``: the key is built every call."""

    def __init__(self, cache: atc.ToolCache, name: str) -> None:
        if cache.tier.leases is None:
            raise RuntimeError("fleet-wide single-flight must stay on in every measurement")
        self.cache = cache
        self.name = name

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        call = functools.partial(loader, key)
        return await self.cache.call_tool(TOOL_SERVER, TOOL_NAME, {"query": key}, call)


class CachedFunctionPeer(Peer):
    """An async function decorated with ``@cache.cached(layer)``, called with the key."""

    def __init__(self, cache: atc.ToolCache, layer: str, name: str) -> None:
        if cache.tier.leases is None:
            raise RuntimeError("fleet-wide single-flight must stay on in every measurement")
        self.name = name
        self._loader: Loader | None = None

        @cache.cached(layer)
        async def fetch(key: str) -> Any:
            assert self._loader is not None
            return await self._loader(key)

        self._fetch = fetch

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        self._loader = loader
        return await self._fetch(key)


@dataclass
class LoadCounter:
    """LoadCounter is a loader that counts its calls (and may take time, like a real tool)."""

    delay: float = 0.0
    calls: int = 0
    keys: set[str] = field(default_factory=set)

    async def __call__(self, key: str) -> Any:
        self.calls += 1
        self.keys.add(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        return tool_result(key)


class ClientTraffic:
    """ClientTraffic counts the commands every redis-py connection sends while it is active.

    Every peer talks to Redis through redis-py's asyncio connections, which pack each
    command (pipelined ones too) with ``pack_command``.
    """

    def __init__(self) -> None:
        self.commands = 0

    def __enter__(self) -> ClientTraffic:
        traffic = self
        self._pack = pack = AbstractConnection.pack_command

        def pack_command(conn: AbstractConnection, *args: Any) -> Any:
            traffic.commands += 1
            return pack(conn, *args)

        AbstractConnection.pack_command = pack_command  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        AbstractConnection.pack_command = self._pack  # type: ignore[method-assign]
