"""What a FastMCP tool call depends on beyond its arguments: its request's context, a human.

A tool whose function takes a ``Context`` (or another injected parameter:
``UserSession``, ``CurrentContext()``, ``Depends(...)``) can answer from who is
asking — the session's state, the access token, the request headers — which
its arguments do not show. A tool that asks the client during the call
(``ctx.elicit``, sampling) answers from a human's reply. The middleware
caches neither on the arguments alone.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastmcp.server.dependencies import without_injected_parameters
from fastmcp.tools.base import Tool

__all__ = ["HUMAN_REQUESTS", "HumanAsks", "takes_context"]

HUMAN_REQUESTS = frozenset({"elicitation/create", "sampling/createMessage"})
"""Server-to-client requests whose answer comes from the user (or a model the user oversees)."""

ResultT = TypeVar("ResultT")


def takes_context(tool: Tool) -> bool:
    """Whether ``tool``'s function gets parameters the client does not give (``Context``, ...).

    A transformed tool is judged by the tool it forwards to; tools with no
    function of this server (a proxy's, a mounted server's) get none of its
    context. A function that cannot be inspected counts as taking one.
    """
    while True:
        fn = getattr(tool, "fn", None)
        if callable(fn) and _function_takes_context(fn):
            return True
        parent = getattr(tool, "parent_tool", None)
        if not isinstance(parent, Tool):
            return False
        tool = parent


@functools.lru_cache(maxsize=4096)
def _function_takes_context(fn: Callable[..., Any]) -> bool:
    try:
        return without_injected_parameters(fn) is not fn
    except Exception:  # a signature FastMCP's own inspection refuses: assume it takes one
        return True


class HumanAsks:
    """HumanAsks counts the requests for a human's answer one tool call sends to its client.

    On a handshake-era connection ``ctx.elicit`` and sampling are requests the
    server sends in the middle of the call, through the request's own
    ``ServerSession`` (one per inbound request): while ``observe`` runs, that
    session's ``send_request`` is watched, so only this call's requests count.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0  # requests in HUMAN_REQUESTS sent while observe() ran

    async def observe(self, session: Any, call: Callable[[], Awaitable[ResultT]]) -> ResultT:
        """Return ``await call()``, counting the human requests ``session`` sends meanwhile."""
        if session is None:
            return await call()  # no client to ask
        send_request = session.send_request
        if "send_request" in vars(session):
            # Another observer already watches this session: assume a human was asked.
            self.count += 1
            return await call()

        async def watched(request: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(request, "method", None) in HUMAN_REQUESTS:
                self.count += 1
            return await send_request(request, *args, **kwargs)

        session.send_request = watched  # shadows the method on this request's session only
        try:
            return await call()
        finally:
            del session.send_request
