"""The workloads of benchmarks/compare.py: sequential hits, concurrent hits, a Zipf stream.

Each returns a measurement for one peer; ``rotated`` orders the peers of a round.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import TypeVar

from benchmarks.compare_peers import BatchPeer, ClientTraffic, LoadCounter, Peer
from benchmarks.compare_report import ZipfResult
from benchmarks.measure import snapshot
from tests.servers import RedisServer

T = TypeVar("T")


async def prime(peer: Peer, keys: Sequence[str], concurrency: int = 16) -> None:
    """Fill ``keys`` through the peer's own write path (a miss and a load each)."""
    loader = LoadCounter()
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            await peer.get_or_load(key, loader)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def batches(keys: Sequence[str], size: int, count: int) -> list[list[str]]:
    """Return ``count`` batches of ``size`` keys, cycling over ``keys`` in order."""
    n = len(keys)
    return [[keys[(b * size + j) % n] for j in range(size)] for b in range(count)]


async def sequential_us(peer: Peer, keys: Sequence[str], ops: int) -> tuple[float, int]:
    """Return (µs per call, loads) for ``ops`` back-to-back reads cycling over ``keys``.

    A BatchPeer reads the same ``ops`` keys in batches: its figure is µs per key.
    """
    loader = LoadCounter()
    if isinstance(peer, BatchPeer):
        # Built before the clock starts: the batches are the caller's, not the cache's, work.
        chunks = batches(keys, peer.batch, max(1, ops // peer.batch))
        get_many = peer.get_many
        gc.collect()
        started = time.perf_counter()
        for chunk in chunks:
            await get_many(chunk, loader)
        elapsed = time.perf_counter() - started
        return elapsed / (len(chunks) * peer.batch) * 1e6, loader.calls
    get = peer.get_or_load
    n = len(keys)
    gc.collect()
    started = time.perf_counter()
    for i in range(ops):
        await get(keys[i % n], loader)
    elapsed = time.perf_counter() - started
    return elapsed / ops * 1e6, loader.calls


def rotated(items: list[T], shift: int) -> list[T]:
    """Return ``items`` rotated left by ``shift``."""
    shift %= len(items)
    return items[shift:] + items[:shift]


async def concurrent_ops(peer: Peer, keys: Sequence[str]) -> tuple[float, int]:
    """Return (ops/s, loads) for one call per key, all at once (a BatchPeer: keys/s)."""
    loader = LoadCounter()
    if isinstance(peer, BatchPeer):
        chunks = batches(keys, peer.batch, -(-len(keys) // peer.batch))
        gc.collect()
        started = time.perf_counter()
        await asyncio.gather(*(peer.get_many(chunk, loader) for chunk in chunks))
        elapsed = time.perf_counter() - started
        return sum(map(len, chunks)) / elapsed, loader.calls
    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(peer.get_or_load(key, loader) for key in keys))
    elapsed = time.perf_counter() - started
    return len(keys) / elapsed, loader.calls


def zipf_requests(requests: int, keys: int, s: float, seed: int, prefix: str = "z") -> list[str]:
    """Return ``requests`` keys drawn from a Zipf(s) law over ``keys`` keys (seeded)."""
    rng = random.Random(seed)
    cum = list(accumulate(1.0 / rank**s for rank in range(1, keys + 1)))
    ranks = rng.choices(range(keys), cum_weights=cum, k=requests)
    return [f"{prefix}:{rank}" for rank in ranks]


async def zipf_run(
    peer: Peer, server: RedisServer, requests: list[str], concurrency: int, delay: float
) -> ZipfResult:
    """Serve ``requests`` with ``concurrency`` workers; count loads and Redis commands."""
    loader = LoadCounter(delay=delay)
    pending: Iterator[str] = iter(requests)

    async def worker() -> None:
        for key in pending:
            await peer.get_or_load(key, loader)

    with server.client() as admin:
        before = snapshot(admin)
        gc.collect()
        with ClientTraffic() as traffic:
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - started
            await asyncio.sleep(0.05)  # let background releases and publishes land
        delta, _ = snapshot(admin).since(before)
    return ZipfResult(
        wall, loader.calls, len(set(requests)), sum(delta.values()), delta, traffic.commands
    )


def best_paths(
    results: dict[str, list[float]], pick: Callable[[list[float]], float]
) -> tuple[dict[str, float], dict[str, str]]:
    """Merge each library's read paths (``name`` and ``name get``): keep its best one.

    Returns ({library: best value}, {library with two paths: the one that gave it}).
    """
    best: dict[str, float] = {}
    path: dict[str, str] = {}
    for name, values in results.items():
        library = name.removesuffix(" get")
        value = pick(values)
        if library not in best or pick([best[library], value]) == value:
            best[library] = value
            path[library] = "get" if name.endswith(" get") else "decorator"
    variants = {name.removesuffix(" get") for name in results if name.endswith(" get")}
    return best, {library: p for library, p in path.items() if library in variants}
