"""ToolCache as FastMCP server middleware.

``ToolCacheMiddleware`` caches what a FastMCP server (or a FastMCP proxy in
front of another MCP server) answers: tool, resource, template and prompt
listings, tool results, resource reads and rendered prompts, in a ToolCache —
the embedded default in one process, or one Redis shared by every replica:

```python
import aiotoolcache as atc
from fastmcp import FastMCP
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware

cache = atc.ToolCache()
mcp = FastMCP("weather")
mcp.add_middleware(ToolCacheMiddleware(cache))
```

Rules:

- A tool's results are cached only when its annotations say ``readOnlyHint``
  is true, or its name is in ``allow_tools`` (or its ``ToolPolicy`` says
  ``cache=True``); never when its name is in ``deny_tools`` (or its policy
  says ``cache=False``), when it may run as a task, or for a task-augmented call.
- Any other tool is a write: once a call of it ends (a result, an error
  result, an exception or a cancellation), the server's cached tool results
  (or those its policy's ``invalidates`` names) are dropped in every worker
  before the caller hears back.
- A request may carry a directive in ``_meta["io.aiotoolcache/cache-control"]``
  (``"refresh"``, ``"bypass"``, ``"no-store"``, ``"only-if-cached"``, or
  ``{"mode": ..., "max_age": seconds}``), obeyed only for tools whose policy
  says ``client_directives=True``.
- Error results (``isError``), exceptions, input-required asks and the
  continuation legs that answer them, and task (non-``ToolResult``) results
  are never cached. Empty listings are.
- A request that asked the client for a human's answer while it ran
  (``ctx.elicit``, sampling: older-protocol connections) is served, never
  stored: a tool call, a resource read or a prompt alike. A tool whose
  function takes a ``Context`` (or another injected parameter) is cached
  only under a ``partition=`` of the user's own, which says which part of
  the request its result depends on.
- A stored entry that cannot be read back is a miss (counted in the layer's
  ``corrupt``): the real handler runs and its answer replaces the entry, so a
  client never sees a decoding error.
- Keys hold the server identity, the tool (resource, prompt) name, the tool's
  version and ``_meta`` when present, and the arguments (in canonical form,
  so their order does not matter). The partition is a SHA-256 of the caller's
  access token, so users never see each other's entries; unauthenticated
  callers share one partition. Pass ``partition=`` to derive it otherwise
  (e.g. by tenant).
- A listing's key holds the version of what it can show (the server's
  components, its enable/disable rules and the session's visibility rules),
  so a tool added at runtime or enabled for a session shows at once.
- Every entry is tagged ``server:<server_id>``: ``await
  middleware.invalidate()`` or ``cache.on_tools_list_changed(server_id)``
  drops everything about the server in every worker.

Listings go to the ``discovery`` layer, tool results to ``results``, resource
reads to ``resources`` and prompts to ``prompts`` (these two layers are added
with a one-hour TTL when the cache has none).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

try:
    import mcp_types
    from fastmcp.exceptions import ToolError
    from fastmcp.prompts.base import Prompt, PromptResult
    from fastmcp.resources.base import Resource, ResourceResult
    from fastmcp.resources.template import ResourceTemplate
    from fastmcp.server.dependencies import get_access_token
    from fastmcp.server.middleware.middleware import CallNext, Middleware, MiddlewareContext
    from fastmcp.tools.base import Tool, ToolResult
    from pydantic import BaseModel

    from aiotoolcache.integrations import _fastmcp_payloads as payloads
    from aiotoolcache.integrations import _fastmcp_requests as request_info
    from aiotoolcache.integrations._fastmcp_serve import (
        prompt_result_payload,
        resource_result_payload,
        serve,
        stored,
        tool_result_payload,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.fastmcp needs FastMCP 4.x: pip install 'aiotoolcache[fastmcp]'"
    ) from exc

from aiotoolcache import calls, control
from aiotoolcache.errors import ConfigurationError, NotCached
from aiotoolcache.integrations._common import (
    ContextToolNotice,
    ToolDecision,
    decide,
    ensure_layer,
    partition_for_token,
)
from aiotoolcache.integrations._fastmcp_components import component_set_version
from aiotoolcache.integrations._fastmcp_context import takes_context
from aiotoolcache.layers import LayerConfig
from aiotoolcache.toolcache import server_tag

if TYPE_CHECKING:
    from aiotoolcache.toolcache import ToolCache

__all__ = ["DEFAULT_PROMPTS_LAYER", "DEFAULT_RESOURCES_LAYER", "ToolCacheMiddleware"]

DEFAULT_RESOURCES_LAYER = LayerConfig(ttl=3600.0)
"""Policy of the ``resources`` layer when the cache has none."""

DEFAULT_PROMPTS_LAYER = LayerConfig(ttl=3600.0)
"""Policy of the ``prompts`` layer when the cache has none."""

ComponentT = TypeVar("ComponentT", bound=BaseModel)
PartitionFn = Callable[[MiddlewareContext[Any]], str | None]
log = logging.getLogger("aiotoolcache.integrations.fastmcp")


def token_partition(context: MiddlewareContext[Any]) -> str | None:
    """The default partition: SHA-256 of the caller's access token, None when anonymous."""
    token = get_access_token()
    if token is None:
        return None
    return partition_for_token(token.token)


# -- the middleware -----------------------------------------------------------------------------


class ToolCacheMiddleware(Middleware):
    """ToolCacheMiddleware serves repeated MCP requests to a FastMCP server from a ToolCache.

    Each method has its own switch and TTL (None: the layer's TTL):
    ``list_tools``/``list_tools_ttl``, ``call_tool``/``call_tool_ttl``,
    ``list_resources``/``list_resources_ttl`` (also resource templates),
    ``read_resource``/``read_resource_ttl``, ``list_prompts``/``list_prompts_ttl``
    and ``get_prompt``/``get_prompt_ttl``. ``server_id`` names the server in
    keys and tags (default: the FastMCP server's name). ``partition`` maps a
    request to its partition (default: ``token_partition``).
    """

    def __init__(
        self,
        cache: ToolCache,
        *,
        server_id: str | None = None,
        list_tools: bool = True,
        list_tools_ttl: float | None = None,
        call_tool: bool = True,
        call_tool_ttl: float | None = None,
        list_resources: bool = True,
        list_resources_ttl: float | None = None,
        read_resource: bool = True,
        read_resource_ttl: float | None = None,
        list_prompts: bool = True,
        list_prompts_ttl: float | None = None,
        get_prompt: bool = True,
        get_prompt_ttl: float | None = None,
        allow_tools: Iterable[str] = (),
        deny_tools: Iterable[str] = (),
        partition: PartitionFn | None = None,
        resources_layer: str = "resources",
        prompts_layer: str = "prompts",
    ) -> None:
        if server_id is not None and not server_id:
            raise ConfigurationError("server_id must be a non-empty string or None")
        self.cache = cache
        self.server_id = server_id
        self.list_tools_enabled, self.list_tools_ttl = list_tools, list_tools_ttl
        self.call_tool_enabled, self.call_tool_ttl = call_tool, call_tool_ttl
        self.list_resources_enabled, self.list_resources_ttl = list_resources, list_resources_ttl
        self.read_resource_enabled, self.read_resource_ttl = read_resource, read_resource_ttl
        self.list_prompts_enabled, self.list_prompts_ttl = list_prompts, list_prompts_ttl
        self.get_prompt_enabled, self.get_prompt_ttl = get_prompt, get_prompt_ttl
        self.allow_tools = frozenset(allow_tools)
        self.deny_tools = frozenset(deny_tools)
        self._partition_fn: PartitionFn = partition or token_partition
        # Only a partition of the user's own says which part of a request's context matters.
        self._context_partitioned = partition is not None
        self._context_notice = ContextToolNotice(
            log,
            "Context (or another injected parameter)",
            "Pass ToolCacheMiddleware(partition=lambda context: ...) returning the part of the "
            "request the result depends on (e.g. the session id or the tenant) to cache it per "
            "that value.",
        )
        self.resources_layer = ensure_layer(cache, resources_layer, DEFAULT_RESOURCES_LAYER)
        self.prompts_layer = ensure_layer(cache, prompts_layer, DEFAULT_PROMPTS_LAYER)

    # -- identity -----------------------------------------------------------------------
    def _server_id(self, context: MiddlewareContext[Any]) -> str:
        if self.server_id is not None:
            return self.server_id
        ctx = context.fastmcp_context
        if ctx is not None:
            return ctx.fastmcp.name
        return "fastmcp"

    async def invalidate(self, server_id: str | None = None) -> None:
        """Drop everything cached about the server (every layer, every partition)."""
        target = server_id or self.server_id
        if target is None:
            raise ConfigurationError("pass server_id (the middleware has none configured)")
        await self.cache.invalidate_server(target)

    # -- policy -------------------------------------------------------------------------
    def tool_decision(self, tool: Tool | None, name: str, server_id: str) -> ToolDecision:
        """What a call of ``tool`` (called as ``name``) does: cached or not, a write or not.

        The server's own annotations are trusted; the allow and deny lists and
        the tool's ``ToolPolicy`` come first, and annotations never loosen a deny.
        """
        decision = decide(
            self.cache,
            server_id,
            name,
            tool.annotations if tool is not None else None,
            allowed=name in self.allow_tools,
            denied=name in self.deny_tools or tool is None,
        )
        if decision.cached and tool is not None and request_info.may_run_as_task(tool):
            return ToolDecision(decision.policy, False, decision.write)
        return decision

    def tool_cacheable(self, tool: Tool | None, name: str, server_id: str = "fastmcp") -> bool:
        """Whether results of ``tool`` (called as ``name``) may be cached."""
        return self.tool_decision(tool, name, self.server_id or server_id).cached

    # -- listings -------------------------------------------------------------------------
    async def _listing(
        self,
        context: MiddlewareContext[Any],
        call_next: CallNext[Any, Sequence[Any]],
        kind: str,
        base: type[ComponentT],
        ttl: float | None,
    ) -> Sequence[ComponentT]:
        ctx = context.fastmcp_context
        version = await component_set_version(ctx) if ctx is not None else None
        if version is None:
            return await call_next(context)
        server_id = self._server_id(context)
        listing: Sequence[ComponentT] = await serve(
            self.cache.discovery,
            context,
            ("fastmcp." + kind, server_id, version),
            partition_of=self._partition_fn,
            label=server_id,
            ttl=ttl,
            tags=[server_tag(server_id)],
            handler=lambda: call_next(context),
            dump=lambda components: payloads.dump_components(components, base),
            restore=lambda data: payloads.load_components(data, base),
        )
        return listing

    async def on_list_tools(
        self,
        context: MiddlewareContext[mcp_types.ListToolsRequest],
        call_next: CallNext[mcp_types.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        if not self.list_tools_enabled:
            return await call_next(context)
        return await self._listing(context, call_next, "list_tools", Tool, self.list_tools_ttl)

    async def on_list_resources(
        self,
        context: MiddlewareContext[mcp_types.ListResourcesRequest],
        call_next: CallNext[mcp_types.ListResourcesRequest, Sequence[Resource]],
    ) -> Sequence[Resource]:
        if not self.list_resources_enabled:
            return await call_next(context)
        return await self._listing(
            context, call_next, "list_resources", Resource, self.list_resources_ttl
        )

    async def on_list_resource_templates(
        self,
        context: MiddlewareContext[mcp_types.ListResourceTemplatesRequest],
        call_next: CallNext[mcp_types.ListResourceTemplatesRequest, Sequence[ResourceTemplate]],
    ) -> Sequence[ResourceTemplate]:
        if not self.list_resources_enabled:
            return await call_next(context)
        return await self._listing(
            context, call_next, "list_resource_templates", ResourceTemplate, self.list_resources_ttl
        )

    async def on_list_prompts(
        self,
        context: MiddlewareContext[mcp_types.ListPromptsRequest],
        call_next: CallNext[mcp_types.ListPromptsRequest, Sequence[Prompt]],
    ) -> Sequence[Prompt]:
        if not self.list_prompts_enabled:
            return await call_next(context)
        return await self._listing(
            context, call_next, "list_prompts", Prompt, self.list_prompts_ttl
        )

    # -- tool calls -------------------------------------------------------------------------
    async def on_call_tool(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        message = context.message
        name = message.name
        if (
            not self.call_tool_enabled
            or message.task is not None  # the outcome arrives later, outside this call
            or context.fastmcp_context is None
        ):
            return await call_next(context)
        server = context.fastmcp_context.fastmcp
        tool = await server.get_tool(
            name, request_info.version_spec(request_info.requested_version(message))
        )
        server_id = self._server_id(context)
        decision = self.tool_decision(tool, name, server_id)
        directive = None
        if decision.policy.client_directives:
            directive = control.directive_from_meta(request_info.request_meta(context))
        try:
            with control.applied(directive):
                return await self._call(context, call_next, tool, server_id, decision)
        except NotCached as exc:
            # An error result the client can read, not a crash of the request.
            raise ToolError(f"{name}: {exc}") from exc

    async def _call(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
        tool: Tool | None,
        server_id: str,
        decision: ToolDecision,
    ) -> ToolResult:
        if decision.write:
            # A continuation leg finishes the call an input-required ask paused.
            return await calls.run_write(
                self.cache,
                server_id,
                decision.policy,
                lambda: call_next(context),
                partition=self._partition_fn(context),
            )
        if not decision.cached or request_info.is_continuation(context):
            return await calls.run_uncached(lambda: call_next(context))
        assert tool is not None
        if not self._context_partitioned and takes_context(tool):
            self._context_notice(tool.name)
            return await calls.run_uncached(lambda: call_next(context))
        return await self._cached_call(context, call_next, tool, server_id, decision)

    async def _cached_call(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
        tool: Tool,
        server_id: str,
        decision: ToolDecision,
    ) -> ToolResult:
        message = context.message
        name = message.name
        arguments = dict(message.arguments or {})
        variant = None if tool.version is None and not tool.meta else [tool.version, tool.meta]
        policy = decision.policy
        key = (*calls.policy_key("fastmcp.call_tool", server_id, name, arguments, policy), variant)
        partition = self._partition_fn(context)

        def through(load: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
            # The policy's read-through: its TTL, its tags (so writes find the entry),
            # min_load_time and max_value_bytes.
            return calls.read_through(
                self.cache.results,
                self.cache.policies,
                policy,
                self.cache.codec,
                key,
                server_id,
                name,
                load,
                partition=partition,
                ttl=self.call_tool_ttl,
                should_cache=stored,
            )

        result: ToolResult = await serve(
            self.cache.results,
            context,
            key,
            partition_of=self._partition_fn,
            label=name,
            ttl=self.call_tool_ttl if self.call_tool_ttl is not None else policy.ttl,
            tags=self.cache.policies.read_tags(server_id, name),
            handler=lambda: call_next(context),
            dump=tool_result_payload,
            restore=payloads.load_tool_result,
            through=through,
        )
        return result

    # -- resources and prompts ----------------------------------------------------------------
    async def on_read_resource(
        self,
        context: MiddlewareContext[mcp_types.ReadResourceRequestParams],
        call_next: CallNext[mcp_types.ReadResourceRequestParams, ResourceResult],
    ) -> ResourceResult:
        await self.check_resource_access(context)
        uri = str(context.message.uri)
        ctx = context.fastmcp_context
        if not self.read_resource_enabled or request_info.is_continuation(context) or ctx is None:
            return await call_next(context)
        requires_live = getattr(ctx.fastmcp, "_requires_live_resource", None)
        if requires_live is not None and requires_live(uri):
            return await call_next(context)
        server_id = self._server_id(context)
        result: ResourceResult = await serve(
            self.resources_layer,
            context,
            (
                "fastmcp.read_resource",
                server_id,
                uri,
                request_info.requested_version(context.message),
            ),
            partition_of=self._partition_fn,
            label="resource",
            ttl=self.read_resource_ttl,
            tags=[server_tag(server_id), f"resource:{server_id}/{uri}"],
            handler=lambda: call_next(context),
            dump=resource_result_payload,
            restore=payloads.load_resource_result,
        )
        return result

    async def on_get_prompt(
        self,
        context: MiddlewareContext[mcp_types.GetPromptRequestParams],
        call_next: CallNext[mcp_types.GetPromptRequestParams, PromptResult],
    ) -> PromptResult:
        message = context.message
        if not self.get_prompt_enabled or request_info.is_continuation(context):
            return await call_next(context)
        server_id = self._server_id(context)
        result: PromptResult = await serve(
            self.prompts_layer,
            context,
            (
                "fastmcp.get_prompt",
                server_id,
                message.name,
                dict(message.arguments or {}),
                request_info.requested_version(message),
            ),
            partition_of=self._partition_fn,
            label=message.name,
            ttl=self.get_prompt_ttl,
            tags=[server_tag(server_id), f"prompt:{server_id}/{message.name}"],
            handler=lambda: call_next(context),
            dump=prompt_result_payload,
            restore=payloads.load_prompt_result,
        )
        return result
