"""A FastMCP server, and a caching proxy in front of it, with aiotoolcache as middleware.

Needs the fastmcp extra: pip install "aiotoolcache[fastmcp]"

Runs in process and offline: a FastMCP client talks to the servers directly.

    python examples/fastmcp_server.py

To serve it for real, drop the demo in ``main`` and call ``weather.run()``.
"""

from __future__ import annotations

import asyncio

try:
    from fastmcp import Client, FastMCP
    from fastmcp.server import create_proxy
    from mcp_types import ToolAnnotations
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f'{missing}: this example needs the fastmcp extra: pip install "aiotoolcache[fastmcp]"',
        name=missing.name,
    ) from missing

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
        print(
            f"The server offers {[tool.name for tool in tools]}. The client asked for Paris's "
            "forecast twice (arguments in another order the second time);"
        )
        print(f"the forecast ran {forecasts_computed} time: the second answer came from the cache.")

        # A caching proxy in front of another MCP server (here the one above).
        proxy = create_proxy(weather, name="weather-proxy")
        proxy.add_middleware(ToolCacheMiddleware(cache, server_id="weather-upstream"))
        async with Client(proxy) as client:
            for _ in range(3):
                await client.call_tool("forecast", {"city": "Oslo"})
        print(
            f"Three calls through the caching proxy for Oslo ran the forecast once more "
            f"({forecasts_computed} in all); the results layer's hit rate is "
            f"{cache.stats().layers['results'].hit_rate:.0%}."
        )
        print("subscribe has side effects (no read-only hint), so it would never be cached.")


if __name__ == "__main__":
    asyncio.run(main())
