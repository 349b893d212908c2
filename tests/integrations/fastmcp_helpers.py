"""Helpers shared by the FastMCP and MCP client tests (they need FastMCP installed)."""

from __future__ import annotations

from typing import Any

from fastmcp.server.middleware.middleware import CallNext, Middleware, MiddlewareContext


class RequestCounter(Middleware):
    """Counts the requests that reach it: added inside a cache, those the cache let through."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def on_request(
        self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]
    ) -> Any:
        self.calls.append(str(context.method))
        return await call_next(context)

    def count(self, method: str) -> int:
        return self.calls.count(method)
