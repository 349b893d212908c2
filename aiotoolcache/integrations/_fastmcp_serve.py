"""The read-through every request ToolCacheMiddleware caches goes through, and what it stores.

An answer is served from its layer when stored and readable, else the
request's own handler runs. What is stored is the answer's plain data, and
only when it reads back: task results, input-required asks, error results,
answers built from a human's reply (elicitation, sampling) and answers that
do not read back are served, never stored. A stored entry that cannot be read
is a miss: the handler runs and its answer replaces the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastmcp.prompts.base import InputRequiredPromptResult, PromptResult
from fastmcp.resources.base import InputRequiredResourceResult, ResourceResult
from fastmcp.server.middleware.middleware import MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, ToolResult

from aiotoolcache.integrations import _fastmcp_payloads as payloads
from aiotoolcache.integrations import _fastmcp_requests as request_info
from aiotoolcache.integrations._common import Uncached
from aiotoolcache.integrations._fastmcp_context import HumanAsks

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer

__all__ = [
    "prompt_result_payload",
    "resource_result_payload",
    "serve",
    "stored",
    "tool_result_payload",
]

# The middleware's logger: what it skips or misses is reported under its name.
log = logging.getLogger("aiotoolcache.integrations.fastmcp")


def stored(value: Any) -> bool:
    """True for a loader's value the layer may store (not one only served)."""
    return not isinstance(value, Uncached)


_NOTHING: Any = object()


class _Own:
    """What this request's own loader stored and served; unset when another request's was used."""

    __slots__ = ("result", "value")

    def __init__(self) -> None:
        self.value: Any = _NOTHING  # the payload the loader returned (the very object)
        self.result: Any = None  # that payload read back: what the client is served


async def serve(
    layer: Layer,
    context: MiddlewareContext[Any],
    key: Any,
    *,
    partition_of: Callable[[MiddlewareContext[Any]], str | None],
    label: str,
    ttl: float | None,
    tags: list[str],
    handler: Callable[[], Awaitable[Any]],
    dump: Callable[[Any], Any],
    restore: Callable[[Any], Any],
    through: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
) -> Any:
    """The answer to a request: from ``layer`` when stored and readable, else ``handler()``.

    ``dump`` makes the handler's answer plain data to store (None: served,
    never stored); ``restore`` reads stored data back, raising
    ``Undecodable`` when it does not fit. A stored entry that cannot be read
    is a miss, counted in ``corrupt``: the handler runs and its answer
    replaces the entry, so no client ever sees a decoding error.
    ``partition_of(context)`` is the request's partition. ``through(load)``
    replaces the plain ``layer.get_or_load`` (a tool policy's read-through).
    """
    partition = partition_of(context)
    own = _Own()
    # An answer built from a human's reply (elicitation, sampling) is served, never stored.
    asks = HumanAsks()
    session = request_info.request_session(context)

    def answer() -> Awaitable[Any]:
        return asks.observe(session, handler)

    async def load() -> Any:
        result = await answer()
        payload = None if asks.count else dump(result)
        if payload is None:
            return Uncached(result)
        try:
            own.result = restore(payload)
        except payloads.Undecodable as exc:
            # An answer this middleware could not read back is served, never
            # stored (the layer counts it in skipped_writes).
            log.debug("not caching an answer in %s: %s", layer.name, exc)
            return Uncached(result)
        own.value = payload
        return payload

    if through is not None:
        value = await through(load)
    else:
        value = await layer.get_or_load(
            key, load, ttl, tags=tags, partition=partition, label=label, should_cache=stored
        )
    if isinstance(value, Uncached):
        return value.value
    if value is own.value:
        return own.result
    try:
        return restore(value)
    except payloads.Undecodable as exc:
        log.debug("undecodable entry in %s (%s): a miss", layer.name, exc)
    layer.counters.corrupt += 1
    layer.counters.misses += 1
    result, _ = await layer.entries.run_loader(answer)
    payload = None if asks.count else dump(result)
    if payload is not None:
        try:
            restored = restore(payload)
        except payloads.Undecodable:
            pass
        else:
            await layer.set(key, payload, ttl, tags=tags, partition=partition, label=label)
            return restored
    await layer.delete(key, partition=partition, label=label)
    return result


# What may be stored of each answer (None: it is served, never stored).
def tool_result_payload(result: Any) -> dict[str, Any] | None:
    if (
        not isinstance(result, ToolResult)
        or isinstance(result, InputRequiredToolResult)
        or result.is_error
    ):
        return None  # task results, input-required asks and errors
    return payloads.dump_tool_result(result)


def resource_result_payload(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, ResourceResult) or isinstance(result, InputRequiredResourceResult):
        return None
    return payloads.dump_resource_result(result)


def prompt_result_payload(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, PromptResult) or isinstance(result, InputRequiredPromptResult):
        return None
    return payloads.dump_prompt_result(result)
