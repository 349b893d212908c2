"""aiotoolcache side by side with raw redis-py, cashews and aiocache, on one spawned Redis.

Every library reads through its own idiomatic API, in its fastest documented setup
(see ``compare_peers``): raw redis-py with the hiredis parser, cashews with and without
``client_side=True``, aiocache on Redis with msgpack, aiotoolcache with fleet-wide
single-flight on. Every peer gets the same values and the same keys; each measurement
is the best of N rounds, the peer order rotated between rounds. It prints the table of
ratios with their targets, then one JSON object as its last line.

Usage::

    python benchmarks/compare.py            # full run; writes benchmarks/results.md
    python benchmarks/compare.py --quick    # small run; prints only (or --output FILE)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiotoolcache as atc  # noqa: E402
from benchmarks.compare_peers import (  # noqa: E402
    POOL_SIZE,
    TTL,
    AiocachePeer,
    AiotoolcachePeer,
    CashewsPeer,
    DirectGet,
    MgetBatcherPeer,
    Peer,
    RawRedisPeer,
)
from benchmarks.compare_report import (  # noqa: E402
    AIO,
    ATC,
    CW,
    CWCS,
    RAW,
    Row,
    ZipfResult,
    report,
    summary,
)
from benchmarks.compare_workloads import (  # noqa: E402
    best_paths,
    concurrent_ops,
    prime,
    rotated,
    sequential_us,
    zipf_requests,
    zipf_run,
)
from tests.servers import RedisServer  # noqa: E402

RESULTS_MD = ROOT / "benchmarks" / "results.md"
MGET = "MGET batcher"


# -- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    seq_ops: int
    l1_ops: int
    trials: int
    concurrent: int
    concurrent_rounds: int
    zipf_requests: int
    zipf_keys: int
    zipf_concurrency: int
    zipf_runs: int = 3
    zipf_s: float = 1.1
    zipf_seed: int = 20240601
    loader_delay: float = 0.010


FULL = Plan(
    seq_ops=1000,
    l1_ops=10000,
    trials=15,
    concurrent=3000,
    concurrent_rounds=9,
    zipf_requests=20000,
    zipf_keys=5000,
    zipf_concurrency=500,
    zipf_runs=3,
)
QUICK = Plan(
    seq_ops=100,
    l1_ops=1000,
    trials=1,
    concurrent=300,
    concurrent_rounds=1,
    zipf_requests=600,
    zipf_keys=200,
    zipf_concurrency=50,
    zipf_runs=1,
)

STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


async def run(plan: Plan, server: RedisServer) -> tuple[list[Row], dict[str, Any]]:
    url = server.url
    peers: dict[str, Peer] = {
        RAW: RawRedisPeer(url),
        CW: CashewsPeer(url, client_side=False),
        CWCS: CashewsPeer(url, client_side=True),
        AIO: AiocachePeer(server.host, server.port),
        MGET: MgetBatcherPeer(url),
    }
    tool_cache = atc.ToolCache.from_url(url, namespace="cmp", max_connections=POOL_SIZE)
    tool_cache.add_layer("l2only", atc.LayerConfig(ttl=TTL, l1=False))
    atc_l2 = AiotoolcachePeer(tool_cache, "l2only", ATC)
    atc_l1 = AiotoolcachePeer(tool_cache, "results", ATC)
    extra: dict[str, Any] = {"unexpected_loads": {}}
    await tool_cache.start()
    for peer in peers.values():
        await peer.open()
    try:
        # The same key names for every peer (each under its own prefix), the same values.
        keys = [f"k:{i}" for i in range(plan.concurrent)]
        cw, cwcs, aio = peers[CW], peers[CWCS], peers[AIO]
        assert isinstance(cw, CashewsPeer) and isinstance(cwcs, CashewsPeer)
        assert isinstance(aio, AiocachePeer)
        l2_peers: dict[str, Peer] = {RAW: peers[RAW], CW: cw, AIO: aio, ATC: atc_l2}
        for peer in [*l2_peers.values(), cwcs, atc_l1]:
            await prime(peer, keys)
        # Each library's bare get next to its decorator: the faster one is kept.
        l2_peers.update({CW + " get": DirectGet(cw), AIO + " get": DirectGet(aio)})
        progress("primed")
        unexpected: dict[str, int] = extra["unexpected_loads"]

        # Sequential L2 hits over all the keys; local hits of one key repeated.
        seq: dict[str, list[float]] = {name: [] for name in l2_peers}
        local_peers: list[tuple[str, Peer]] = [(CWCS, cwcs), (CWCS + " get", DirectGet(cwcs))]
        local_peers.append((ATC, atc_l1))
        local: dict[str, list[float]] = {name: [] for name, _ in local_peers}
        hot = keys[:1]
        for trial in range(plan.trials):
            for name, peer in rotated(list(l2_peers.items()), trial):
                us, loads = await sequential_us(peer, keys, plan.seq_ops)
                seq[name].append(us)
                unexpected[name] = unexpected.get(name, 0) + loads
            for name, peer in rotated(local_peers, trial):
                us, loads = await sequential_us(peer, hot, plan.l1_ops)
                local[name].append(us)
                unexpected[name + " (local)"] = unexpected.get(name + " (local)", 0) + loads
        progress("sequential hits measured")

        # Concurrent hits of distinct keys: one call per key, all at once.
        burst_peers: list[tuple[str, Peer]] = [*l2_peers.items(), *local_peers[:2]]
        burst_peers += [(MGET, peers[MGET]), (ATC + " L1", atc_l1)]
        burst: dict[str, list[float]] = {name: [] for name, _ in burst_peers}
        for _, peer in burst_peers:
            await concurrent_ops(peer, keys)  # warm-up: every pool opens its connections
        for trial in range(plan.concurrent_rounds):
            for name, peer in rotated(burst_peers, trial):
                ops, loads = await concurrent_ops(peer, keys)
                burst[name].append(ops)
                unexpected[name] = unexpected.get(name, 0) + loads
        extra["burst_l1"] = max(burst.pop(ATC + " L1"))
        extra["burst_mget"] = max(burst.pop(MGET))
        extra["burst_raw"] = max(burst[RAW])
        progress("concurrent hits measured")

        # Zipf workload from cold caches: each peer starts with an empty Redis.
        zipf: dict[str, ZipfResult] = {}
        zipf_peers: dict[str, Peer] = {RAW: peers[RAW], CW: peers[CW], CWCS: peers[CWCS]}
        zipf_peers.update({AIO: peers[AIO], ATC: atc_l1})
        for attempt in range(plan.zipf_runs):
            # The same draw under new key names: every run starts cold in every tier.
            requests = zipf_requests(
                plan.zipf_requests, plan.zipf_keys, plan.zipf_s, plan.zipf_seed, f"z{attempt}"
            )
            for name, peer in rotated(list(zipf_peers.items()), attempt):
                with server.client() as client:
                    client.flushall()
                if name == ATC:
                    tool_cache.l1.clear()
                await asyncio.sleep(0.05)  # invalidations from the flush reach client-side caches
                result = await zipf_run(
                    peer, server, requests, plan.zipf_concurrency, plan.loader_delay
                )
                if name not in zipf or result.wall < zipf[name].wall:
                    zipf[name] = result
                progress(f"zipf workload run on {name}")
        extra["zipf"] = zipf
        extra["atc_stats"] = tool_cache.stats()
        extra["breaker_opened"] = tool_cache.breaker.opened
    finally:
        for peer in peers.values():
            await peer.close()
        await tool_cache.aclose()
    # Best of the rounds: on a shared machine the least disturbed round is the closest to
    # a library's own cost. Each library is shown with its faster read path.
    best_local, extra["path_local"] = best_paths(local, min)
    best_seq, extra["path_seq"] = best_paths(seq, min)
    best_burst, extra["path_burst"] = best_paths(burst, max)
    return rows(plan, best_seq, best_local, best_burst, zipf), extra


def rows(
    plan: Plan,
    seq: dict[str, float],
    local: dict[str, float],
    burst: dict[str, float],
    zipf: dict[str, ZipfResult],
) -> list[Row]:
    """The table, one row per target."""
    peers = [RAW, CW, CWCS, AIO]
    distinct = zipf[ATC].distinct
    return [
        Row(
            "l1_hit",
            "L1 hit (same key repeated)",
            "µs/op",
            local,
            False,
            [CWCS],
            "≤ 0.3× cashews client_side",
            lambda r: r <= 0.3,
            "raw redis-py, cashews (plain) and aiocache have no local tier",
        ),
        Row(
            "l2_hit",
            "sequential L2 hit",
            "µs/op",
            seq,
            False,
            [RAW],
            "≤ 1.10× raw redis-py GET + msgpack",
            lambda r: r <= 1.10,
            "aiotoolcache on a layer with l1=False",
        ),
        Row(
            "concurrent_l2_hits",
            f"{plan.concurrent:,} concurrent L2 hits (distinct keys)",
            "ops/s",
            burst,
            True,
            [RAW, CW, AIO],
            "≥ 8× the best of raw, cashews, aiocache",
            lambda r: r >= 8,
            "cashews client_side serves these from its local cache (not an L2 read)",
        ),
        Row(
            "zipf_wall",
            "zipf wall time",
            "s",
            {n: r.wall for n, r in zipf.items()},
            False,
            peers,
            "≤ 0.5× the best peer",
            lambda r: r <= 0.5,
        ),
        Row(
            "zipf_loads",
            "zipf loader calls",
            "calls",
            {n: float(r.loads) for n, r in zipf.items()},
            False,
            peers,
            f"= distinct keys ({distinct:,})",
            lambda r: abs(r - 1.0) < 1e-9,
            reference=("distinct keys", float(distinct)),
        ),
        Row(
            "zipf_commands",
            "zipf Redis commands",
            "calls",
            {n: float(r.commands) for n, r in zipf.items()},
            False,
            [CW],
            "≤ 0.8× cashews (plain)",
            lambda r: r <= 0.8,
            "INFO commandstats delta (commands run inside scripts included)",
        ),
        Row(
            "zipf_sent",
            "zipf commands sent",
            "calls",
            {n: float(r.sent) for n, r in zipf.items()},
            False,
            [CW],
            "(context) vs cashews (plain)",
            None,
            "counted in redis-py: a script call is one command, the calls inside it are not",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default: {RESULTS_MD.relative_to(ROOT)} unless --quick)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output = args.output if args.output is not None else (None if args.quick else RESULTS_MD)
    server = RedisServer().start()
    try:
        with server.client() as client:
            redis_version = str(client.info("server")["redis_version"])
        table_rows, extra = asyncio.run(run(plan, server))
    finally:
        server.stop()
    text = report(table_rows, extra, plan, redis_version, args.quick)
    print(text)
    if output is not None:
        output.write_text(text)
        print(f"written to {output}")
    print(json.dumps(summary(table_rows, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
