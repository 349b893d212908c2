"""The MCP SDK's client response cache, kept in a ToolCache so every client of a fleet shares it.

The SDK decides what is cacheable (``tools/list``, ``resources/read`` … with
the server's ``ttlMs``/``cacheScope`` hints) and when an entry is fresh;
``ToolCacheResponseStore`` only keeps the entries, in the ``mcp_responses``
layer, and reads back nothing it cannot vouch for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import UnionType
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from mcp.client.caching import MAX_TTL_MS, CacheEntry, CacheKey
from mcp_types import CacheableResult
from mcp_types.methods import MONOLITH_RESULTS

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.integrations._common import ensure_layer
from aiotoolcache.layers import LayerConfig

if TYPE_CHECKING:
    from aiotoolcache.toolcache import ToolCache

__all__ = ["DEFAULT_RESPONSE_LAYER", "DEFAULT_RETENTION", "ToolCacheResponseStore"]

DEFAULT_RETENTION: Final = 3600.0
"""Seconds an SDK response entry is kept past its ``expires_at`` (the SDK evicts it sooner)."""

DEFAULT_RESPONSE_LAYER = LayerConfig(
    ttl=MAX_TTL_MS / 1000 + DEFAULT_RETENTION, jitter=0.0, beta=0.0, max_value_bytes=8 * 2**20
)
"""Policy of the ``mcp_responses`` layer: retention is computed per entry, never refreshed early."""


def _cacheable_result_models() -> dict[str, type[CacheableResult]]:
    """Allowlist of the SDK's cacheable result models, by class name."""
    models: dict[str, type[CacheableResult]] = {}
    for row in MONOLITH_RESULTS.values():
        arms = get_args(row) if isinstance(row, UnionType) else (row,)
        for arm in arms:
            if isinstance(arm, type) and issubclass(arm, CacheableResult):
                models[arm.__name__] = arm
    return models


class ToolCacheResponseStore:
    """ToolCacheResponseStore keeps the MCP SDK client response cache in a ToolCache.

    Keys: the SDK's ``CacheKey`` fields stay apart, as the key
    ``(store name, method, params_key, partition)`` and, separately, the cache
    partition ``partition`` (the SDK's scope arm), so crafted values can never
    collide across fields, arms or stores. Values: cacheable result models are stored as their
    JSON dump with a type tag checked against an allowlist (a store entry never
    names a class to import); other values (plain JSON-able data) round-trip
    as they are. ``scope`` and ``expires_at`` round-trip exactly.

    An entry that cannot be stored (larger than the layer's
    ``max_value_bytes``) is not kept, and the entry it replaces is deleted, so
    a later ``get`` misses rather than answering with a superseded result. A
    stored model that no longer validates is a miss, never an error.

    Freshness belongs to the SDK: an entry past ``expires_at`` is still
    returned until the SDK deletes it. Retention in the cache is separate and
    bounded: ``expires_at`` (at most 24 h ahead, the SDK's cap) plus
    ``retention`` seconds. ``clear()`` drops only this store's entries (tag
    ``mcp-responses:<name>``), in every worker.
    """

    def __init__(
        self,
        cache: ToolCache,
        *,
        layer: str = "mcp_responses",
        name: str = "default",
        retention: float = DEFAULT_RETENTION,
        models: Iterable[type[CacheableResult]] = (),
    ) -> None:
        if retention <= 0:
            raise ConfigurationError(f"retention must be positive, got {retention!r}")
        self._cache = cache
        self._layer = ensure_layer(cache, layer, DEFAULT_RESPONSE_LAYER)
        self._name = name
        self._retention = retention
        self._models = _cacheable_result_models()
        for model in models:
            self._models[model.__name__] = model

    @property
    def tag(self) -> str:
        """The tag every entry of this store carries."""
        return f"mcp-responses:{self._name}"

    def _key(self, key: CacheKey) -> list[str]:
        return [self._name, key.method, key.params_key, key.partition]

    @staticmethod
    def _partition(key: CacheKey) -> str:
        # Length-prefixed by the cache, so no partition can collide with another.
        return "sdk-arm:" + key.partition

    def _encode(self, value: Any) -> dict[str, Any]:
        if isinstance(value, CacheableResult):
            tag = type(value).__name__
            if self._models.get(tag) is not type(value):
                raise TypeError(f"{tag} is not a cacheable result model this store knows")
            return {
                "kind": "model",
                "type": tag,
                "data": value.model_dump(mode="json", by_alias=True),
            }
        return {"kind": "value", "data": value}

    def _decode(self, stored: Any) -> CacheEntry | None:
        if not isinstance(stored, dict):
            return None
        scope = stored.get("scope")
        expires_at = stored.get("expires_at")
        payload = stored.get("value")
        if scope not in ("public", "private") or not isinstance(payload, dict):
            return None
        if expires_at is not None and not isinstance(expires_at, int | float):
            return None
        kind = payload.get("kind")
        value: Any
        if kind == "model":
            model = self._models.get(str(payload.get("type")))
            if model is None:
                return None  # an unknown tag is a miss, never an import
            try:
                value = model.model_validate(payload.get("data"))
            except ValueError:
                return None  # written under another schema: a wrong-shape entry is a miss
        elif kind == "value":
            value = payload.get("data")
        else:
            return None
        checked_scope: Literal["public", "private"] = "public" if scope == "public" else "private"
        return CacheEntry(
            value=value,
            scope=checked_scope,
            expires_at=None if expires_at is None else float(expires_at),
        )

    def _retention_for(self, entry: CacheEntry) -> float:
        remaining = 0.0 if entry.expires_at is None else entry.expires_at - time.time()
        return min(max(remaining, 0.0), MAX_TTL_MS / 1000) + self._retention

    async def get(self, key: CacheKey) -> CacheEntry | None:
        stored = await self._layer.get(
            self._key(key), partition=self._partition(key), label=key.method
        )
        return self._decode(stored)

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        stored = {
            "value": self._encode(entry.value),
            "scope": entry.scope,
            "expires_at": entry.expires_at,
        }
        counters = self._layer.counters
        skipped = counters.skipped_writes
        await self._layer.set(
            self._key(key),
            stored,
            self._retention_for(entry),
            tags=[self.tag],
            partition=self._partition(key),
            label=key.method,
        )
        if counters.skipped_writes != skipped:
            # Not stored (over max_value_bytes): the entry it replaces must not keep
            # answering for the key. Another write skipped meanwhile on this layer
            # only costs one extra miss here, never a superseded answer.
            await self.delete(key)

    async def delete(self, key: CacheKey) -> None:
        await self._layer.delete(self._key(key), partition=self._partition(key), label=key.method)

    async def clear(self) -> None:
        await self._cache.invalidate(tags=[self.tag])
