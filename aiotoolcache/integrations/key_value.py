"""A py-key-value ``AsyncKeyValue`` store backed by a ToolCache.

Anything written against the py-key-value protocol can keep its data in a
ToolCache: the embedded default in one process, or one Redis shared by a
fleet. FastMCP's own ``ResponseCachingMiddleware`` is the main consumer:

```python
import aiotoolcache as atc
from fastmcp.server.middleware.caching import ResponseCachingMiddleware
from aiotoolcache.integrations.key_value import ToolCacheKeyValue

cache = atc.ToolCache.from_url("redis://127.0.0.1:6379/0", namespace="agent")
server.add_middleware(ResponseCachingMiddleware(cache_storage=ToolCacheKeyValue(cache)))
```

Every entry lives in one layer of the cache (``"kv"`` by default). Its cache
key is ``(store name, collection, key)``, so long keys, long collection names
and any characters are fine (the cache hashes keys). Every entry is tagged
with its store and its collection, so ``destroy_collection`` drops exactly one
collection and ``destroy`` exactly this store, in every worker, without
scanning Redis. Values are stored as the py-key-value JSON document (value,
creation and expiry time), so ``ttl()`` reports the remaining lifetime and an
entry past its expiry is never returned. Puts without a TTL are kept for the
layer's TTL (seven days by default): a cache never holds data forever.

Like every py-key-value store it is an async context manager with ``close()``.
A store made without a cache creates (and owns) the embedded default, or a
cache on ``url``, and closing the store closes that cache; a cache passed in
belongs to the caller and stays open.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

try:
    from key_value.aio._utils import ManagedEntry
    from key_value.aio._utils.serialization import BasicSerializationAdapter
    from key_value.aio.errors import DeserializationError
    from key_value.aio.stores.base import (
        BaseContextManagerStore,
        BaseDestroyCollectionStore,
        BaseDestroyStore,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.key_value needs py-key-value-aio: "
        "pip install 'aiotoolcache[fastmcp]'"
    ) from exc

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.integrations._common import ensure_layer
from aiotoolcache.layers import LayerConfig
from aiotoolcache.toolcache import ToolCache

__all__ = ["DEFAULT_KV_LAYER", "ToolCacheKeyValue"]

DEFAULT_KV_LAYER = LayerConfig(ttl=7 * 24 * 3600.0, jitter=0.0, beta=0.0, max_value_bytes=8 * 2**20)
"""Policy of the ``kv`` layer when the cache has none: exact TTLs (no jitter, no early refresh)."""


class ToolCacheKeyValue(BaseDestroyStore, BaseDestroyCollectionStore, BaseContextManagerStore):
    """ToolCacheKeyValue is an ``AsyncKeyValue`` store whose entries live in a ToolCache layer.

    ``cache`` is the ToolCache to use; without one the store creates its own
    (on ``url``, or the embedded default) and ``close()`` / ``async with``
    close it. A cache passed in is never closed by the store. ``name``
    separates stores sharing one cache (it is part of every key and tag);
    ``layer`` names the cache layer (added with ``DEFAULT_KV_LAYER`` when
    missing, so its TTL bounds entries stored without one).
    """

    def __init__(
        self,
        cache: ToolCache | None = None,
        *,
        url: str | None = None,
        layer: str = "kv",
        name: str = "kv",
        default_collection: str | None = None,
    ) -> None:
        if cache is not None and url is not None:
            raise ConfigurationError("pass either a cache or a url, not both")
        owns_cache = cache is None
        self._cache = ToolCache(url) if cache is None else cache
        self._layer = ensure_layer(self._cache, layer, DEFAULT_KV_LAYER)
        self._name = name
        self._codec = BasicSerializationAdapter()
        super().__init__(
            default_collection=default_collection,
            stable_api=True,
            client_provided_by_user=not owns_cache,
        )

    async def _setup(self) -> None:
        # Run once, on first use or on entering: the exit stack that close()
        # and __aexit__ unwind then closes a cache this store created.
        if not self._client_provided_by_user:
            self._exit_stack.push_async_callback(self._cache.aclose)

    async def close(self) -> None:
        """Release what the store holds: a cache it created is closed, one passed in is not."""
        await super().close()
        if self.owns_cache:  # also when the store was never used (never set up)
            await self._cache.aclose()

    @property
    def cache(self) -> ToolCache:
        """The ToolCache holding this store's entries."""
        return self._cache

    @property
    def owns_cache(self) -> bool:
        """Whether the store created its cache (and closes it on ``close()``)."""
        return not self._client_provided_by_user

    # -- keys and tags ------------------------------------------------------------------
    def _key(self, collection: str, key: str) -> tuple[str, str, str]:
        return (self._name, collection, key)

    def store_tag(self) -> str:
        """The tag every entry of this store carries."""
        return f"kv:{self._name}"

    def collection_tag(self, collection: str) -> str:
        """The tag every entry of ``collection`` carries."""
        return f"kv:{self._name}/{collection}"

    def _decode(self, raw: Any) -> ManagedEntry | None:
        if not isinstance(raw, str):
            return None
        try:
            return self._codec.load_json(json_str=raw)
        except DeserializationError:
            return None

    # -- BaseStore hooks ------------------------------------------------------------------
    async def _get_managed_entry(self, *, collection: str, key: str) -> ManagedEntry | None:
        raw = await self._layer.get(self._key(collection, key), label=collection)
        return self._decode(raw)

    async def _get_managed_entries(
        self, *, collection: str, keys: Sequence[str]
    ) -> list[ManagedEntry | None]:
        if not keys:
            return []
        raws = await self._layer.get_many(
            [self._key(collection, key) for key in keys], label=collection
        )
        return [self._decode(raw) for raw in raws]

    async def _put_managed_entry(
        self, *, collection: str, key: str, managed_entry: ManagedEntry
    ) -> None:
        # dump_json raises SerializationError for values JSON cannot hold.
        document = self._codec.dump_json(entry=managed_entry)
        ttl: float | None = None
        if managed_entry.expires_at is not None:
            ttl = managed_entry.expires_at.timestamp() - time.time()
            if ttl <= 0:
                await self._layer.delete(self._key(collection, key), label=collection)
                return
        await self._layer.set(
            self._key(collection, key),
            document,
            ttl,
            tags=[self.store_tag(), self.collection_tag(collection)],
            label=collection,
        )

    async def _delete_managed_entry(self, *, key: str, collection: str) -> bool:
        cache_key = self._key(collection, key)
        existed = self._decode(await self._layer.get(cache_key, label=collection)) is not None
        await self._layer.delete(cache_key, label=collection)
        return existed

    async def _delete_managed_entries(self, *, keys: Sequence[str], collection: str) -> int:
        if not keys:
            return 0
        cache_keys = [self._key(collection, key) for key in keys]
        raws = await self._layer.get_many(cache_keys, label=collection)
        deleted = 0
        for cache_key, raw in zip(cache_keys, raws, strict=True):
            if self._decode(raw) is not None:
                deleted += 1
            await self._layer.delete(cache_key, label=collection)
        return deleted

    async def _delete_collection(self, *, collection: str) -> bool:
        await self._cache.invalidate(tags=[self.collection_tag(collection)])
        return True

    async def _delete_store(self) -> bool:
        await self._cache.invalidate(tags=[self.store_tag()])
        return True
