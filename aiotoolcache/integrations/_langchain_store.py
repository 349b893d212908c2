"""``ToolCacheByteStore``: a LangChain ``ByteStore`` over a cache layer, async and sync.

Imported through ``aiotoolcache.integrations.langchain``, which checks that
LangChain is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterator, Sequence
from hashlib import blake2b
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from langchain_core.stores import ByteStore

from aiotoolcache.errors import (
    BlockingCallInEventLoop,
    ConfigurationError,
    StoreClosed,
    ToolCacheError,
)
from aiotoolcache.integrations._loop_thread import LoopThread
from aiotoolcache.toolcache import ToolCache

__all__ = ["ToolCacheByteStore"]

P = ParamSpec("P")
T = TypeVar("T")

_BATCH = 256  # keys checked per read while listing


class ToolCacheByteStore(ByteStore):
    """A ``langchain_core`` ``ByteStore`` whose entries live in an aiotoolcache layer.

    Made for ``CacheBackedEmbeddings.from_bytes_store(embeddings, store,
    key_encoder="blake2b")``: the vectors are kept in the ``embeddings`` layer
    (seven days by default) shared by every process on the same Redis.

    Two ways to make one:

    - ``ToolCacheByteStore(cache)`` with a ``ToolCache`` of the caller's: an
      async store (``amget`` / ``amset`` / ``amdelete`` / ``ayield_keys``) on
      the caller's event loop. The cache belongs to that loop, so the
      synchronous methods raise ``ConfigurationError``, and ``close()`` leaves
      the cache open.
    - ``ToolCacheByteStore()`` (the embedded default) or
      ``ToolCacheByteStore(lambda: ToolCache.from_url(url, namespace=...))``:
      the store creates its cache on an event loop thread of its own and runs
      every cache operation there, so both APIs work, the synchronous one from
      any thread without a running event loop (``CacheBackedEmbeddings.
      embed_documents`` included) and the async one from any loop. Call
      ``close()`` / ``await aclose()`` (or use ``with`` / ``async with``) to
      close the cache and stop the thread (a store garbage-collected without
      it does so in the background).

    A synchronous method called from a thread whose event loop is running
    raises ``BlockingCallInEventLoop`` (use the ``a…`` method there); any use
    after ``close()`` raises ``StoreClosed``.

    Key enumeration: the cache has no key scan, so when ``index_keys`` is true
    (the default) the store keeps an index of its keys in the same layer,
    split into ``index_shards`` values and updated under a lock. ``ayield_keys``
    lists the index, checks which keys still hold a value (entries expire on
    their TTL) and prunes the rest. Two processes writing the same store at the
    same moment can each overwrite the other's index update, so a key written
    concurrently from another process may be missing from ``ayield_keys`` (its
    value is still stored and readable). With ``index_keys=False`` writes are
    cheaper and ``ayield_keys`` raises ``NotImplementedError``.

    Args:
        cache: A ``ToolCache`` to use, a function that makes one (called on
            the store's own loop thread), or None for the embedded default.
        layer: The layer holding the values (``"embeddings"`` by default).
        namespace: Separates this store's keys from every other store's.
        partition: Optional partition (tenant); partitions never see each other.
        ttl: Seconds an entry lives; ``None`` uses the layer's TTL.
        index_keys: Maintain the key index that ``ayield_keys`` needs.
        index_shards: How many values the index is split into.
    """

    def __init__(
        self,
        cache: ToolCache | Callable[[], ToolCache] | None = None,
        *,
        layer: str = "embeddings",
        namespace: str = "default",
        partition: str | None = None,
        ttl: float | None = None,
        index_keys: bool = True,
        index_shards: int = 16,
    ) -> None:
        if index_shards < 1:
            raise ConfigurationError(f"index_shards must be >= 1, got {index_shards!r}")
        self.namespace = namespace
        self.partition = partition
        self.ttl = ttl
        self.index_keys = index_keys
        self.index_shards = index_shards
        self._lock = asyncio.Lock()  # serialises index updates; used on the cache's loop only
        self._closed = False
        self._loop_thread: LoopThread | None = None
        if isinstance(cache, ToolCache):
            self.cache = cache
        else:
            thread = LoopThread("aiotoolcache-bytestore")
            try:
                self.cache = thread.build(ToolCache if cache is None else cache)
            except BaseException:
                thread.close()
                raise
            self._loop_thread = thread
            # A store dropped without close() still closes its cache and ends its thread.
            weakref.finalize(self, thread.close_soon, self.cache.aclose)
        try:
            self.layer = self.cache.layer(layer)
        except ConfigurationError:
            if self._loop_thread is not None:
                self._loop_thread.close(self.cache.aclose)
            raise

    @property
    def owns_cache(self) -> bool:
        """Whether the store created its cache (on its own loop thread) and closes it."""
        return self._loop_thread is not None

    # -- where the cache's coroutines run --------------------------------------------
    async def _run(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn`` on the cache's loop: the caller's, or the store's own thread."""
        if self._closed:
            raise StoreClosed("the ToolCacheByteStore is closed")
        if self._loop_thread is None:
            return await fn(*args, **kwargs)
        return await self._loop_thread.run(fn, *args, **kwargs)

    def _sync_thread(self, method: str) -> LoopThread:
        """The loop thread a synchronous ``method`` runs on; raises when it may not block."""
        if self._closed:
            raise StoreClosed("the ToolCacheByteStore is closed")
        if self._loop_thread is None:
            raise ConfigurationError(
                f"ToolCacheByteStore.{method} needs a store that owns its cache: the cache "
                f"passed in belongs to its event loop. Use a{method}, or make the store with "
                "ToolCacheByteStore() or ToolCacheByteStore(lambda: ToolCache.from_url(...))."
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop_thread
        raise BlockingCallInEventLoop(
            f"ToolCacheByteStore.{method} was called from a running event loop, which it "
            f"would block: await a{method} instead (or run it in a worker thread)."
        )

    # -- keys -----------------------------------------------------------------
    def _key(self, key: str) -> list[str]:
        return ["langchain.bytestore", self.namespace, key]

    def _shard_of(self, key: str) -> int:
        digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).digest()
        return int.from_bytes(digest, "big") % self.index_shards

    def _index_key(self, shard: int) -> list[Any]:
        return ["langchain.bytestore.index", self.namespace, self.index_shards, shard]

    def _index_ttl(self) -> float:
        # The index must outlive the entries it lists despite TTL jitter (both
        # also get the layer's stale_ttl); names of expired entries in it are
        # pruned by ayield_keys.
        return 2 * (self.layer.config.ttl if self.ttl is None else self.ttl)

    async def _read_index(self, shards: Sequence[int]) -> dict[int, list[str]]:
        values = await self.layer.get_many(
            [self._index_key(s) for s in shards], partition=self.partition
        )
        out: dict[int, list[str]] = {}
        for shard, value in zip(shards, values, strict=True):
            if isinstance(value, list):
                out[shard] = [k for k in value if isinstance(k, str)]
            else:
                out[shard] = []
        return out

    async def _update_index(self, add: Collection[str] = (), remove: Collection[str] = ()) -> None:
        async with self._lock:
            await self._update_index_locked(add, remove)

    async def _update_index_locked(self, add: Collection[str], remove: Collection[str]) -> None:
        by_shard: dict[int, tuple[set[str], set[str]]] = {}
        for key in add:
            by_shard.setdefault(self._shard_of(key), (set(), set()))[0].add(key)
        for key in remove:
            by_shard.setdefault(self._shard_of(key), (set(), set()))[1].add(key)
        if not by_shard:
            return
        current = await self._read_index(sorted(by_shard))
        updates: list[tuple[Any, Any]] = []
        for shard, (added, removed) in by_shard.items():
            before = set(current[shard])
            after = (before | added) - removed
            if after != before or added:
                # Rewritten on every add so its TTL keeps outliving the entries.
                updates.append((self._index_key(shard), sorted(after)))
        if updates:
            await self.layer.set_many(updates, ttl=self._index_ttl(), partition=self.partition)

    # -- the operations, run on the cache's loop --------------------------------
    async def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self.layer.get_many([self._key(k) for k in keys], partition=self.partition)
        return [v if isinstance(v, bytes) else None for v in values]

    async def _mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        items: list[tuple[Any, Any]] = []
        for key, value in key_value_pairs:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"ToolCacheByteStore stores bytes, got {type(value).__name__}")
            items.append((self._key(key), bytes(value)))
        if not items:
            return
        await self.layer.set_many(items, ttl=self.ttl, partition=self.partition)
        if self.index_keys:
            await self._update_index(add=[k for k, _ in key_value_pairs])

    async def _mdelete(self, keys: Sequence[str]) -> None:
        for key in dict.fromkeys(keys):
            await self.layer.delete(self._key(key), partition=self.partition)
        if self.index_keys:
            await self._update_index(remove=keys)

    async def _key_batches(self, prefix: str | None) -> AsyncIterator[list[str]]:
        """The stored keys (under ``prefix``) in batches; names of missing ones are pruned."""
        if not self.index_keys:
            raise NotImplementedError(
                "ayield_keys needs the key index: create the store with index_keys=True"
            )
        index = await self._read_index(range(self.index_shards))
        candidates = sorted(
            {k for keys in index.values() for k in keys if prefix is None or k.startswith(prefix)}
        )
        stale: list[str] = []
        for start in range(0, len(candidates), _BATCH):
            chunk = candidates[start : start + _BATCH]
            present = await self._mget(chunk)
            found = [key for key, value in zip(chunk, present, strict=True) if value is not None]
            stale.extend(key for key, value in zip(chunk, present, strict=True) if value is None)
            if found:
                yield found
        if stale:
            await self._prune(stale)

    async def _prune(self, keys: Sequence[str]) -> None:
        # Re-checked under the lock: _mset adds a key to the index only after
        # writing its value and under the same lock, so a key written since it
        # was found missing is never dropped from the index.
        async with self._lock:
            values = await self._mget(keys)
            missing = [k for k, v in zip(keys, values, strict=True) if v is None]
            if missing:
                await self._update_index_locked((), missing)

    # -- async API ------------------------------------------------------------
    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._run(self._mget, keys)

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        await self._run(self._mset, key_value_pairs)

    async def amdelete(self, keys: Sequence[str]) -> None:
        await self._run(self._mdelete, keys)

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        batches = self._key_batches(prefix)
        try:
            while (batch := await self._run(_next_batch, batches)) is not None:
                for key in batch:
                    yield key
        finally:
            if not self._closed:
                await self._run(_close_batches, batches)

    # -- sync API: the same operations on the store's own loop thread ------------
    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._sync_thread("mget").call(self._mget, keys)

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        self._sync_thread("mset").call(self._mset, key_value_pairs)

    def mdelete(self, keys: Sequence[str]) -> None:
        self._sync_thread("mdelete").call(self._mdelete, keys)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        return self._iter_keys(self._sync_thread("yield_keys"), prefix)

    def _iter_keys(self, thread: LoopThread, prefix: str | None) -> Iterator[str]:
        batches = self._key_batches(prefix)
        try:
            while (batch := thread.call(_next_batch, batches)) is not None:
                yield from batch
        finally:
            # Left unfinished where it cannot block (or after close), the loop's
            # shutdown closes the batches instead.
            if not thread.closed:
                with contextlib.suppress(ToolCacheError):
                    thread.call(_close_batches, batches)

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        """Close the store: a cache it created is closed and its loop thread stopped.

        A cache passed in stays open. Idempotent; from a running event loop use
        ``aclose()``.
        """
        if self._closed:
            return
        if self._loop_thread is not None:
            self._sync_thread("close")  # refuses to block a running event loop
            self._closed = True
            self._loop_thread.close(self.cache.aclose)
        self._closed = True

    async def aclose(self) -> None:
        """Close the store from async code (see ``close``); the caller's loop never blocks."""
        if self._closed:
            return
        thread = self._loop_thread
        self._closed = True
        if thread is not None:
            await asyncio.to_thread(thread.close, self.cache.aclose)

    def __enter__(self) -> ToolCacheByteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> ToolCacheByteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _next_batch(batches: AsyncIterator[list[str]]) -> list[str] | None:
    """The next batch of keys, or None when there are no more."""
    try:
        return await anext(batches)
    except StopAsyncIteration:
        return None


async def _close_batches(batches: AsyncIterator[list[str]]) -> None:
    aclose = getattr(batches, "aclose", None)
    if aclose is not None:
        await aclose()
