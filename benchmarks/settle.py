"""What settling costs a write: its latency with 1, 3 and 10 live workers, and one frozen.

``python benchmarks/settle.py`` starts its own redis-server, then the worker
processes of each scenario (each one a subscribed ToolCache that reads now
and then, so its proof of hearing stays fresh). One writer in this process
invalidates a tag ``--writes`` times (default 300) with ``settle=False`` and
with ``settle=True``, alternating, and reports p50/p99 of both and what
settling added. In the "frozen" scenario one of three workers is stopped
with SIGSTOP: its subscriber still counts as a receiver but never
acknowledges, so every settled write waits for ``max_staleness``.

The last line is the table as JSON. ``--quick`` runs one live worker, then
two with one frozen (``--writes 10`` makes it a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import RedisServer

NAMESPACE = "settle-bench"


def worker(url: str, ready: Any, stop: Any) -> None:
    """One subscribed worker: reads a key every 20 ms until ``stop`` is set."""
    import aiotoolcache as atc

    async def main() -> None:
        async def load() -> str:
            return "v"

        async with atc.ToolCache.from_url(url, namespace=NAMESPACE) as cache:
            ready.set()
            while not stop.is_set():
                await cache.results.get_or_load("k", load, tags=["t"])
                await asyncio.sleep(0.02)

    asyncio.run(main())


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, writes: int) -> dict[str, float]:
    import aiotoolcache as atc

    plain: list[float] = []
    settled: list[float] = []
    async with atc.ToolCache.from_url(url, namespace=NAMESPACE) as writer:
        for i in range(2 * writes):
            settle = i % 2 == 1
            began = time.perf_counter()
            await writer.invalidate(tags=["t"], settle=settle)
            (settled if settle else plain).append(time.perf_counter() - began)
        bus: Any = writer.bus
        by_acks, by_bound = bus.settlement.by_acks, bus.settlement.by_bound
    ms = 1000.0
    return {
        "plain_p50_ms": percentile(plain, 0.5) * ms,
        "plain_p99_ms": percentile(plain, 0.99) * ms,
        "settled_p50_ms": percentile(settled, 0.5) * ms,
        "settled_p99_ms": percentile(settled, 0.99) * ms,
        "added_p50_ms": (percentile(settled, 0.5) - percentile(plain, 0.5)) * ms,
        "added_p99_ms": (percentile(settled, 0.99) - percentile(plain, 0.99)) * ms,
        "mean_settled_ms": statistics.fmean(settled) * ms,
        "by_acks": by_acks,
        "by_bound": by_bound,
    }


def run_scenario(url: str, workers: int, frozen: int, writes: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    readies = [context.Event() for _ in range(workers)]
    processes = [
        context.Process(target=worker, args=(url, ready, stop), daemon=True) for ready in readies
    ]
    for process in processes:
        process.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("a worker did not start")
    for process in processes[:frozen]:
        os.kill(process.pid or 0, signal.SIGSTOP)
    try:
        result = asyncio.run(measure(url, writes))
    finally:
        for process in processes[:frozen]:
            os.kill(process.pid or 0, signal.SIGCONT)
        stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    return {"workers": workers, "frozen": frozen, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="1 worker, then 2 with 1 frozen")
    args = parser.parse_args()
    scenarios = ((1, 0), (2, 1)) if args.quick else ((1, 0), (3, 0), (10, 0), (3, 1))
    server = RedisServer().start()
    rows = []
    try:
        for workers, frozen in scenarios:
            row = run_scenario(server.url, workers, frozen, args.writes)
            rows.append(row)
            print(
                f"{workers:2d} workers ({frozen} frozen): plain p50 {row['plain_p50_ms']:.2f} ms"
                f" p99 {row['plain_p99_ms']:.2f} ms | settled p50 {row['settled_p50_ms']:.2f} ms"
                f" p99 {row['settled_p99_ms']:.2f} ms | added p50 {row['added_p50_ms']:.2f} ms"
                f" p99 {row['added_p99_ms']:.2f} ms | by acks {row['by_acks']},"
                f" by the bound {row['by_bound']}",
                flush=True,
            )
    finally:
        server.stop()
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
