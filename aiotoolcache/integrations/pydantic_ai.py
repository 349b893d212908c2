"""Pydantic AI integration: a tool-result cache capability and a caching embedding model.

`ToolCacheCapability` hooks ``wrap_tool_execute`` so a repeated tool call
(same tool, same validated arguments in any order) is answered from the
results layer without running the tool. `CachedEmbeddingModel` wraps
any embedding model so each text is embedded once per model and settings:

```python
from pydantic_ai import Agent, Embedder
from aiotoolcache.integrations.pydantic_ai import CachedEmbeddingModel, ToolCacheCapability

agent = Agent(model, tools=[...], capabilities=[ToolCacheCapability(cache, ttl=300)])
embedder = Embedder(CachedEmbeddingModel("openai:text-embedding-3-small", cache))
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import KW_ONLY, dataclass, field
from hashlib import blake2b
from typing import Any

try:
    import orjson
    from pydantic_ai.capabilities import AbstractCapability, WrapToolExecuteHandler
    from pydantic_ai.embeddings import EmbeddingModel, EmbeddingResult
    from pydantic_ai.embeddings.result import EmbedInputType
    from pydantic_ai.embeddings.settings import EmbeddingSettings, merge_embedding_settings
    from pydantic_ai.embeddings.wrapper import WrapperEmbeddingModel
    from pydantic_ai.messages import ToolCallPart
    from pydantic_ai.tools import RunContext, ToolDefinition
    from pydantic_ai.toolsets.function import FunctionToolset, FunctionToolsetTool
    from pydantic_ai.usage import RequestUsage
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.pydantic_ai needs Pydantic AI: "
        "pip install 'aiotoolcache[pydantic-ai]'"
    ) from exc

from aiotoolcache import ToolCache
from aiotoolcache.integrations._common import (
    ContextToolNotice,
    ToolDecision,
    allowed,
    annotations_in,
    call_through,
    decide,
    is_plain,
    uncached,
)

__all__ = ["CachedEmbeddingModel", "ToolCacheCapability"]

log = logging.getLogger("aiotoolcache.integrations.pydantic_ai")

# Settings that never change the vectors a model returns.
_NEUTRAL_SETTINGS = frozenset({"extra_headers", "dimensions"})


@dataclass
class ToolCacheCapability(AbstractCapability[Any]):
    """Answer repeated tool calls from aiotoolcache's results layer.

    The key is the tool name plus its validated arguments in canonical JSON
    form (argument order never matters), optionally within a ``partition``
    (tenant, user, auth principal) that no other partition can read. On a hit
    the tool does not run, nor do the ``before_tool_execute`` /
    ``after_tool_execute`` hooks of capabilities inside this one.

    Which tools are cached: by default **every function tool that takes no
    ``RunContext``**, except those named in ``deny_tools``. A tool that takes
    one may answer from ``ctx.deps`` (the current user, tenant, database), which
    its arguments do not show: it is cached only when ``partition`` is a
    function of the ``RunContext``, which puts the part of the context the
    result depends on into the key (a WARNING names such a tool once). Pass
    ``allow_tools`` (a collection of tool names, or a predicate taking the
    ``ToolDefinition``) to cache only the tools it accepts; ``deny_tools``
    always wins. A tool whose ``metadata`` has ``{"cache": False}`` is never
    cached. Cache only tools whose result depends on their arguments alone,
    never tools with side effects: a tool excluded here (or by its
    ``ToolPolicy``, or by MCP annotations in its ``metadata``) is a write, and
    each call of it, however it ends, drops ``server_id``'s cached results.

    Never cached, nor served from the cache: a call a human approved
    (``ctx.tool_call_approved``, after ``ApprovalRequired`` or for a tool made
    with ``requires_approval=True``), so a later call asks again. Never cached:
    exceptions (including ``ModelRetry``, deferrals and approvals; they
    propagate unchanged and a concurrent identical call runs the tool
    itself), results that are not plain data (str, numbers, bool, None, bytes,
    lists and str-keyed dicts; with ``jsonable=True`` pydantic models and
    dataclasses are cached as their JSON form), and results rejected by
    ``cache_result``.

    Args:
        cache: The ``ToolCache`` to use.
        ttl: Seconds a result stays fresh; ``None`` uses the results layer's TTL.
        allow_tools: Tool names to cache, or a predicate ``(ToolDefinition) -> bool``;
            ``None`` (the default) allows every tool.
        deny_tools: Tool names never cached.
        partition: A fixed partition, or ``(RunContext) -> str | None``, e.g.
            ``lambda ctx: ctx.deps.user_id``; a function also caches the tools
            that take a ``RunContext``, each within its caller's partition.
        server_id: The cache's tool namespace for these results;
            ``await cache.invalidate_server(server_id)`` drops them all.
        cache_result: Optional predicate on the tool's return value; ``False``
            returns it without storing it.
        jsonable: Cache pydantic models, dataclasses and other values pydantic
            can serialise as their JSON form (a hit then returns that form).
    """

    cache: ToolCache
    _: KW_ONLY
    ttl: float | None = None
    allow_tools: Collection[str] | Callable[[ToolDefinition], bool] | None = None
    deny_tools: Collection[str] = ()
    partition: str | Callable[[RunContext[Any]], str | None] | None = None
    server_id: str = "pydantic-ai"
    cache_result: Callable[[Any], bool] | None = None
    jsonable: bool = False

    _context_notice: ContextToolNotice = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._context_notice = ContextToolNotice(
            log,
            "RunContext",
            "Pass ToolCacheCapability(partition=lambda ctx: ...) returning the part of the "
            "context the result depends on (e.g. ctx.deps.user_id) to cache it per that value.",
        )
        if isinstance(self.allow_tools, str):
            self.allow_tools = frozenset([self.allow_tools])
        if isinstance(self.deny_tools, str):
            self.deny_tools = frozenset([self.deny_tools])

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None  # holds a live cache: not constructible from an agent spec

    def is_cached(self, tool_def: ToolDefinition) -> bool:
        """Return whether calls to this tool go through the cache."""
        if tool_def.metadata is not None and tool_def.metadata.get("cache") is False:
            return False
        return allowed(tool_def, (tool_def.name,), self.allow_tools, self.deny_tools)

    def decision(self, tool_def: ToolDefinition) -> ToolDecision:
        """Return what a call does under the tool's policy: cached or not, a write or not.

        MCP annotations in the tool's ``metadata`` (MCP toolsets put them
        there) decide when present; otherwise the allow and deny lists do, and
        a tool they do not cache is a write that drops this server's cached results.
        """
        listed = self.is_cached(tool_def)
        return decide(
            self.cache,
            self.server_id,
            tool_def.name,
            annotations_in(tool_def.metadata),
            allowed=listed and self.allow_tools is not None,
            denied=not listed,
        )

    def _partition_for(self, ctx: RunContext[Any]) -> str | None:
        if callable(self.partition):
            return self.partition(ctx)
        return self.partition

    def _dump(self, result: Any) -> dict[str, Any] | None:
        if self.cache_result is not None and not self.cache_result(result):
            return None
        if is_plain(result):
            return {"result": result}
        if self.jsonable:
            try:
                converted = to_jsonable_python(result)
            except Exception:  # pydantic_core raises its own types for unknown objects
                return None
            if is_plain(converted):
                return {"result": converted}
        return None

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: dict[str, Any],
        handler: WrapToolExecuteHandler,
    ) -> Any:
        decision = self.decision(tool_def)
        if decision.cached:
            if ctx.tool_call_approved or tool_def.kind == "unapproved":
                # A human decided on this call: its result is never stored nor served.
                decision = uncached(decision)
            elif not callable(self.partition) and _takes_context(ctx, tool_def):
                self._context_notice(tool_def.name)
                decision = uncached(decision)
        try:
            key_args = to_jsonable_python(args) if decision.cached else None
        except Exception:  # arguments with no JSON form: run the tool uncached
            decision = ToolDecision(decision.policy, False, decision.write)
            key_args = None
        return await call_through(
            self.cache,
            self.server_id,
            tool_def.name,
            key_args,
            lambda: handler(args),
            dump=self._dump,
            restore=lambda payload: payload["result"],
            partition=self._partition_for(ctx),
            ttl=self.ttl,
            decision=decision,
        )


def _takes_context(ctx: RunContext[Any], tool_def: ToolDefinition) -> bool:
    """Whether the function behind ``tool_def`` takes a ``RunContext``.

    Only function tools can; tools of other toolsets (MCP servers) never
    see the run's context. A function tool that cannot be found counts as
    taking one.
    """
    manager = ctx.tool_manager
    if manager is None or manager.tools is None:
        return True
    tool: Any = manager.tools.get(tool_def.name)
    while not isinstance(tool, FunctionToolsetTool) and hasattr(tool, "source_tool"):
        tool = tool.source_tool  # a combined toolset's tool names the tool it came from
    if not isinstance(tool, FunctionToolsetTool):
        return False
    toolset = tool.toolset
    if not isinstance(toolset, FunctionToolset):
        return True
    function = toolset.tools.get(tool.original_name or tool_def.name)
    return function is None or function.takes_ctx


@dataclass(init=False)
class CachedEmbeddingModel(WrapperEmbeddingModel):
    """An embedding model that embeds each text once, then serves it from the embeddings layer.

    Vectors are keyed by provider, model name, input type (``query`` /
    ``document``), the dimensions setting and a digest of any other settings
    that can change the output, so a vector is never served for a request it
    was not computed for. Only the texts missing from the cache reach the
    wrapped model, in one call; ``usage`` on the result counts only those.

    Args:
        wrapped: The model to wrap, or a model name such as
            ``"openai:text-embedding-3-small"``.
        cache: The ``ToolCache`` to use.
        model_id: Overrides the ``provider:model`` part of the key, e.g. to
            share vectors between two clients of the same model.
        partition: Optional partition (tenant); partitions never share vectors.
    """

    cache: ToolCache = field(repr=False, compare=False)
    model_id: str | None = None
    partition: str | None = None

    def __init__(
        self,
        wrapped: EmbeddingModel | str,
        cache: ToolCache,
        *,
        model_id: str | None = None,
        partition: str | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.cache = cache
        self.model_id = model_id
        self.partition = partition

    def _cache_model(self, input_type: EmbedInputType, settings: EmbeddingSettings) -> str | None:
        base = self.model_id or f"{self.wrapped.system}:{self.wrapped.model_name}"
        model = f"pydantic-ai:{base}:{input_type}"
        relevant = {k: v for k, v in settings.items() if k not in _NEUTRAL_SETTINGS}
        if relevant:
            try:
                blob = orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)
            except TypeError:
                return None  # settings with no canonical form: do not cache
            model += ":" + blake2b(blob, digest_size=8).hexdigest()
        return model

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        input_type: EmbedInputType,
        settings: EmbeddingSettings | None = None,
    ) -> EmbeddingResult:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        merged = merge_embedding_settings(self.wrapped.settings, settings) or {}
        model = self._cache_model(input_type, merged)
        if not texts or model is None:
            return await self.wrapped.embed(inputs, input_type=input_type, settings=settings)
        loaded: list[EmbeddingResult] = []

        async def load(missing: list[str]) -> list[list[float]]:
            result = await self.wrapped.embed(missing, input_type=input_type, settings=settings)
            loaded.append(result)
            return [[float(x) for x in vector] for vector in result.embeddings]

        vectors = await self.cache.embed(
            texts,
            model=model,
            loader=load,
            dimensions=merged.get("dimensions"),
            partition=self.partition,
        )
        usage = RequestUsage()
        for result in loaded:
            usage = usage + result.usage
        last = loaded[-1] if loaded else None
        return EmbeddingResult(
            [list(v) for v in vectors],
            inputs=texts,
            input_type=input_type,
            model_name=last.model_name if last else self.model_name,
            provider_name=last.provider_name if last else self.system,
            usage=usage,
            provider_details=last.provider_details if last else None,
            provider_response_id=last.provider_response_id if last else None,
        )
