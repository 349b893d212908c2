"""The basic demonstration: one tool called repeatedly, with hits, misses and what they saved.

Needs nothing beyond the core install (pip install aiotoolcache); runs on the
embedded default (in-process memory, no server):

    python examples/caching_demo.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiotoolcache as atc

TOOL_SECONDS = 0.2  # what one real call of the tool takes
TOOL_DOLLARS = 0.01  # what one real call of the tool costs


async def main() -> None:
    calls = 0

    async def get_weather(city: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(TOOL_SECONDS)
        return {"city": city, "forecast": "sunny", "temp_c": 21}

    results = atc.LayerConfig(ttl=300, beta=0.0, cost_per_load=TOOL_DOLLARS)
    async with atc.ToolCache(layers={"results": results}) as cache:
        started = time.perf_counter()
        for city in ["Paris", "Oslo", "Paris", "Paris", "Oslo", "Lima", "Paris"]:
            t0 = time.perf_counter()
            await cache.call_tool(
                "weather", "get_weather", {"city": city}, lambda c=city: get_weather(c)
            )
            print(f"{city:<6} answered in {1000 * (time.perf_counter() - t0):6.1f} ms")
        elapsed = time.perf_counter() - started

        stats = cache.stats()["results"]
        print(
            f"\n7 requests for 3 cities ran the real tool {calls} times: the first request "
            f"for each city is a miss ({stats.misses}),"
        )
        print(f"every repeat is a hit ({stats.hits}) answered from memory in well under 1 ms.")
        uncached = 7 * TOOL_SECONDS
        print(f"hit rate {stats.hit_rate:.0%}; took {elapsed:.2f} s instead of {uncached:.2f} s")
        print(f"saved {stats.saved_seconds:.2f} s of tool time and ${stats.saved_cost:.2f}")
        assert calls == 3 and stats.hits == 4


if __name__ == "__main__":
    asyncio.run(main())
