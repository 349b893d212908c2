"""Helpers shared by the FastMCP and MCP client tests (they need FastMCP installed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastmcp.server.middleware.middleware import CallNext, Middleware, MiddlewareContext
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken


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


@contextmanager
def signed_in(token: str) -> Iterator[None]:
    """Make requests of clients opened inside this block carry ``token``."""
    reset = auth_context_var.set(
        AuthenticatedUser(AccessToken(token=token, client_id="client", scopes=[]))
    )
    try:
        yield
    finally:
        auth_context_var.reset(reset)
