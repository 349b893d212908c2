"""A worker process for the fleet tests: runs a workload, reports to the fleet, prints its stats.

Usage: python tests/fleet_worker.py URL NAMESPACE SEED REQUESTS INTERVAL (finish|hang)

``finish`` closes the reporter (final flush) and prints ``{"stats": ...}``;
``hang`` flushes, prints its stats and waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import aiotoolcache as atc
from aiotoolcache.fleet import FleetReporter, no_reporting_options

COST = 0.01


async def main(
    url: str, namespace: str, seed: int, requests: int, interval: float, mode: str
) -> None:
    rng = random.Random(seed)
    layers = {"results": atc.DEFAULT_LAYERS["results"].with_options(cost_per_load=COST)}
    options = no_reporting_options()  # this worker runs its reporter itself
    async with atc.ToolCache.from_url(url, namespace=namespace, layers=layers, **options) as cache:
        reporter = FleetReporter(cache, interval)
        reporter.start()

        async def call(i: int) -> None:
            async def load() -> dict[str, int]:
                await asyncio.sleep(0.005)
                return {"answer": i}

            assert await cache.call_tool("srv", "tool", {"i": i}, load) == {"answer": i}
            await cache.list_tools(f"srv{i % 3}", lambda: asyncio.sleep(0.002, ["tool"]))

        for _ in range(requests // 5):
            await asyncio.gather(*(call(rng.randrange(12)) for _ in range(5)))
        if mode == "hang":
            assert await reporter.flush()
            print(json.dumps({"stats": cache.stats().to_dict()}), flush=True)
            await asyncio.sleep(3600)
        await reporter.aclose()
        print(json.dumps({"stats": cache.stats().to_dict()}), flush=True)


if __name__ == "__main__":
    url, namespace, seed, requests, interval, mode = sys.argv[1:]
    asyncio.run(main(url, namespace, int(seed), int(requests), float(interval), mode))
