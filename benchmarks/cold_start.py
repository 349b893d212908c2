"""Cold start of a fleet: many callers in several processes miss the same keys at once.

``python benchmarks/cold_start.py`` starts its own redis-server, then N worker
processes (default 4). Each opens a ToolCache and, at the same moment, runs C
concurrent callers (default 200) that each ask for one of K keys (default 50)
through ``get_or_load`` with a loader that sleeps L seconds (default 0.1).
Fleet-wide single-flight should make every key load once in the whole fleet,
and every caller should wait about one load, not a stranded lease.

It prints the latency percentiles of all callers, the loads against the
distinct keys, and, as its last line, the same as JSON. The target it checks:
p99 ≤ loader time + 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import RedisServer

TARGET_MARGIN = 0.25


def worker(url: str, namespace: str, args: dict[str, Any], start_at: float, out: Any) -> None:
    """One worker process: wait for the common start, then run every caller at once."""
    import aiotoolcache as atc

    async def main() -> dict[str, Any]:
        loads = 0

        async def load(key: int) -> dict[str, int]:
            nonlocal loads
            loads += 1
            await asyncio.sleep(args["loader"])
            return {"key": key}

        async with atc.ToolCache.from_url(url, namespace=namespace) as cache:
            await asyncio.sleep(max(0.0, start_at - time.time()))

            async def caller(i: int) -> float:
                key = i % args["keys"]
                began = time.perf_counter()
                value = await cache.results.get_or_load(("k", key), lambda: load(key))
                assert value == {"key": key}, value
                return time.perf_counter() - began

            latencies = await asyncio.gather(*(caller(i) for i in range(args["callers"])))
            return {"latencies": latencies, "loads": loads}

    out.put(asyncio.run(main()))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--loader", type=float, default=0.1, help="seconds a load takes")
    parser.add_argument(
        "--rounds", type=int, default=3, help="cold starts, each on a new namespace"
    )
    options = parser.parse_args()
    args = vars(options)
    spawn = multiprocessing.get_context("spawn")
    server = RedisServer().start()
    rounds = []
    try:
        for _ in range(options.rounds):
            namespace = f"cold-{uuid.uuid4().hex[:8]}"
            out = spawn.Queue()
            start_at = time.time() + 3.0  # every process is up and subscribed by then
            processes = [
                spawn.Process(target=worker, args=(server.url, namespace, args, start_at, out))
                for _ in range(options.processes)
            ]
            for process in processes:
                process.start()
            results = [out.get(timeout=120) for _ in processes]
            for process in processes:
                process.join(30)
            latencies = [x for r in results for x in r["latencies"]]
            rounds.append(
                {
                    "p50_ms": round(statistics.median(latencies) * 1000, 1),
                    "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                    "max_ms": round(max(latencies) * 1000, 1),
                    "loads": sum(r["loads"] for r in results),
                    "keys": options.keys,
                }
            )
    finally:
        server.stop()
    target_ms = (options.loader + TARGET_MARGIN) * 1000
    print(
        f"{options.processes} processes x {options.callers} callers, {options.keys} keys, "
        f"loader {options.loader * 1000:.0f} ms, target p99 <= {target_ms:.0f} ms"
    )
    print("| round | p50 ms | p99 ms | max ms | loads / keys |")
    print("|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rounds, 1):
        print(
            f"| {i} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['loads']} / {r['keys']} |"
        )
    worst = max(r["p99_ms"] for r in rounds)
    print(
        json.dumps(
            {
                "rounds": rounds,
                "target_p99_ms": target_ms,
                "worst_p99_ms": worst,
                "met": worst <= target_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
