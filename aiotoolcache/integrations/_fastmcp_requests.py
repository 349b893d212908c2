"""What a FastMCP request says beyond its arguments: its ``_meta``, version, session, ask state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastmcp.server.middleware.middleware import MiddlewareContext
from fastmcp.tools.base import Tool
from fastmcp.utilities.versions import VersionSpec

__all__ = [
    "is_continuation",
    "may_run_as_task",
    "request_meta",
    "request_session",
    "requested_version",
    "version_spec",
]


def request_meta(context: MiddlewareContext[Any]) -> Any:
    """The request's ``_meta``: on the message, or (as FastMCP passes it) the request context."""
    meta = getattr(context.message, "meta", None)
    if isinstance(meta, Mapping):
        return meta
    try:
        request_context = context.fastmcp_context.request_context  # type: ignore[union-attr]
    except (AttributeError, LookupError, RuntimeError):
        return None
    return getattr(request_context, "meta", None)


def request_session(context: MiddlewareContext[Any]) -> Any:
    """The request's own ``ServerSession`` (None outside a client request)."""
    try:
        return context.fastmcp_context.session  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return None


def may_run_as_task(tool: Tool) -> bool:
    if tool.task_config.supports_tasks():
        return True
    return tool.execution is not None and tool.execution.task_support not in (None, "forbidden")


def is_continuation(context: MiddlewareContext[Any]) -> bool:
    """Whether this request answers an earlier input-required ask (it must bypass the cache)."""
    ctx = context.fastmcp_context
    if ctx is None:
        return False
    return ctx.input_responses is not None or ctx.request_state is not None


def requested_version(message: Any) -> Any:
    """The FastMCP component version a request selects (request ``_meta.fastmcp.version``)."""
    meta = getattr(message, "meta", None)
    if not isinstance(meta, Mapping):
        return None
    fastmcp_meta = meta.get("fastmcp")
    if not isinstance(fastmcp_meta, Mapping):
        return None
    return fastmcp_meta.get("version")


def version_spec(selector: Any) -> VersionSpec | None:
    if isinstance(selector, str):
        return VersionSpec(eq=selector)
    if isinstance(selector, Mapping):
        fields = {name: selector[name] for name in ("eq", "gte", "lt") if name in selector}
        if all(isinstance(value, str) for value in fields.values()) and fields:
            return VersionSpec(**fields)
    return None
