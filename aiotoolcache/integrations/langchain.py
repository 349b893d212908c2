"""LangChain 1.x integration: cached tool calls and a cache-backed ``ByteStore``.

`ToolCacheMiddleware` is an ``AgentMiddleware`` for ``create_agent`` that
serves repeated tool calls (same tool, same arguments in any order) from the
results layer. `ToolCacheByteStore` is a ``langchain_core.stores.ByteStore``
over a cache layer, so ``CacheBackedEmbeddings`` keeps its vectors in
aiotoolcache's embeddings layer:

```python
from langchain.agents import create_agent
from aiotoolcache.integrations.langchain import ToolCacheMiddleware

agent = create_agent(model, tools, middleware=[ToolCacheMiddleware(cache, ttl=300)])
await agent.ainvoke({"messages": [...]})
```

Both are async-first: the cache is an asyncio library, so use ``ainvoke`` /
``astream`` / ``aembed_documents``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Literal

try:
    from langchain.agents.middleware import AgentMiddleware
    from langchain_core.messages import ToolMessage
    from langchain_core.stores import ByteStore
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.langchain needs LangChain 1.x: "
        "pip install 'aiotoolcache[langchain]'"
    ) from exc

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.integrations._common import (
    ToolDecision,
    allow_policy,
    allowed,
    annotations_in,
    call_through,
    decide,
    is_plain,
    names,
)

if TYPE_CHECKING:
    from aiotoolcache import ToolCache

__all__ = ["ToolCacheByteStore", "ToolCacheMiddleware"]

PartitionFor = Callable[[ToolCallRequest], "str | None"]
ToolPolicy = Collection[str] | Callable[[str], bool]


class ToolCacheMiddleware(AgentMiddleware):
    """Serve repeated LangChain tool calls from aiotoolcache's results layer.

    The cache key is the tool name plus its arguments in canonical form (dict
    order never matters), optionally within a ``partition`` (tenant, user, auth
    principal) that no other partition can read. A hit returns a fresh
    ``ToolMessage`` stamped with the *current* call's ``tool_call_id``; the tool
    does not run.

    Which tools are cached: by default **every tool**, except those named in
    ``deny_tools``. Pass ``allow_tools`` (a collection of tool names, or a predicate taking
    the tool name) to cache only the tools it accepts; ``deny_tools`` always wins.
    Cache only tools whose result depends on their arguments alone (lookups,
    searches, pure computations), never tools with side effects: a tool the
    lists exclude (or whose ``ToolPolicy`` says ``cache=False``, or whose
    ``metadata`` carries MCP annotations without ``readOnlyHint``) is a write,
    and each successful call of it drops ``server_id``'s cached results.

    Never cached: exceptions raised by the tool (they propagate as usual, and a
    concurrent identical call runs the tool itself), ``ToolMessage`` results
    with ``status="error"``, ``Command`` results, messages whose ``content`` or
    ``artifact`` are not plain data (str, numbers, bool, None, bytes, lists and
    str-keyed dicts), and results rejected by ``cache_result``.

    Args:
        cache: The ``ToolCache`` to use.
        ttl: Seconds a result stays fresh; ``None`` uses the results layer's TTL.
        allow_tools: Tool names to cache, or a predicate ``(tool_name) -> bool``;
            ``None`` (the default) allows every tool.
        deny_tools: Tool names never cached.
        partition: A fixed partition, or a function ``(ToolCallRequest) -> str | None``
            reading it from the request (e.g. ``lambda r: r.runtime.context.user_id``).
        server_id: The cache's tool namespace for these results;
            ``await cache.invalidate_server(server_id)`` drops them all.
        cache_result: Optional predicate ``(ToolMessage) -> bool``; ``False``
            returns the message without storing it.
        sync: What the synchronous path (``agent.invoke`` / ``agent.stream``) does
            for a tool that would be cached: ``"raise"`` (default) raises
            ``NotImplementedError`` pointing at ``ainvoke``; ``"bypass"`` runs the
            tool uncached. Tools the policy excludes always run.
    """

    def __init__(
        self,
        cache: ToolCache,
        *,
        ttl: float | None = None,
        allow_tools: ToolPolicy | None = None,
        deny_tools: Collection[str] = (),
        partition: str | PartitionFor | None = None,
        server_id: str = "langchain",
        cache_result: Callable[[ToolMessage], bool] | None = None,
        sync: Literal["raise", "bypass"] = "raise",
    ) -> None:
        super().__init__()
        if sync not in ("raise", "bypass"):
            raise ConfigurationError(f"sync must be 'raise' or 'bypass', got {sync!r}")
        self.cache = cache
        self.ttl = ttl
        self.allow_tools = allow_policy(allow_tools)
        self.deny_tools = names(deny_tools)
        self.partition = partition
        self.server_id = server_id
        self.cache_result = cache_result
        self.sync = sync

    # -- policy ---------------------------------------------------------------
    def is_cached(self, tool_name: str) -> bool:
        """Return whether calls to ``tool_name`` go through the cache."""
        return allowed(tool_name, (tool_name,), self.allow_tools, self.deny_tools)

    def decision(self, request: ToolCallRequest) -> ToolDecision:
        """Return what a call does under the tool's policy: cached or not, a write or not.

        The tool's ``metadata`` may carry MCP annotations (tools converted from
        MCP servers do); otherwise the allow and deny lists decide, and a tool
        they do not cache is a write that drops this server's cached results.
        """
        name = request.tool_call["name"]
        listed = self.is_cached(name)
        tool = getattr(request, "tool", None)
        return decide(
            self.cache,
            self.server_id,
            name,
            annotations_in(getattr(tool, "metadata", None)),
            allowed=listed and self.allow_tools is not None,
            denied=not listed,
        )

    def _partition_for(self, request: ToolCallRequest) -> str | None:
        if callable(self.partition):
            return self.partition(request)
        return self.partition

    # -- values ---------------------------------------------------------------
    def _dump(self, result: ToolMessage | Command[Any]) -> dict[str, Any] | None:
        if not isinstance(result, ToolMessage) or result.status == "error":
            return None
        if self.cache_result is not None and not self.cache_result(result):
            return None
        data = result.model_dump(exclude={"id", "tool_call_id"})
        if not is_plain(data):
            return None
        return {"message": data}

    @staticmethod
    def _restore(payload: dict[str, Any], tool_call_id: str) -> ToolMessage:
        data = payload["message"]
        if not isinstance(data, dict):
            raise ValueError("the stored message is not a dict")
        return ToolMessage.model_validate({**data, "tool_call_id": tool_call_id})

    # -- hooks ----------------------------------------------------------------
    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        call = request.tool_call
        name = call["name"]
        tool_call_id = str(call.get("id") or "")
        return await call_through(
            self.cache,
            self.server_id,
            name,
            dict(call["args"]),
            lambda: handler(request),
            dump=self._dump,
            restore=lambda payload: self._restore(payload, tool_call_id),
            partition=self._partition_for(request),
            ttl=self.ttl,
            decision=self.decision(request),
            succeeded=_succeeded,
        )

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        name = request.tool_call["name"]
        decision = self.decision(request)
        invalidates = decision.write and bool(
            self.cache.policies.write_tags(self.server_id, decision.policy)
        )
        if self.sync == "bypass" or not (decision.cached or invalidates):
            return handler(request)
        what = "caches" if decision.cached else "invalidates cached reads after"
        raise NotImplementedError(
            f"ToolCacheMiddleware {what} tool {name!r} on the async path only: run the agent "
            "with `await agent.ainvoke(...)` or `agent.astream(...)`, or pass "
            "sync='bypass' to run tools uncached (and writes without invalidation) under "
            "`invoke()` / `stream()`."
        )


def _succeeded(result: ToolMessage | Command[Any]) -> bool:
    """A write failed when its tool reported an error; it then invalidates nothing."""
    return not (isinstance(result, ToolMessage) and result.status == "error")


class ToolCacheByteStore(ByteStore):
    """A ``langchain_core`` ``ByteStore`` whose entries live in an aiotoolcache layer.

    Made for ``CacheBackedEmbeddings.from_bytes_store(embeddings, store,
    key_encoder="blake2b")``: the vectors are kept in the ``embeddings`` layer
    (seven days by default) shared by every process on the same Redis.

    The store is async-only: use ``amget`` / ``amset`` / ``amdelete`` /
    ``ayield_keys`` (``CacheBackedEmbeddings.aembed_documents`` and
    ``aembed_query`` do). The synchronous methods raise ``NotImplementedError``.

    Key enumeration: the cache has no key scan, so when ``index_keys`` is true
    (the default) the store keeps an index of its keys in the same layer,
    split into ``index_shards`` values and updated under an in-process lock.
    ``ayield_keys`` lists the index, checks which keys still hold a value
    (entries expire on their TTL) and prunes the rest. Two processes writing
    the same store at the same moment can each overwrite the other's index
    update, so a key written concurrently from another process may be missing
    from ``ayield_keys`` (its value is still stored and readable). With
    ``index_keys=False`` writes are cheaper and ``ayield_keys`` raises
    ``NotImplementedError``.

    Args:
        cache: The ``ToolCache`` to use.
        layer: The layer holding the values (``"embeddings"`` by default).
        namespace: Separates this store's keys from every other store's.
        partition: Optional partition (tenant); partitions never see each other.
        ttl: Seconds an entry lives; ``None`` uses the layer's TTL.
        index_keys: Maintain the key index that ``ayield_keys`` needs.
        index_shards: How many values the index is split into.
    """

    def __init__(
        self,
        cache: ToolCache,
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
        self.cache = cache
        self.layer = cache.layer(layer)
        self.namespace = namespace
        self.partition = partition
        self.ttl = ttl
        self.index_keys = index_keys
        self.index_shards = index_shards
        self._lock = asyncio.Lock()

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

    # -- async API ------------------------------------------------------------
    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self.layer.get_many([self._key(k) for k in keys], partition=self.partition)
        return [v if isinstance(v, bytes) else None for v in values]

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
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

    async def amdelete(self, keys: Sequence[str]) -> None:
        for key in dict.fromkeys(keys):
            await self.layer.delete(self._key(key), partition=self.partition)
        if self.index_keys:
            await self._update_index(remove=keys)

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        if not self.index_keys:
            raise NotImplementedError(
                "ayield_keys needs the key index: create the store with index_keys=True"
            )
        index = await self._read_index(range(self.index_shards))
        candidates = sorted(
            {k for keys in index.values() for k in keys if prefix is None or k.startswith(prefix)}
        )
        stale: list[str] = []
        batch = 256
        for start in range(0, len(candidates), batch):
            chunk = candidates[start : start + batch]
            present = await self.amget(chunk)
            for key, value in zip(chunk, present, strict=True):
                if value is None:
                    stale.append(key)
                else:
                    yield key
        if stale:
            await self._prune(stale)

    async def _prune(self, keys: Sequence[str]) -> None:
        # Re-checked under the lock: amset adds a key to the index only after
        # writing its value and under the same lock, so a key written since it
        # was found missing is never dropped from the index.
        async with self._lock:
            values = await self.amget(keys)
            missing = [k for k, v in zip(keys, values, strict=True) if v is None]
            if missing:
                await self._update_index_locked((), missing)

    # -- sync API -------------------------------------------------------------
    @staticmethod
    def _sync_unsupported(method: str) -> NotImplementedError:
        return NotImplementedError(
            f"ToolCacheByteStore.{method} is not available: the store is async-only. "
            f"Use a{method} (CacheBackedEmbeddings: aembed_documents / aembed_query)."
        )

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        raise self._sync_unsupported("mget")

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        raise self._sync_unsupported("mset")

    def mdelete(self, keys: Sequence[str]) -> None:
        raise self._sync_unsupported("mdelete")

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        raise self._sync_unsupported("yield_keys")
