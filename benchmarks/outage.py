"""Print what a frozen or dead Redis costs a tool call: call latency during each outage.

Run: python benchmarks/outage.py [--budget 0.1] [--loader-ms 50] [--calls 20]

For each phase (healthy, SIGSTOP-frozen, SIGKILL-dead) it prints the p50 and
max latency of ``get_or_load`` on a missing key next to the loader's own time,
so the added cost is visible: at most the time budget until the breaker opens,
then nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiotoolcache as atc
from tests.servers import RedisServer


async def phase(cache: atc.ToolCache, name: str, calls: int, loader_s: float) -> None:
    latencies = []
    for i in range(calls):

        async def load(i: int = i) -> int:
            await asyncio.sleep(loader_s)
            return i

        started = time.perf_counter()
        assert await cache.results.get_or_load((name, i), load) == i
        latencies.append((time.perf_counter() - started) * 1000)
    print(
        f"| {name:<8} | {statistics.median(latencies):8.1f} | {max(latencies):8.1f} "
        f"| {loader_s * 1000:8.1f} | {cache.breaker.state.value:<9} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--loader-ms", type=float, default=50.0)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        async with atc.ToolCache.from_url(
            server.url, namespace="outage", budget=args.budget, cooldown=60
        ) as cache:
            print(f"budget {args.budget * 1000:.0f} ms, {args.calls} calls a phase\n")
            print("| phase    | p50 (ms) | max (ms) | loader ms | breaker   |")
            print("|----------|---------:|---------:|----------:|-----------|")
            loader_s = args.loader_ms / 1000
            await phase(cache, "healthy", args.calls, loader_s)
            server.pause()
            try:
                await phase(cache, "frozen", args.calls, loader_s)
            finally:
                server.resume()
            server.kill()
            await phase(cache, "dead", args.calls, loader_s)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
