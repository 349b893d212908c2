"""ToolCacheMiddleware follows the server's changes: writes however they end, and listings."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastmcp")

from fastmcp import Client, Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import Tool, ToolResult
from mcp_types import ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware
from tests.integrations.fastmcp_helpers import RequestCounter, signed_in

READ_ONLY = ToolAnnotations(read_only_hint=True)


def stateful_server(cache: atc.ToolCache) -> tuple[FastMCP, dict[str, int]]:
    """A server with a cached read of ``state["v"]`` and writes that change it, then fail."""
    state = {"v": 1}
    server = FastMCP("store")
    server.add_middleware(ToolCacheMiddleware(cache))

    @server.tool(annotations=READ_ONLY)
    def read() -> int:
        return state["v"]

    @server.tool
    def set_then_raise(v: int) -> str:
        state["v"] = v
        raise ToolError("stored, but the follow-up step failed")

    @server.tool
    def set_then_report_error(v: int) -> ToolResult:
        state["v"] = v
        return ToolResult(content="stored, but the audit log is down", is_error=True)

    return server, state


# -- writes ---------------------------------------------------------------------------------


async def test_a_write_that_raised_after_changing_state_still_invalidates(
    cache: atc.ToolCache,
) -> None:
    server, state = stateful_server(cache)
    async with Client(server) as client:
        assert (await client.call_tool("read", {})).data == 1
        with pytest.raises(ToolError, match="follow-up"):
            await client.call_tool("set_then_raise", {"v": 2})
        assert (await client.call_tool("read", {})).data == state["v"] == 2


async def test_a_write_that_returned_an_error_result_still_invalidates(
    cache: atc.ToolCache,
) -> None:
    server, state = stateful_server(cache)
    async with Client(server) as client:
        assert (await client.call_tool("read", {})).data == 1
        failed = await client.call_tool_mcp("set_then_report_error", {"v": 3})
        assert failed.is_error
        assert (await client.call_tool("read", {})).data == state["v"] == 3


# -- listings -------------------------------------------------------------------------------


def visibility_server(cache: atc.ToolCache, **options: Any) -> tuple[FastMCP, RequestCounter]:
    """A server whose ``unlock`` tool shows the hidden ``secret`` tool to its session."""
    server = FastMCP("vis")
    server.add_middleware(ToolCacheMiddleware(cache, **options))
    counter = RequestCounter()
    server.add_middleware(counter)

    @server.tool(annotations=READ_ONLY)
    async def unlock(ctx: Context) -> str:
        await ctx.enable_components(names={"secret"})
        return "ok"

    @server.tool(annotations=READ_ONLY)
    def secret() -> str:
        return "s"

    server.disable(names={"secret"})
    return server, counter


async def names(client: Client[Any]) -> list[str]:
    return sorted(tool.name for tool in await client.list_tools())


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_session_that_enables_components_sees_them_in_its_next_listing(
    cache: atc.ToolCache, mode: str
) -> None:
    server, counter = visibility_server(cache)
    options: dict[str, Any] = {"mode": "legacy"} if mode == "legacy" else {}
    # On 2026-07-28 connections visibility rules belong to an authenticated client.
    with signed_in("token-a"):
        async with Client(server, **options) as client:
            assert await names(client) == await names(client) == ["unlock"]
            assert counter.count("tools/list") == 1  # still cached while nothing changes
            await client.call_tool("unlock", {})
            assert await names(client) == ["secret", "unlock"]


async def test_a_session_s_visibility_never_reaches_another_session(
    cache: atc.ToolCache,
) -> None:
    server, _ = visibility_server(cache)  # anonymous callers share one partition
    async with Client(server, mode="legacy") as one, Client(server, mode="legacy") as two:
        await one.call_tool("unlock", {})
        assert await names(one) == ["secret", "unlock"]
        assert await names(two) == ["unlock"]


async def test_a_tool_added_or_removed_at_runtime_shows_in_every_listing(
    cache: atc.ToolCache,
) -> None:
    server, counter = visibility_server(cache)
    async with Client(server) as client:
        assert await names(client) == ["unlock"]
        server.add_tool(Tool.from_function(lambda: "new", name="added"))
        assert await names(client) == ["added", "unlock"]
        async with Client(server) as newcomer:
            assert await names(newcomer) == ["added", "unlock"]
        server.local_provider.remove_tool("added")
        assert await names(client) == ["unlock"]
    # One load per component set: the set after the removal is the first one again.
    assert counter.count("tools/list") == 2


async def test_a_tool_replaced_under_the_same_name_shows_its_new_description(
    cache: atc.ToolCache,
) -> None:
    server = FastMCP("replace", on_duplicate="replace")
    server.add_middleware(ToolCacheMiddleware(cache))
    server.add_tool(Tool.from_function(lambda: "x", name="lookup", description="old"))
    async with Client(server) as client:
        assert [t.description for t in await client.list_tools()] == ["old"]
        server.add_tool(Tool.from_function(lambda: "x", name="lookup", description="new"))
        assert [t.description for t in await client.list_tools()] == ["new"]


async def test_replicas_with_the_same_components_share_their_listing(
    cache: atc.ToolCache,
) -> None:
    counters = []
    for _ in range(2):
        server, counter = visibility_server(cache)
        counters.append(counter)
        async with Client(server) as client:
            assert await names(client) == ["unlock"]
    assert [c.count("tools/list") for c in counters] == [1, 0]


async def test_a_tool_added_to_a_mounted_server_shows_in_the_parent_listing(
    cache: atc.ToolCache,
) -> None:
    parent = FastMCP("parent")
    parent.add_middleware(ToolCacheMiddleware(cache))
    child = FastMCP("child")
    child.add_tool(Tool.from_function(lambda: "a", name="first"))
    parent.mount(child, namespace="kid")
    async with Client(parent) as client:
        assert await names(client) == ["kid_first"]
        child.add_tool(Tool.from_function(lambda: "b", name="second"))
        assert await names(client) == ["kid_first", "kid_second"]
