"""ToolCache for MCP clients built on the MCP Python SDK (2.x).

Two pieces:

``ToolCacheResponseStore``
    A ``ResponseCacheStore`` for the SDK's own client response cache
    (``mcp.client.caching.CacheConfig(store=...)``). The SDK decides what is
    cacheable (``tools/list``, ``resources/read`` … with the server's
    ``ttlMs``/``cacheScope`` hints) and when an entry is fresh; the store only
    keeps entries, so every client of a fleet, on one Redis, shares them:

```python
store = ToolCacheResponseStore(cache)
config = CacheConfig(store=store, partition=partition_for_token(token), target_id="weather")
async with Client(url, cache=config) as client: ...
```

``ToolCallCache`` / ``cached_call_tool``
    Caches ``tools/call`` results made through a connected ``mcp.Client``,
    ``mcp.ClientSession`` or ``fastmcp.Client``, under the same rules as the
    FastMCP middleware: only tools annotated ``readOnlyHint`` (or
    allow-listed, never deny-listed) are cached; error results, exceptions,
    input-required asks, extension (task) results and a result built while
    the client answered an elicitation or sampling request never are. Any other
    tool is a write: each of its calls, however it ends, drops the cached
    results it affects.
    The tool listing itself is cached in the discovery layer, honouring
    the server's ``ttlMs``/``cacheScope`` hints on protocol
    2026-07-28. ``message_handler()`` turns ``notifications/tools/list_changed``
    into ``cache.on_tools_list_changed(server_id)``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

try:
    import mcp_types
    from mcp.client.caching import MAX_TTL_MS
    from mcp.client.session import ClientSession, IncomingMessage, MessageHandlerFnT
    from mcp.shared.exceptions import MCPError
    from mcp_types import (
        HEADER_MISMATCH,
        CallToolResult,
        ListToolsResult,
        PaginatedRequestParams,
        Tool,
    )
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    from aiotoolcache.integrations._mcp_human import HumanAsks
    from aiotoolcache.integrations._mcp_store import (
        DEFAULT_RESPONSE_LAYER,
        DEFAULT_RETENTION,
        ToolCacheResponseStore,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.mcp needs the MCP Python SDK 2.x: "
        "pip install 'aiotoolcache[mcp]'"
    ) from exc

from aiotoolcache import calls
from aiotoolcache.errors import ConfigurationError
from aiotoolcache.integrations._common import (
    ToolDecision,
    Uncached,
    decide,
    partition_for_token,
)
from aiotoolcache.toolcache import server_tag

if TYPE_CHECKING:
    from aiotoolcache.toolcache import ToolCache

__all__ = [
    "DEFAULT_RESPONSE_LAYER",
    "DEFAULT_RETENTION",
    "ToolCacheResponseStore",
    "ToolCallCache",
    "cached_call_tool",
    "list_changed_handler",
    "partition_for_token",
]

_MAX_PAGES: Final = 100
"""Bound on the tools/list pages walked when listing a server's tools."""


def list_changed_handler(
    cache: ToolCache, server_id: str, inner: MessageHandlerFnT | None = None
) -> MessageHandlerFnT:
    """Return a client ``message_handler`` that invalidates ``server_id`` on tools/list_changed.

    Every message still reaches ``inner`` (when given), after the invalidation.
    """

    async def handler(message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            await cache.on_tools_list_changed(server_id)
        if inner is not None:
            await inner(message)

    return handler


def _is_stored_result(value: Any) -> bool:
    return isinstance(value, dict)


def _session_of(client: Any) -> ClientSession:
    if isinstance(client, ClientSession):
        return client
    session = getattr(client, "session", None)
    if not isinstance(session, ClientSession):
        raise TypeError(
            "expected a connected mcp.Client, mcp.ClientSession or fastmcp.Client, "
            f"got {type(client).__name__}"
        )
    return session


class ToolCallCache:
    """ToolCallCache caches one MCP server's tool listing and tool results for a client.

    ``server_id`` names the server (it is in every key and tag, so
    ``cache.invalidate_server(server_id)`` drops everything about it);
    ``partition`` isolates one principal's entries (derive it from a verified
    credential, e.g. ``partition_for_token(token)``; None shares entries with
    every client without one). A tool's results are cached only when its
    annotations say ``readOnlyHint`` is true, or its name is in
    ``allow_tools`` (or its ``ToolPolicy`` says ``cache=True``), and never
    when its name is in ``deny_tools`` (or its policy says ``cache=False``).
    Tools that may run as tasks are never cached. Every other tool is a
    write: once a call of it succeeds (no exception, no ``isError``), the
    cached results its policy names (default: all of this server's) in this
    client's ``partition`` (every partition under
    ``ToolPolicy(invalidates_partitions="all")``) are dropped in every worker,
    before ``call_tool`` returns. With
    ``trust_annotations=False`` the server's annotations can only make
    caching stricter: its tools are cached only when allow-listed or by policy.

    ``ttl`` is the tool-result TTL (None: the results layer's), ``list_ttl``
    the tool-listing TTL used when the server gives no hint (None: the
    discovery layer's). On protocol 2026-07-28 a listing's positive ``ttlMs``
    hint replaces ``list_ttl`` (and is exact: the listing is never served past
    it) and ``cacheScope: "public"`` shares the listing across partitions when
    ``share_public``. ``ttlMs: 0`` is also what servers send when they set no
    hint, so it falls back to ``list_ttl`` unless ``respect_zero_ttl`` (then
    the listing is fetched for every call and never stored).
    """

    def __init__(
        self,
        cache: ToolCache,
        *,
        server_id: str,
        partition: str | None = None,
        ttl: float | None = None,
        list_ttl: float | None = None,
        allow_tools: Iterable[str] = (),
        deny_tools: Iterable[str] = (),
        share_public: bool = False,
        respect_zero_ttl: bool = False,
        trust_annotations: bool = True,
    ) -> None:
        if not server_id:
            raise ConfigurationError("server_id must be a non-empty string")
        self.cache = cache
        self.server_id = server_id
        self.partition = partition
        self.ttl = ttl
        self.list_ttl = list_ttl
        self.allow_tools = frozenset(allow_tools)
        self.deny_tools = frozenset(deny_tools)
        self.share_public = share_public
        self.respect_zero_ttl = respect_zero_ttl
        self.trust_annotations = trust_annotations

    # -- notifications ----------------------------------------------------------------
    def message_handler(self, inner: MessageHandlerFnT | None = None) -> MessageHandlerFnT:
        """A client ``message_handler`` invalidating this server on tools/list_changed."""
        return list_changed_handler(self.cache, self.server_id, inner)

    async def invalidate(self) -> None:
        """Drop everything cached about this server (listing and results, every partition)."""
        await self.cache.invalidate_server(self.server_id)

    # -- discovery ----------------------------------------------------------------------
    def _list_key(self) -> tuple[str, str]:
        return ("mcp.list_tools", self.server_id)

    async def list_tools(self, client: Any, *, refresh: bool = False) -> list[Tool]:
        """Return every tool of the server (all pages), from the discovery layer when cached.

        A listing is stored with its scope. Another partition's client (with
        ``share_public``) is served only a listing whose server said
        ``cacheScope: "public"``, never one stored private. Under a cassette
        the listing is recorded and replayed like any call: a replay never
        lists the server's tools.
        """
        layer = self.cache.discovery
        if self.cache.cassette is not None:

            async def record() -> dict[str, Any]:
                pages = await self._fetch_listing(client)
                scope = self._listing_policy(client, pages[0])[1]
                return self._listing_entry(pages, None, scope)

            stored = await layer.get_or_load(
                self._list_key(), record, partition=self.partition, label=self.server_id
            )
            return self._stored_tools(stored, shared=False, replayed=True) or []
        if not refresh:
            partitions = [self.partition]
            if self.share_public and self.partition is not None:
                partitions.append(None)
            for partition in partitions:
                stored = await layer.get(
                    self._list_key(), partition=partition, label=self.server_id
                )
                shared = partition != self.partition
                tools = self._stored_tools(stored, shared=shared, replayed=False)
                if tools is not None:
                    return tools
        pages = await self._fetch_listing(client)
        ttl, scope = self._listing_policy(client, pages[0])
        if ttl is None or ttl > 0:
            await layer.set(
                self._list_key(),
                self._listing_entry(pages, ttl, scope),
                ttl,
                tags=[server_tag(self.server_id)],
                partition=None if scope == "public" and self.share_public else self.partition,
                label=self.server_id,
            )
        return [tool for page in pages for tool in page.tools]

    @staticmethod
    def _listing_entry(
        pages: list[ListToolsResult], ttl: float | None, scope: Literal["public", "private"]
    ) -> dict[str, Any]:
        """What the discovery layer stores for a listing: its tools, server TTL and scope."""
        return {
            "tools": [
                tool.model_dump(mode="json", by_alias=True) for page in pages for tool in page.tools
            ],
            "expires_at": None if ttl is None else time.time() + ttl,
            "scope": scope,
        }

    @staticmethod
    def _stored_tools(stored: Any, *, shared: bool, replayed: bool) -> list[Tool] | None:
        """The tools of a stored listing, or None when missing, malformed, past a server TTL,
        or (``shared``: read from another partition) not public."""
        if not isinstance(stored, dict) or not isinstance(stored.get("tools"), list):
            return None
        if shared and stored.get("scope") != "public":
            return None  # a private listing (or one stored before scopes) serves its owner only
        expires_at = stored.get("expires_at")
        if not replayed and isinstance(expires_at, int | float) and expires_at <= time.time():
            return None  # a server-hinted TTL is exact, never served stale
        try:
            return [Tool.model_validate(item) for item in stored["tools"]]
        except ValueError:
            return None

    async def _fetch_listing(self, client: Any) -> list[ListToolsResult]:
        pages: list[ListToolsResult] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = await self._fetch_page(client, cursor)
            pages.append(page)
            cursor = page.next_cursor
            if cursor is None or cursor in seen:
                break
            seen.add(cursor)
        return pages

    @staticmethod
    async def _fetch_page(client: Any, cursor: str | None) -> ListToolsResult:
        if isinstance(client, ClientSession):
            params = None if cursor is None else PaginatedRequestParams(cursor=cursor)
            return await client.list_tools(params=params)
        list_tools_mcp = getattr(client, "list_tools_mcp", None)
        if list_tools_mcp is not None:  # fastmcp.Client
            page = await list_tools_mcp(cursor=cursor)
        else:  # mcp.Client
            page = await client.list_tools(cursor=cursor)
        if not isinstance(page, ListToolsResult):
            raise TypeError(f"tools/list returned {type(page).__name__}")
        return page

    def _listing_policy(
        self, client: Any, first: ListToolsResult
    ) -> tuple[float | None, Literal["public", "private"]]:
        """TTL and scope for a listing: the server's hints on a modern connection, else ours."""
        version = _session_of(client).protocol_version
        if version not in MODERN_PROTOCOL_VERSIONS or "ttl_ms" not in first.model_fields_set:
            return self.list_ttl, "private"
        if first.ttl_ms == 0 and not self.respect_zero_ttl:
            # 0 is also what a server sends when it sets no hint at all.
            return self.list_ttl, "private"
        ttl = min(first.ttl_ms, MAX_TTL_MS) / 1000
        return ttl, "public" if first.cache_scope == "public" else "private"

    # -- tool calls -----------------------------------------------------------------------
    def decision(self, tool: Tool | None, name: str) -> ToolDecision:
        """What a call of ``tool`` (called as ``name``) does: cached or not, a write or not."""
        decision = decide(
            self.cache,
            self.server_id,
            name,
            tool.annotations if tool is not None else None,
            trusted=self.trust_annotations,
            allowed=name in self.allow_tools,
            denied=name in self.deny_tools,
        )
        execution = tool.execution if tool is not None else None
        if execution is not None and execution.task_support not in (None, "forbidden"):
            return ToolDecision(decision.policy, False, decision.write)
        return decision

    def cacheable(self, tool: Tool | None, name: str) -> bool:
        """Whether results of ``tool`` (called as ``name``) may be cached."""
        return self.decision(tool, name).cached

    async def call_tool(
        self,
        client: Any,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> CallToolResult:
        """Call ``name`` through ``client``; serve it from the results layer when it may be cached.

        Argument order does not matter (the cache canonicalises the key);
        the tool's ``_meta`` and a requested FastMCP version are part of the key.
        """
        args: dict[str, Any] = dict(arguments or {})
        # Even a denied tool's annotations matter: they say whether it is a write.
        tools = await self.list_tools(client)
        tool = next((candidate for candidate in tools if candidate.name == name), None)
        decision = self.decision(tool, name)
        if decision.write:
            return await calls.run_write(
                self.cache,
                self.server_id,
                decision.policy,
                lambda: self._full_call(client, name, args, meta),
                partition=self.partition,
            )
        if not decision.cached:
            return await calls.run_uncached(lambda: self._full_call(client, name, args, meta))

        async def load() -> dict[str, Any] | Uncached[CallToolResult | None]:
            return await self._first_leg(client, name, args, meta)

        policy = decision.policy
        key = calls.policy_key("mcp.call_tool", self.server_id, name, args, policy)
        value = await calls.read_through(
            self.cache.results,
            self.cache.policies,
            policy,
            self.cache.codec,
            (*key, self._variant(tool, meta)),
            self.server_id,
            name,
            load,
            partition=self.partition,
            ttl=self.ttl if ttl is None else ttl,
            should_cache=_is_stored_result,
        )
        if isinstance(value, dict):
            return CallToolResult.model_validate(value)
        if value.value is not None:
            return value.value
        # An input-required ask or an extension result: let the client drive it, uncached.
        return await calls.run_uncached(lambda: self._full_call(client, name, args, meta))

    @staticmethod
    def _variant(tool: Tool | None, meta: Mapping[str, Any] | None) -> Any:
        requested = None
        if meta is not None:
            fastmcp_meta = meta.get("fastmcp")
            if isinstance(fastmcp_meta, Mapping):
                requested = fastmcp_meta.get("version")
        tool_meta = tool.meta if tool is not None else None
        if requested is None and not tool_meta:
            return None
        return {"meta": tool_meta, "version": requested}

    async def _first_leg(
        self,
        client: Any,
        name: str,
        arguments: dict[str, Any],
        meta: Mapping[str, Any] | None,
    ) -> dict[str, Any] | Uncached[CallToolResult | None]:
        session = _session_of(client)
        asks = HumanAsks.of(session)
        asked_before = asks.count
        request_meta: Any = dict(meta) if meta is not None else None
        try:
            result = await session.call_tool(
                name,
                arguments,
                meta=request_meta,
                allow_input_required=True,
                allow_claimed=True,
            )
        except MCPError as exc:
            if exc.code != HEADER_MISMATCH:
                raise
            # The client's full path re-lists the tool and resends once.
            result = await self._full_call(client, name, arguments, meta)
        if not isinstance(result, CallToolResult):
            return Uncached(None)
        if result.is_error or asks.count != asked_before:
            return Uncached(result)  # an error, or built from a human's answer
        return result.model_dump(mode="json", by_alias=True)

    @staticmethod
    async def _full_call(
        client: Any,
        name: str,
        arguments: dict[str, Any],
        meta: Mapping[str, Any] | None,
    ) -> CallToolResult:
        request_meta: Any = dict(meta) if meta is not None else None
        call_tool_mcp: Callable[..., Awaitable[Any]] | None = getattr(client, "call_tool_mcp", None)
        if call_tool_mcp is not None:  # fastmcp.Client
            result = await call_tool_mcp(name, arguments, meta=request_meta)
        else:  # mcp.Client or mcp.ClientSession
            result = await client.call_tool(name, arguments, meta=request_meta)
        if not isinstance(result, CallToolResult):
            raise TypeError(f"tools/call returned {type(result).__name__}")
        return result


async def cached_call_tool(
    client: Any,
    cache: ToolCache,
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    server_id: str,
    partition: str | None = None,
    ttl: float | None = None,
    allow_tools: Iterable[str] = (),
    deny_tools: Iterable[str] = (),
    meta: Mapping[str, Any] | None = None,
) -> CallToolResult:
    """Call one tool through ``client``, serving repeated read-only calls from ``cache``.

    A one-call form of ``ToolCallCache(...).call_tool(...)``; see there for the rules.
    """
    calls = ToolCallCache(
        cache,
        server_id=server_id,
        partition=partition,
        ttl=ttl,
        allow_tools=allow_tools,
        deny_tools=deny_tools,
    )
    return await calls.call_tool(client, name, arguments, meta=meta)
