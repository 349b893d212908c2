"""An MCP client that caches tool calls and shares the SDK's response cache through aiotoolcache.

Needs the mcp extra: pip install "aiotoolcache[mcp]"

Runs in process and offline: the MCP SDK's own ``MCPServer`` stands in for a remote server.

    python examples/mcp_client.py
"""

from __future__ import annotations

import asyncio

try:
    from mcp import Client
    from mcp.client.caching import CacheConfig
    from mcp.server.caching import CacheHint
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f'{missing}: this example needs the mcp extra: pip install "aiotoolcache[mcp]"',
        name=missing.name,
    ) from missing

import aiotoolcache as atc
from aiotoolcache.integrations.mcp import (
    ToolCacheResponseStore,
    ToolCallCache,
    partition_for_token,
)

lookups = 0

server = MCPServer(
    "inventory",
    # The server's caching hints: clients may keep tools/list for 60 s.
    cache_hints={"tools/list": CacheHint(ttl_ms=60_000, scope="private")},
)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def stock_level(sku: str, warehouse: str = "east") -> int:
    """How many items of ``sku`` are in ``warehouse``."""
    global lookups
    lookups += 1
    return 42


async def main() -> None:
    # The embedded default; ToolCache.from_url("redis://…") shares entries across processes.
    async with atc.ToolCache() as cache:
        partition = partition_for_token("the caller's access token")
        calls = ToolCallCache(cache, server_id="inventory", partition=partition, ttl=120)
        response_cache = CacheConfig(
            store=ToolCacheResponseStore(cache), partition=partition, target_id="inventory"
        )
        async with Client(
            server, cache=response_cache, message_handler=calls.message_handler()
        ) as client:
            for args in ({"sku": "A-1", "warehouse": "east"}, {"warehouse": "east", "sku": "A-1"}):
                result = await calls.call_tool(client, "stock_level", args)
            tools = await client.list_tools()  # SDK response cache, kept in the ToolCache
        print(
            f"stock_level answered {result.structured_content} to two identical calls "
            f"(arguments in another order) and ran {lookups} time: the second came from the cache."
        )
        print(
            f"tools/list ({[tool.name for tool in tools.tools]}) is kept for 60 s as the server's "
            "cache hint allows, in the same ToolCache."
        )


if __name__ == "__main__":
    asyncio.run(main())
