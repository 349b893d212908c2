"""A FastMCP server, and a caching proxy in front of it, with aiotoolcache as middleware.

Runs in process and offline: a FastMCP client talks to the servers directly.

    python examples/fastmcp_server.py

To serve it for real, drop the demo in ``main`` and call ``weather.run()``.
"""

from __future__ import annotations

import asyncio

from fastmcp import Client, FastMCP
from fastmcp.server import create_proxy
from mcp_types import ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware

forecasts_computed = 0


def build_server(cache: atc.ToolCache) -> FastMCP:
    weather = FastMCP("weather")
    weather.add_middleware(ToolCacheMiddleware(cache, call_tool_ttl=300))

    @weather.tool(annotations=ToolAnnotations(read_only_hint=True))
    def forecast(city: str, days: int = 1) -> dict[str, object]:
        """A slow, read-only lookup: cached (readOnlyHint)."""
        global forecasts_computed
        forecasts_computed += 1
        return {"city": city, "days": days, "summary": "sunny"}

    @weather.tool
    def subscribe(city: str, email: str) -> str:
        """Has side effects: never cached (no readOnlyHint), and drops cached reads."""
        return f"{email} subscribed to {city}"

    return weather


async def main() -> None:
    # The embedded default; ToolCache.from_url("redis://…") shares one cache across replicas.
    async with atc.ToolCache() as cache:
        weather = build_server(cache)
        async with Client(weather) as client:
            await client.call_tool("forecast", {"city": "Paris", "days": 2})
            await client.call_tool("forecast", {"days": 2, "city": "Paris"})  # served from cache
            tools = await client.list_tools()  # cached in the discovery layer
        print(f"tools: {[tool.name for tool in tools]}, forecasts computed: {forecasts_computed}")

        # A caching proxy in front of another MCP server (here the one above).
        proxy = create_proxy(weather, name="weather-proxy")
        proxy.add_middleware(ToolCacheMiddleware(cache, server_id="weather-upstream"))
        async with Client(proxy) as client:
            for _ in range(3):
                await client.call_tool("forecast", {"city": "Oslo"})
        print(f"after three proxied calls, forecasts computed: {forecasts_computed}")
        print(f"results layer hit rate: {cache.stats().layers['results'].hit_rate:.0%}")


if __name__ == "__main__":
    asyncio.run(main())
