"""A human in the loop of an MCP client: the elicitation and sampling requests it answered.

A server on an older protocol asks its client mid-call (``elicitation/create``,
``sampling/createMessage``); a result built from such an answer depends on
what a person said, so ``ToolCallCache`` returns it and never stores it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.client.session import ClientSession

__all__ = ["HumanAsks"]


class HumanAsks:
    """HumanAsks counts the elicitation and sampling requests one session has answered.

    A tool call during which the count moved may have been built from a human's
    answer (an older-protocol server asks mid-call): it is returned, never stored.
    Calls running at the same time on the session are all treated so, which errs
    on the side of not caching.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    @classmethod
    def of(cls, session: ClientSession) -> HumanAsks:
        """The counter of ``session``, wrapping its two callbacks the first time."""
        asks: HumanAsks | None = getattr(session, "_aiotoolcache_asks", None)
        if asks is not None:
            return asks
        asks = cls()
        for attribute in ("_elicitation_callback", "_sampling_callback"):
            answer = getattr(session, attribute, None)
            if answer is not None:
                setattr(session, attribute, asks._counting(answer))
        session._aiotoolcache_asks = asks  # type: ignore[attr-defined]
        return asks

    def _counting(self, answer: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any) -> Any:
            self.count += 1
            return await answer(*args)

        return counted
