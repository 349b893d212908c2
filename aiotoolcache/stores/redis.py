"""The Redis L2: bytes in Redis, reads merged into MGETs and writes into pipelines.

Every call goes through the cache's circuit breaker, so a slow or dead Redis
costs at most the time budget, then nothing at all while the breaker is open.

On a Redis Cluster, MGETs are split per slot (and sent per node) and put back
in order; redis-py spends tens of microseconds of CPU per slot there, so at
most ``CLUSTER_BATCHES`` such batches run at once, each timed (by the breaker)
from when it starts rather than from when it was queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from aiotoolcache.batching import Batcher
from aiotoolcache.breaker import CircuitBreaker

__all__ = ["RedisStore"]

T = TypeVar("T")
AnyRedis = Redis | RedisCluster
# Cluster pipelines in flight per store (each is CPU-bound in redis-py).
CLUSTER_BATCHES = 2


class RedisStore:
    """RedisStore keeps bytes in Redis with millisecond TTLs, auto-batching concurrent calls."""

    def __init__(self, client: AnyRedis, breaker: CircuitBreaker, *, max_batch: int = 512) -> None:
        self.client = client
        self.breaker = breaker
        # A lone read is a plain GET (on a Cluster, an MGET of one, routed like the rest).
        get_one = None if isinstance(client, RedisCluster) else self._get
        self._reads: Batcher[str, bytes | None] = Batcher(self._mget, max_batch, get_one)
        self._writes: Batcher[tuple[str, bytes, int], None] = Batcher(self._pipeline_set, max_batch)
        self._cluster_batches = asyncio.Semaphore(CLUSTER_BATCHES)

    async def _batch_call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one batch through the breaker; on a Cluster, a bounded number at once."""
        if isinstance(self.client, RedisCluster):
            async with self._cluster_batches:
                return await self.breaker.call(operation)
        return await self.breaker.call(operation)

    async def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        client = self.client
        if isinstance(client, RedisCluster):
            # Split per slot and reassembled in order by redis-py.
            values = await self._batch_call(lambda: client.mget_nonatomic(list(keys)))
        else:
            values = await self._batch_call(lambda: client.mget(list(keys)))
        # decode_responses is off, so every value is bytes or None.
        return cast("list[bytes | None]", values)

    async def _get(self, key: str) -> bytes | None:
        client = self.client
        return cast("bytes | None", await self.breaker.call(lambda: client.get(key)))

    async def _pipeline_set(self, items: Sequence[tuple[str, bytes, int]]) -> list[None]:
        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:  # reset even on error
                for key, value, ttl_ms in items:
                    pipe.set(key, value, px=max(1, ttl_ms))
                await pipe.execute()

        await self._batch_call(write)
        return [None] * len(items)

    def get(self, key: str, *, batched: bool = False) -> Awaitable[bytes | None]:
        """Read one key (a plain function: a batched read is awaited without a coroutine).

        ``batched``: join the next flush even when alone, rather than going out at
        once from the caller's task (see ``Batcher.call``).
        """
        return self._reads.submit(key) if batched else self._reads.call(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if len(keys) == 1:
            return [await self.get(keys[0])]
        return list(await asyncio.gather(*(self._reads.submit(key) for key in keys)))

    async def set_many(self, items: Sequence[tuple[str, bytes, int]]) -> None:
        if len(items) == 1:
            await self._writes.call(items[0])
        elif items:
            await asyncio.gather(*(self._writes.submit(item) for item in items))

    async def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return

        async def delete() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.delete(key)
                return await pipe.execute()

        await self.breaker.call(delete)

    async def ttl_ms(self, key: str) -> int | None:
        ttl = await self.breaker.call(lambda: self.client.pttl(key))
        return None if ttl is None or ttl < 0 else int(ttl)

    async def aclose(self) -> None:
        await self._reads.drain()
        await self._writes.drain()
