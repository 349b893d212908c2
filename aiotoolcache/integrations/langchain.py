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

The middleware is async-first: the cache is an asyncio library, so use
``ainvoke`` / ``astream``. The store has both APIs: async on the caller's cache,
and synchronous too (``embed_documents``) when it owns its cache, which then
lives on a loop thread of the store's own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Literal

try:
    from langchain.agents.middleware import AgentMiddleware
    from langchain_core.messages import ToolMessage
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.langchain needs LangChain 1.x: "
        "pip install 'aiotoolcache[langchain]'"
    ) from exc

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.integrations._common import (
    ContextToolNotice,
    ToolDecision,
    allow_policy,
    allowed,
    annotations_in,
    call_through,
    decide,
    is_plain,
    names,
    uncached,
)
from aiotoolcache.integrations._langchain_human import answers_an_interrupt, takes_injected_args
from aiotoolcache.integrations._langchain_store import ToolCacheByteStore

if TYPE_CHECKING:
    from aiotoolcache import ToolCache

__all__ = ["ToolCacheByteStore", "ToolCacheMiddleware"]

PartitionFor = Callable[[ToolCallRequest], "str | None"]
ToolPolicy = Collection[str] | Callable[[str], bool]
log = logging.getLogger("aiotoolcache.integrations.langchain")


class ToolCacheMiddleware(AgentMiddleware):
    """Serve repeated LangChain tool calls from aiotoolcache's results layer.

    The cache key is the tool name plus its arguments in canonical form (dict
    order never matters), optionally within a ``partition`` (tenant, user, auth
    principal) that no other partition can read. A hit returns a fresh
    ``ToolMessage`` stamped with the *current* call's ``tool_call_id``; the tool
    does not run.

    Which tools are cached: by default **every tool the model gives all the
    arguments of**, except those named in ``deny_tools``. A tool with injected
    arguments (``ToolRuntime``, ``InjectedState``, ``InjectedStore``,
    ``InjectedToolArg``, ``InjectedToolCallId``) may answer from who is asking,
    which ``tool_call["args"]`` never shows: it is cached only when
    ``partition`` is a function of the request, which puts the part of the
    context the result depends on into the key (a WARNING names such a tool
    once). Pass ``allow_tools`` (a collection of tool names, or a predicate taking
    the tool name) to cache only the tools it accepts; ``deny_tools`` always wins.
    Cache only tools whose result depends on their arguments alone (lookups,
    searches, pure computations), never tools with side effects: a tool the
    lists exclude (or whose ``ToolPolicy`` says ``cache=False``, or whose
    ``metadata`` carries MCP annotations without ``readOnlyHint``) is a write,
    and each call of it, however it ends, drops ``server_id``'s cached results.

    Never cached, nor served from the cache: the leg of a call that resumes
    after a LangGraph ``interrupt()`` (a human answered it), so the same call
    in another thread interrupts again. Never cached: exceptions raised by the
    tool (including the ``GraphInterrupt`` of ``interrupt()``; they propagate as usual, and a
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
            reading it from the request (e.g. ``lambda r: r.runtime.context.user_id``);
            a function also caches the tools with injected arguments, each
            within its caller's partition.
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
        self._context_notice = ContextToolNotice(
            log,
            "ToolRuntime or an injected argument",
            "Pass ToolCacheMiddleware(partition=lambda request: ...) returning the part of the "
            "context the result depends on (e.g. request.runtime.context.user_id) to cache it "
            "per that value.",
        )

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

    def call_decision(self, request: ToolCallRequest) -> ToolDecision:
        """The ``decision`` for this very call: off for a resumed leg or an unkeyed context tool."""
        decision = self.decision(request)
        if not decision.cached:
            return decision
        if answers_an_interrupt(request):
            # A human answered an interrupt() of this call: never stored, never served.
            return uncached(decision)
        if not callable(self.partition) and takes_injected_args(request.tool):
            self._context_notice(request.tool_call["name"])
            return uncached(decision)
        return decision

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
            decision=self.call_decision(request),
        )

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        name = request.tool_call["name"]
        decision = self.call_decision(request)
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
