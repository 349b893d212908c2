"""ToolCacheMiddleware follows the server's changes: writes however they end, and listings."""

from __future__ import annotations

import pytest

pytest.importorskip("fastmcp")

from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import ToolResult
from mcp_types import ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware

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
