"""Per-operation cost of aiotoolcache as the work grows: callers, keys and value sizes.

Against ONE redis-server spawned on a free port, each step runs a number of
``layer.get_or_load`` operations and records, per operation:

- ``client_us``: CPU time of this process (``time.process_time``), and ``harness_us``,
  what the same callers cost with a no-op in place of the cache (creating 10,000 tasks
  is not free); flags look at the difference;
- ``server_us``: CPU time of the Redis server (``INFO cpu`` used_cpu_user + used_cpu_sys);
- ``cmds``: Redis commands (``INFO commandstats``, commands run inside scripts included;
  the INFO calls made to measure are not counted).

Dimensions:

- ``concurrency hits``: 1 → 10,000 callers, L2 hits of distinct keys (a layer without L1);
- ``concurrency misses``: 1 → 10,000 callers, misses of new keys with a 1 ms loader
  (fleet-wide single-flight on, as always);
- ``key count``: a steady stream of L2 hits on keys drawn uniformly from a set of
  1k → 1M keys, bulk-loaded into Redis as sealed envelopes (the 1M step caps its run time);
- ``value size``: L2 hits of 100 B → 1 MB incompressible values.

Background work a step starts (fills, lease releases) is waited for and charged to it.
A step is FLAGGED when a per-operation cost grows more than 2× faster than the work
per operation does (the work per operation is constant except for value size, where it
grows with the bytes), from one step to the next or across the whole range.

Usage::

    python benchmarks/scaling.py --plot docs/img/scaling.png   # full run, a few minutes
    python benchmarks/scaling.py --quick --json /tmp/s.json    # under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiotoolcache as atc  # noqa: E402
from aiotoolcache.codec import Envelope  # noqa: E402
from benchmarks.measure import Snapshot, hiredis_in_use, machine, snapshot  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "scaling.json"
SMALL = {"content": [{"type": "text", "text": "lorem ipsum " * 6}], "isError": False}
FLAG_FACTOR = 2.0


@dataclass(frozen=True)
class Plan:
    callers: tuple[int, ...]
    hit_ops: int  # distinct keys read per concurrency step
    miss_ops: int  # at least this many misses per concurrency step
    key_counts: tuple[int, ...]
    key_ops: int
    key_concurrency: int
    sizes: tuple[int, ...]
    size_ops: int
    step_seconds: float  # a step stops taking new operations after this long


FULL = Plan(
    callers=(1, 10, 100, 1000, 10000),
    hit_ops=10000,
    miss_ops=1000,
    key_counts=(1000, 10_000, 100_000, 1_000_000),
    key_ops=20000,
    key_concurrency=100,
    sizes=(100, 1000, 10_000, 100_000, 1_000_000),
    size_ops=2000,
    step_seconds=20.0,
)
QUICK = Plan(
    callers=(1, 10, 100, 1000),
    hit_ops=1000,
    miss_ops=200,
    key_counts=(1000, 10_000),
    key_ops=2000,
    key_concurrency=100,
    sizes=(100, 10_000, 1_000_000),
    size_ops=200,
    step_seconds=4.0,
)


@dataclass
class Step:
    """Step is one measured point: ``ops`` operations at ``x`` along ``dimension``."""

    dimension: str
    x: int
    ops: int
    wall_s: float
    client_us: float
    server_us: float
    cmds: float
    work: float  # work per operation, relative to the dimension's first step
    loads_per_op: float = 0.0
    harness_us: float = 0.0  # CPU of the callers themselves: the same workers, no cache call
    gc_runs: int = 0  # CPython cyclic GC collections during the step (all generations)
    net_us: float = 0.0  # client_us - harness_us: what the cache itself costs
    backend_errors: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


class Bench:
    """Bench holds the server, the cache under test and the keys already in Redis."""

    def __init__(self, server: RedisServer, cache: atc.ToolCache, deadline: float) -> None:
        self.server = server
        self.cache = cache
        self.layer = cache.layer("l2only")
        self.admin = server.client()
        self.step_seconds = deadline
        self.loads = 0

    def bulk_fill(self, names: Iterator[Any], value: Any, chunk: int = 5000) -> int:
        """Store ``value`` under each key name of ``names`` with MSET (one sealed envelope)."""
        payload = self.cache.codec.encode_value(value)
        now = time.time()
        envelope = Envelope(now, now + 3600, 0.001, None, payload)
        codec = self.cache.codec
        filled = 0
        batch: dict[str, bytes] = {}
        for key in names:
            name = self.layer.ref(key).value_key
            batch[name] = codec.seal(name, envelope)  # the checksum covers the key name
            if len(batch) >= chunk:
                self.admin.mset(batch)
                filled += len(batch)
                batch = {}
        if batch:
            self.admin.mset(batch)
            filled += len(batch)
        return filled

    async def loader_1ms(self) -> Any:
        self.loads += 1
        await asyncio.sleep(0.001)
        return SMALL

    async def must_not_load(self) -> Any:
        raise AssertionError("a hit ran the loader")

    async def run(
        self, dimension: str, x: int, work: float, keys: Iterator[Any], callers: int, miss: bool
    ) -> Step:
        """Serve ``keys`` with ``callers`` concurrent workers; measure per-operation cost."""
        layer = self.layer
        loader = self.loader_1ms if miss else self.must_not_load
        done = 0
        deadline = time.perf_counter() + self.step_seconds

        async def worker() -> None:
            nonlocal done
            for key in keys:
                await layer.get_or_load(key, loader)
                done += 1
                if time.perf_counter() > deadline:
                    return

        self.loads = 0
        errors_before = layer.counters.backend_errors
        gc.collect()
        gc_before = sum(g["collections"] for g in gc.get_stats())
        before = snapshot(self.admin)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(callers)))
        wall = time.perf_counter() - wall0
        after = await self.settle(before)  # background fills and lease releases count here
        cpu = time.process_time() - cpu0
        gc_runs = sum(g["collections"] for g in gc.get_stats()) - gc_before
        commands, server_cpu = after.since(before)
        ops = max(done, 1)
        step = Step(
            dimension,
            x,
            done,
            wall,
            cpu / ops * 1e6,
            server_cpu / ops * 1e6,
            sum(commands.values()) / ops,
            work,
            loads_per_op=self.loads / ops,
            harness_us=await self.harness(ops, callers),
            gc_runs=gc_runs,
            backend_errors=layer.counters.backend_errors - errors_before,
            commands=commands,
        )
        step.net_us = step.client_us - step.harness_us
        return step

    async def settle(self, before: Snapshot, limit: float = 10.0) -> Snapshot:
        """Wait until Redis sees no new command but the subscriber's heartbeat PINGs for
        0.1 s (at most ``limit`` s); return it."""

        def work(reading: Snapshot) -> dict[str, int]:
            return {name: n for name, n in reading.calls.items() if name != "ping"}

        await asyncio.sleep(0.02)
        last = snapshot(self.admin)
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
            now = snapshot(self.admin)
            if work(now) == work(last):
                return now
            last = now
        return last

    async def harness(self, ops: int, callers: int) -> float:
        """CPU µs per operation of ``callers`` workers sharing ``ops`` no-op awaits."""
        pending = iter(range(ops))

        async def nothing() -> None:
            return None

        async def worker() -> None:
            for _ in pending:
                await nothing()

        gc.collect()
        cpu0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(callers)))
        return (time.process_time() - cpu0) / ops * 1e6


async def measure(plan: Plan, server: RedisServer, progress: Callable[[str], None]) -> list[Step]:
    cache = atc.ToolCache.from_url(server.url, namespace="scale")
    cache.add_layer("l2only", atc.LayerConfig(ttl=3600, l1=False, max_value_bytes=2**21, beta=0))
    await cache.start()
    bench = Bench(server, cache, plan.step_seconds)
    steps: list[Step] = []
    try:
        bench.bulk_fill((f"h:{i}" for i in range(plan.hit_ops)), SMALL)
        for callers in plan.callers:
            keys = iter([f"h:{i}" for i in range(plan.hit_ops)])
            steps.append(await bench.run("concurrency hits", callers, 1, keys, callers, False))
            progress(f"hits, {callers} callers")
        for callers in plan.callers:
            ops = max(plan.miss_ops, callers)
            keys = iter([f"m{callers}:{i}" for i in range(ops)])
            steps.append(await bench.run("concurrency misses", callers, 1, keys, callers, True))
            progress(f"misses, {callers} callers")
        filled = 0
        rng = random.Random(15)
        for count in plan.key_counts:
            filled += bench.bulk_fill((f"s:{i}" for i in range(filled, count)), SMALL)
            draw = iter([f"s:{rng.randrange(count)}" for _ in range(plan.key_ops)])
            conc = plan.key_concurrency
            steps.append(await bench.run("key count", count, 1, draw, conc, False))
            progress(f"{count:,} keys")
        first = plan.sizes[0]
        for size in plan.sizes:
            distinct = 100
            bench.bulk_fill((f"v{size}:{i}" for i in range(distinct)), os.urandom(size))
            ops = max(20, min(plan.size_ops, plan.size_ops * 100_000 // size))
            names = iter([f"v{size}:{i % distinct}" for i in range(ops)])
            steps.append(await bench.run("value size", size, size / first, names, 10, False))
            # Large values leave Redis before the next size. Only the entries: a FLUSHALL
            # would take the generations with them, which the cache rightly treats as data
            # loss (a new namespace generation, so the next size's names would be stale).
            stale = list(bench.admin.scan_iter(f"{cache.namespace}:l2only:*", count=1000))
            for start in range(0, len(stale), 1000):
                bench.admin.unlink(*stale[start : start + 1000])
            progress(f"{size:,} B values")
    finally:
        await cache.aclose()
        bench.admin.close()
    flag(steps)
    return steps


METRICS = (
    ("net_us", "client CPU µs/op (net of the callers' own)"),
    ("server_us", "Redis CPU µs/op"),
    ("cmds", "cmds/op"),
)


def flag(steps: list[Step]) -> None:
    """Flag each step whose per-op cost grew > FLAG_FACTOR × its work per op."""
    for dimension in dict.fromkeys(s.dimension for s in steps):
        series = [s for s in steps if s.dimension == dimension]
        for prev, step in zip(series, series[1:], strict=False):
            for metric, label in METRICS:
                first, before, now = (getattr(s, metric) for s in (series[0], prev, step))
                floor = 0.5 if metric == "cmds" else 2.0  # below this, noise, not growth
                if max(before, first) < floor / 10:
                    continue
                for base, base_work, what in ((before, prev.work, "previous"), (first, 1, "first")):
                    if base <= 0 or now < floor:
                        continue
                    growth = (now / base) / (step.work / base_work)
                    if growth > FLAG_FACTOR:
                        step.flags.append(f"{label} ×{growth:.1f} vs the {what} step")


def render(steps: list[Step]) -> str:
    head = "| dimension | x | ops | wall s | client CPU µs/op | callers' own µs/op "
    head += "| Redis CPU µs/op | cmds/op | loads/op | GC runs | errors | flag |"
    lines = [head, "|---|---:|" + "---:|" * 9 + "---|"]
    for s in steps:
        lines.append(
            f"| {s.dimension} | {s.x:,} | {s.ops:,} | {s.wall_s:.2f} | {s.client_us:.1f} | "
            f"{s.harness_us:.1f} | {s.server_us:.1f} | {s.cmds:.3f} | {s.loads_per_op:.2f} | "
            f"{s.gc_runs} | {s.backend_errors} | "
            f"{'; '.join(s.flags) or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small steps, under a minute")
    parser.add_argument("--json", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--plot", type=Path, default=None, help="PNG file to draw (matplotlib)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    server = RedisServer().start()
    try:
        with server.client() as client:
            redis_version = str(client.info("server")["redis_version"])
        steps = asyncio.run(measure(plan, server, progress))
    finally:
        server.stop()
    flagged = [f"{s.dimension} {s.x:,}: {f}" for s in steps for f in s.flags]
    result = {
        "machine": machine(),
        "redis": redis_version,
        "hiredis": hiredis_in_use(),
        "quick": args.quick,
        "plan": asdict(plan),
        "steps": [asdict(s) for s in steps],
        "flagged": flagged,
    }
    print(f"machine: {result['machine']}; Redis {redis_version}; hiredis {result['hiredis']}")
    print(render(steps))
    print("super-linear steps: " + ("; ".join(flagged) if flagged else "none"))
    output = args.json if args.json is not None else (None if args.quick else DEFAULT_JSON)
    if output is not None:
        output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written to {output}")
    if args.plot is not None:
        from benchmarks.scaling_plot import plot

        plot(steps, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
