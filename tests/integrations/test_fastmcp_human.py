"""ToolCacheMiddleware never caches a result built from a human's answer or a caller's context."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastmcp")

import mcp_types
from fastmcp import Client, Context, FastMCP
from fastmcp.server.dependencies import get_context
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware
from tests.integrations.helpers import Counter

READ_ONLY = ToolAnnotations(read_only_hint=True)


def answering(*answers: str) -> tuple[Any, list[str]]:
    """An elicitation handler giving ``answers`` in turn, and the questions it was asked."""
    replies: Iterator[str] = iter(answers)
    asked: list[str] = []

    async def handler(message: str, response_type: Any, params: Any, context: Any) -> str:
        asked.append(message)
        return next(replies)

    return handler, asked


# -- context ------------------------------------------------------------------------------


async def test_a_tool_taking_context_is_not_cached_by_default(
    cache: atc.ToolCache, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    server = FastMCP("s")
    server.add_middleware(ToolCacheMiddleware(cache))

    @server.tool(annotations=READ_ONLY)
    async def my_orders(ctx: Context) -> str:
        counter.n += 1
        return f"orders of {await ctx.get_state('user')}"

    with caplog.at_level(logging.WARNING, "aiotoolcache.integrations.fastmcp"):
        async with Client(server, mode="legacy") as client:
            for _ in range(2):
                await client.call_tool("my_orders", {})
    assert counter.n == 2
    notices = [r.getMessage() for r in caplog.records if "my_orders" in r.getMessage()]
    assert len(notices) == 1 and "partition=lambda context" in notices[0]


async def test_a_partition_of_the_users_own_caches_context_tools(
    cache: atc.ToolCache, counter: Counter
) -> None:
    server = FastMCP("s")
    server.add_middleware(
        ToolCacheMiddleware(cache, partition=lambda c: c.fastmcp_context.session_id)
    )

    @server.tool(annotations=READ_ONLY)
    async def session_name(ctx: Context) -> str:
        counter.n += 1
        return f"session {ctx.session_id}"

    async with Client(server, mode="legacy") as one, Client(server, mode="legacy") as two:
        first = [(await c.call_tool("session_name", {})).data for c in (one, one, two)]
    assert first[0] == first[1] != first[2]
    assert counter.n == 2  # one's second call was a hit in one's partition


# -- elicitation and sampling -------------------------------------------------------------


async def test_an_elicited_answer_is_never_stored_on_an_older_protocol(
    cache: atc.ToolCache,
) -> None:
    server = FastMCP("s")
    # A partition opts context tools in: only noticing the elicitation keeps the answer out.
    server.add_middleware(ToolCacheMiddleware(cache, partition=lambda c: "everyone"))

    @server.tool(annotations=READ_ONLY)
    async def greet(ctx: Context) -> str:
        reply = await ctx.elicit("your name?", response_type=str)
        return f"hello {reply.data}"

    @server.tool(annotations=READ_ONLY)
    async def greet_again() -> str:  # reaches the context without a parameter
        reply = await get_context().elicit("your name?", response_type=str)
        return f"hello again {reply.data}"

    handler, asked = answering("alice", "bob", "carol", "dave")
    async with Client(server, elicitation_handler=handler, mode="legacy") as client:
        greetings = [(await client.call_tool(t, {})).data for t in ("greet", "greet")]
        greetings += [(await client.call_tool(t, {})).data for t in ("greet_again",) * 2]
    assert greetings == ["hello alice", "hello bob", "hello again carol", "hello again dave"]
    assert len(asked) == 4
    assert cache.stats().layers["results"].hits == 0


async def test_a_sampled_answer_is_never_stored(cache: atc.ToolCache) -> None:
    server = FastMCP("s")
    server.add_middleware(ToolCacheMiddleware(cache, partition=lambda c: "everyone"))
    replies = iter(["a haiku", "another haiku"])

    async def sample(messages: Any, params: Any, context: Any) -> str:
        return next(replies)

    @server.tool(annotations=READ_ONLY)
    async def poem() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            result = await get_context().session.create_message(
                messages=[
                    mcp_types.SamplingMessage(
                        role="user", content=mcp_types.TextContent(type="text", text="a poem")
                    )
                ],
                max_tokens=50,
            )
        assert isinstance(result.content, mcp_types.TextContent)
        return result.content.text

    async with Client(server, sampling_handler=sample, mode="legacy") as client:
        poems = [(await client.call_tool("poem", {})).data for _ in range(2)]
    assert poems == ["a haiku", "another haiku"]


async def test_tools_that_ask_nobody_stay_cached(cache: atc.ToolCache, counter: Counter) -> None:
    server = FastMCP("s")
    server.add_middleware(ToolCacheMiddleware(cache))

    @server.tool(annotations=READ_ONLY)
    def forecast(city: str) -> str:
        counter.n += 1
        return f"sunny in {city}"

    for mode in ("legacy", None):
        async with Client(server, **({"mode": mode} if mode else {})) as client:
            assert (await client.call_tool("forecast", {"city": "Paris"})).data == "sunny in Paris"
    assert counter.n == 1


async def test_a_resource_or_prompt_built_from_an_elicited_answer_is_never_stored(
    cache: atc.ToolCache,
) -> None:
    server = FastMCP("s")
    server.add_middleware(ToolCacheMiddleware(cache))

    @server.resource("data://me")
    async def me() -> str:
        reply = await get_context().elicit("your name?", response_type=str)
        return f"profile of {reply.data}"

    @server.prompt
    async def intro() -> str:
        reply = await get_context().elicit("your name?", response_type=str)
        return f"introduce {reply.data}"

    handler, asked = answering("alice", "bob", "carol", "dave")
    async with Client(server, elicitation_handler=handler, mode="legacy") as client:
        reads = [(await client.read_resource("data://me"))[0] for _ in range(2)]
        prompts = [(await client.get_prompt("intro")).messages[0].content for _ in range(2)]
    assert [getattr(r, "text", None) for r in reads] == ["profile of alice", "profile of bob"]
    assert [getattr(p, "text", None) for p in prompts] == ["introduce carol", "introduce dave"]
    assert len(asked) == 4
