"""OpenAI Agents SDK integration: function tools whose results come from the cache.

`cached_function_tool` returns a copy of a ``FunctionTool`` whose
invocations are answered from aiotoolcache's results layer when the same
arguments (in any order) were seen before; `cached_function_tools`
applies it to a list of tools under an allow / deny policy:

```python
from agents import Agent, function_tool
from aiotoolcache.integrations.openai_agents import cached_function_tool

@function_tool
async def get_weather(city: str) -> str: ...

agent = Agent(name="a", tools=[cached_function_tool(get_weather, cache, ttl=300)])
```
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

try:
    from agents import FunctionTool
    from agents.function_schema import function_schema
    from agents.tool import ToolOutputFileContent, ToolOutputImage, ToolOutputText
    from agents.tool_context import ToolContext
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiotoolcache.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'aiotoolcache[openai-agents]'"
    ) from exc

from aiotoolcache import ToolCache
from aiotoolcache.integrations._common import (
    LISTS,
    ContextToolNotice,
    allow_policy,
    allowed,
    call_through,
    decide,
    is_plain,
    names,
    uncached,
)

__all__ = ["cached_function_tool", "cached_function_tools"]

_STRUCTURED_OUTPUTS = (ToolOutputText, ToolOutputImage, ToolOutputFileContent)

Invoker = Callable[[ToolContext[Any], str], Awaitable[Any]]
PartitionFor = Callable[[ToolContext[Any]], "str | None"]
T = TypeVar("T")
log = logging.getLogger("aiotoolcache.integrations.openai_agents")
# Set on the implementation of a ``@function_tool``: the Python function it calls.
_WRAPPED_CALLABLE = "__agents_function_tool_wrapped_callable__"


def _to_plain(output: Any) -> Any:
    """Return a plain form of a tool output the SDK treats the same way, or raise TypeError.

    ``ToolOutputText`` / ``ToolOutputImage`` / ``ToolOutputFileContent`` (and
    lists of them) become their dict forms, which the SDK accepts in their place.
    """
    if isinstance(output, _STRUCTURED_OUTPUTS):
        return output.model_dump(mode="json", exclude_none=True)
    if (
        isinstance(output, list)
        and output
        and all(isinstance(item, _STRUCTURED_OUTPUTS) for item in output)
    ):
        return [item.model_dump(mode="json", exclude_none=True) for item in output]
    if is_plain(output):
        return output
    raise TypeError(f"{type(output).__name__} output is not cached")


def _caching_invoker(
    invoke: Invoker,
    cache: ToolCache,
    tool_name: str,
    *,
    ttl: float | None,
    partition: str | PartitionFor | None,
    server_id: str,
    should_cache: Callable[[Any], bool] | None,
    write: bool,
    context_bound: bool,
) -> Invoker:
    def dump(result: Any) -> dict[str, Any] | None:
        if should_cache is not None and not should_cache(result):
            return None
        try:
            return {"output": _to_plain(result)}
        except TypeError:
            return None

    async def invoke_cached(ctx: ToolContext[Any], input: str) -> Any:
        # The SDK's function tools carry no read-only marker: the lists and the policy decide.
        decision = decide(cache, server_id, tool_name, LISTS, denied=write)
        if context_bound:
            decision = uncached(decision)
        if decision.write or not decision.cached:
            return await call_through(
                cache,
                server_id,
                tool_name,
                None,
                lambda: invoke(ctx, input),
                dump=dump,
                restore=lambda payload: payload["output"],
                partition=None,
                ttl=ttl,
                decision=decision,
            )
        try:
            arguments = json.loads(input) if input.strip() else {}
        except ValueError:
            return await invoke(ctx, input)  # let the tool report its own parse error
        if not isinstance(arguments, dict):
            return await invoke(ctx, input)
        return await call_through(
            cache,
            server_id,
            tool_name,
            arguments,
            lambda: invoke(ctx, input),
            dump=dump,
            restore=lambda payload: payload["output"],
            partition=partition(ctx) if callable(partition) else partition,
            ttl=ttl,
            decision=decision,
        )

    return invoke_cached


def cached_function_tool(
    tool: FunctionTool,
    cache: ToolCache,
    *,
    ttl: float | None = None,
    partition: str | PartitionFor | None = None,
    server_id: str = "openai-agents",
    should_cache: Callable[[Any], bool] | None = None,
    write: bool = False,
) -> FunctionTool:
    """Return a copy of ``tool`` whose results are served from the cache when possible.

    The tool's ``ToolPolicy`` (``cache.tool_policy(server_id, name)``) applies:
    ``cache=False`` or a non-empty ``invalidates`` makes it a write. A write
    (also ``write=True``) is never cached; each call, however it ends, drops
    the cached results its policy names (default: all of ``server_id``'s), in
    every worker, before it returns or raises.

    The key is the tool's qualified name plus its JSON arguments in canonical
    form (argument order never matters), optionally within a ``partition``
    that no other partition can read. A tool whose function takes a
    ``RunContextWrapper`` (or ``ToolContext``), and any ``FunctionTool`` built
    by hand (its ``on_invoke_tool`` always gets the context), may answer from
    who is asking: it is cached only when ``partition`` is a function of the
    ``ToolContext``, which puts the part of the context the result depends on
    into the key (``lambda ctx: None`` says none does); otherwise it runs
    uncached and a WARNING says so when the tool is wrapped. The original tool is left unchanged;
    the copy keeps its schema, guardrails, approval policy and timeout.

    Never cached: exceptions raised by the tool and the error text the SDK
    sends the model in their place (for tools made with ``@function_tool`` the
    cache sits inside the SDK's failure handling, so a failure is never
    stored), outputs that are not plain data (str, numbers, bool, None, bytes,
    lists, str-keyed dicts, and the SDK's ``ToolOutputText`` / ``ToolOutputImage``
    / ``ToolOutputFileContent``, which a hit returns in dict form), and outputs
    rejected by ``should_cache``. For a ``FunctionTool`` built by hand with an
    ``on_invoke_tool`` that *returns* its error messages, pass ``should_cache``
    to recognise them.

    Args:
        tool: The tool to wrap.
        cache: The ``ToolCache`` to use.
        ttl: Seconds a result stays fresh; ``None`` uses the results layer's TTL.
        partition: A fixed partition, or ``(ToolContext) -> str | None``, e.g.
            ``lambda ctx: ctx.context.user_id``; a function also caches tools
            that take the context, each within its caller's partition.
        server_id: The cache's tool namespace for these results;
            ``await cache.invalidate_server(server_id)`` drops them all.
        should_cache: Optional predicate on the tool's output; ``False`` returns
            it without storing it.
    """
    if not isinstance(tool, FunctionTool):
        raise TypeError(f"cached_function_tool wraps a FunctionTool, got {type(tool).__name__}")
    name = tool.qualified_name
    context_bound = not write and not callable(partition) and _takes_context(tool)
    if context_bound:
        ContextToolNotice(
            log,
            "RunContextWrapper (or is built by hand)",
            "Pass cached_function_tool(..., partition=lambda ctx: ...) returning the part of "
            "the context the result depends on (e.g. ctx.context.user_id, or None when nothing "
            "in it matters) to cache it per that value.",
        )(name)
    options: dict[str, Any] = {
        "ttl": ttl,
        "partition": partition,
        "server_id": server_id,
        "should_cache": should_cache,
        "write": write,
        "context_bound": context_bound,
    }
    new_tool = copy.copy(tool)
    invoker: Any = new_tool.on_invoke_tool
    inner = getattr(invoker, "_invoke_tool_impl", None)
    bind = getattr(invoker, "__agents_bind_function_tool__", None)
    if callable(inner) and callable(bind):
        # A tool made by @function_tool: its invoker turns exceptions into an
        # error message for the model. Cache the implementation inside it, so
        # exceptions reach that handler and never the cache.
        cached_impl = _caching_invoker(inner, cache, name, **options)
        # Carry the markers the SDK reads from the implementation (argument
        # preparation for approvals, the wrapped Python callable).
        functools.update_wrapper(cached_impl, inner)
        new_invoker = copy.copy(invoker)
        new_invoker._invoke_tool_impl = cached_impl
        new_invoker._function_tool = None
        new_tool.on_invoke_tool = new_invoker.__agents_bind_function_tool__(new_tool)
    else:
        new_tool.on_invoke_tool = _caching_invoker(invoker, cache, name, **options)
    return new_tool


def _takes_context(tool: FunctionTool) -> bool:
    """Whether ``tool``'s function takes the run context (unknown, e.g. built by hand: yes)."""
    implementation = getattr(tool.on_invoke_tool, "_invoke_tool_impl", None)
    function = getattr(implementation, _WRAPPED_CALLABLE, None)
    if not callable(function):
        return True
    try:
        return function_schema(function).takes_context
    except Exception:  # a signature the SDK's own parser refuses: assume it takes one
        return True


def cached_function_tools(
    tools: Sequence[T],
    cache: ToolCache,
    *,
    allow_tools: Collection[str] | Callable[[FunctionTool], bool] | None = None,
    deny_tools: Collection[str] = (),
    ttl: float | None = None,
    partition: str | PartitionFor | None = None,
    server_id: str = "openai-agents",
    should_cache: Callable[[Any], bool] | None = None,
) -> list[T]:
    """Return ``tools`` with each ``FunctionTool`` wrapped: cached reads, or invalidating writes.

    By default **every** ``FunctionTool`` is cached except those named in
    ``deny_tools``; pass ``allow_tools`` (tool names, or a predicate on the tool) to cache
    only the tools it accepts; ``deny_tools`` always wins. The SDK's function tools
    carry no read-only marker, so a ``FunctionTool`` the lists exclude is a write:
    it runs uncached and each call, however it ends, drops ``server_id``'s cached
    results (narrow that with ``ToolPolicy(invalidates=[...])``, or ``[]``).
    Other tools (hosted tools, MCP servers' tools) are returned unchanged.
    Cache only tools whose result depends on their arguments alone; a tool
    that takes the run context is cached only under a ``partition`` function
    (see ``cached_function_tool``).
    """
    allow = allow_policy(allow_tools)
    deny = names(deny_tools)
    out: list[T] = []
    for tool in tools:
        if isinstance(tool, FunctionTool):
            wrapped = cached_function_tool(
                tool,
                cache,
                ttl=ttl,
                partition=partition,
                server_id=server_id,
                should_cache=should_cache,
                write=not allowed(tool, (tool.name, tool.qualified_name), allow, deny),
            )
            out.append(wrapped)  # type: ignore[arg-type]
        else:
            out.append(tool)
    return out
