"""aiotoolcache side by side with raw redis-py, cashews and aiocache, on one spawned Redis.

Every library reads through its own idiomatic API:

- raw redis-py: ``GET`` + ``msgpack.unpackb``; on a miss the loader, then ``SET EX``
  (one command per call: the floor for a single read, and no coalescing);
- cashews: the ``@cache(ttl=...)`` decorator (pickled values; concurrent misses coalesced
  in process by its default thunder protection), on the plain Redis backend and with
  ``client_side=True`` (Redis-assisted local cache, invalidated by CLIENT TRACKING);
- aiocache: the ``@cached(ttl=...)`` decorator on ``Cache.REDIS`` with ``MsgPackSerializer``
  (made to decode str as str on Redis, see ``AiocachePeer``);
- aiotoolcache: ``layer.get_or_load(key, loader)``, on a layer with ``l1=False`` for the
  L2 measurements and on the default ``results`` layer (L1 + L2) otherwise.

Every client gets a blocking connection pool of 64 connections (aiotoolcache's default), so
1,000 concurrent calls queue for a connection instead of failing.

Usage::

    python benchmarks/compare.py            # full run; writes benchmarks/results.md
    python benchmarks/compare.py --quick    # small run; prints only (or --output FILE)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import gc
import os
import platform
import random
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
from redis.asyncio import BlockingConnectionPool, Redis  # noqa: E402
from redis.asyncio.connection import AbstractConnection  # noqa: E402

import aiotoolcache as atc  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

Loader = Callable[[str], Awaitable[Any]]
T = TypeVar("T")

POOL_SIZE = 64
TTL = 300
RESULTS_MD = ROOT / "benchmarks" / "results.md"


def tool_result(key: str) -> dict[str, Any]:
    """A typical small tool result (~300 bytes of msgpack)."""
    return {
        "content": [{"type": "text", "text": f"result for {key}: " + "lorem ipsum " * 18}],
        "isError": False,
        "meta": {"server": "search", "tool": "web_search", "elapsed_ms": 12},
    }


VALUE = tool_result("fixed")


# -- peers -----------------------------------------------------------------------------
class Peer:
    """Peer is one library configured for read-through caching: ``get_or_load(key, loader)``."""

    name = "peer"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        raise NotImplementedError


class RawRedisPeer(Peer):
    """redis-py alone: GET + msgpack.unpackb, then loader + SET EX on a miss."""

    name = "raw redis-py"

    def __init__(self, url: str) -> None:
        self.client = Redis(
            connection_pool=BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE)
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        name = "raw:" + key
        data = await self.client.get(name)
        if data is not None:
            return msgpack.unpackb(data)
        value = await loader(key)
        await self.client.set(name, msgpack.packb(value), ex=TTL)
        return value


class CashewsPeer(Peer):
    """cashews' ``@cache(ttl=...)`` decorator (values pickled, its default serializer)."""

    def __init__(self, url: str, *, client_side: bool) -> None:
        from cashews import Cache

        self.name = "cashews client_side" if client_side else "cashews"
        self.cache = Cache()
        self.cache.setup(url, client_side=client_side, max_connections=POOL_SIZE)
        prefix = "cwcs:" if client_side else "cw:"
        self._loader: Loader | None = None

        @self.cache(ttl=f"{TTL}s", key=prefix + "{key}")
        async def fetch(key: str) -> Any:
            assert self._loader is not None
            return await self._loader(key)

        self._fetch = fetch

    async def open(self) -> None:
        await self.cache.init()

    async def close(self) -> None:
        await self.cache.close()

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        self._loader = loader
        return await self._fetch(key)


class AiocachePeer(Peer):
    """aiocache's ``@cached(ttl=...)`` decorator on Cache.REDIS with MsgPackSerializer."""

    name = "aiocache"

    def __init__(self, host: str, port: int) -> None:
        from aiocache import Cache, cached  # type: ignore[import-untyped]
        from aiocache.serializers import MsgPackSerializer  # type: ignore[import-untyped]

        class RedisMsgPack(MsgPackSerializer):  # type: ignore[misc]
            """MsgPackSerializer as it works on Redis: bytes in, str keys and values out.

            aiocache 0.12.3's own MsgPackSerializer either has the Redis backend decode the
            msgpack bytes as UTF-8 (encoding="utf-8": every read fails) or returns strings
            as bytes (encoding=None).
            """

            DEFAULT_ENCODING = None

            def loads(self, value: bytes | None) -> Any:
                if value is None:
                    return None
                return msgpack.unpackb(value, raw=False, use_list=self.use_list)

        self._loader: Loader | None = None

        @cached(  # type: ignore[untyped-decorator]
            ttl=TTL,
            cache=Cache.REDIS,
            serializer=RedisMsgPack(),
            namespace="aio",
            key_builder=lambda _f, key: key,
            endpoint=host,
            port=port,
            pool_max_size=POOL_SIZE,
            connection_pool_class=BlockingConnectionPool,
        )
        async def fetch(key: str) -> Any:
            assert self._loader is not None
            return await self._loader(key)

        self._fetch = fetch

    async def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # aiocache calls Redis.close()
            await self._fetch.cache.close()

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        self._loader = loader
        return await self._fetch(key)


class AiotoolcachePeer(Peer):
    """aiotoolcache's ``layer.get_or_load(key, loader)`` on one layer of a shared ToolCache."""

    def __init__(self, cache: atc.ToolCache, layer: str, name: str) -> None:
        self.cache = cache
        self.layer = cache.layer(layer)
        self.name = name

    async def get_or_load(self, key: str, loader: Loader) -> Any:
        return await self.layer.get_or_load(key, functools.partial(loader, key))


# -- measurements ------------------------------------------------------------------------
@dataclass
class LoadCounter:
    """LoadCounter is a loader that counts its calls (and may take time, like a real tool)."""

    delay: float = 0.0
    calls: int = 0
    keys: set[str] = field(default_factory=set)

    async def __call__(self, key: str) -> Any:
        self.calls += 1
        self.keys.add(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        return tool_result(key)


async def prime(peer: Peer, keys: Sequence[str], concurrency: int = 16) -> None:
    """Fill ``keys`` through the peer's own write path (a miss and a load each)."""
    loader = LoadCounter()
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            await peer.get_or_load(key, loader)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sequential_us(peer: Peer, keys: Sequence[str], ops: int) -> tuple[float, int]:
    """Return (µs per call, loads) for ``ops`` back-to-back reads cycling over ``keys``."""
    loader = LoadCounter()
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
    """Return (ops/s, loads) for one call per key, all at once."""
    loader = LoadCounter()
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


def command_calls(server: RedisServer) -> dict[str, int]:
    """Return INFO commandstats as ``{command: calls}`` (INFO itself left out)."""
    with server.client() as client:
        stats = client.info("commandstats")
    calls = {}
    for name, row in stats.items():
        command = name.removeprefix("cmdstat_")
        if command != "info":
            calls[command] = int(row["calls"])
    return calls


@dataclass
class ZipfResult:
    wall: float
    loads: int
    distinct: int
    commands: int  # executed by Redis (INFO commandstats), script-internal calls included
    breakdown: dict[str, int]
    sent: int  # commands the clients sent (a script call counts once)


class ClientTraffic:
    """ClientTraffic counts the commands every redis-py connection sends while it is active.

    Every peer talks to Redis through redis-py's asyncio connections, which pack each
    command (pipelined ones too) with ``pack_command``.
    """

    def __init__(self) -> None:
        self.commands = 0

    def __enter__(self) -> ClientTraffic:
        traffic = self
        self._pack = pack = AbstractConnection.pack_command

        def pack_command(conn: AbstractConnection, *args: Any) -> Any:
            traffic.commands += 1
            return pack(conn, *args)

        AbstractConnection.pack_command = pack_command  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        AbstractConnection.pack_command = self._pack  # type: ignore[method-assign]


async def zipf_run(
    peer: Peer, server: RedisServer, requests: list[str], concurrency: int, delay: float
) -> ZipfResult:
    """Serve ``requests`` with ``concurrency`` workers; count loads and Redis commands."""
    loader = LoadCounter(delay=delay)
    pending: Iterator[str] = iter(requests)

    async def worker() -> None:
        for key in pending:
            await peer.get_or_load(key, loader)

    before = command_calls(server)
    gc.collect()
    with ClientTraffic() as traffic:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        await asyncio.sleep(0.05)  # let background releases and publishes land
    after = command_calls(server)
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    return ZipfResult(
        wall,
        loader.calls,
        len(set(requests)),
        sum(delta.values()),
        delta,
        traffic.commands,
    )


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
    zipf_runs: int = 1
    zipf_s: float = 1.1
    zipf_seed: int = 20240601
    loader_delay: float = 0.010


FULL = Plan(
    seq_ops=1000,
    l1_ops=10000,
    trials=15,
    concurrent=1000,
    concurrent_rounds=9,
    zipf_requests=20000,
    zipf_keys=5000,
    zipf_concurrency=500,
    zipf_runs=2,
)
QUICK = Plan(
    seq_ops=100,
    l1_ops=1000,
    trials=1,
    concurrent=200,
    concurrent_rounds=1,
    zipf_requests=600,
    zipf_keys=200,
    zipf_concurrency=50,
)

RAW, CW, CWCS, AIO, ATC = (
    "raw redis-py",
    "cashews",
    "cashews client_side",
    "aiocache",
    "aiotoolcache",
)
COLUMNS = [RAW, CW, CWCS, AIO, ATC]


@dataclass
class Row:
    metric: str
    unit: str
    values: dict[str, float | None]
    higher_is_better: bool
    baseline: Sequence[str]  # the peers the aiotoolcache ratio is taken against
    target: str
    check: Callable[[float], bool] | None = None  # applied to the ratio
    note: str = ""

    def best_peer(self) -> tuple[str, float] | None:
        scores = [(p, v) for p, v in self.values.items() if p in self.baseline and v is not None]
        if not scores:
            return None
        pick = max if self.higher_is_better else min
        return pick(scores, key=lambda item: item[1])

    def ratio(self) -> float | None:
        best = self.best_peer()
        ours = self.values.get(ATC)
        if best is None or ours is None or best[1] == 0:
            return None
        return ours / best[1]


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
        keys = [f"k:{i}" for i in range(plan.concurrent)]
        l2_peers: dict[str, Peer] = {RAW: peers[RAW], CW: peers[CW], AIO: peers[AIO], ATC: atc_l2}
        for peer in [*l2_peers.values(), peers[CWCS], atc_l1]:
            await prime(peer, keys)
        progress("primed")
        unexpected: dict[str, int] = extra["unexpected_loads"]

        # (a) sequential L2 hits, (b) L1 hits: trials interleaved across peers.
        seq: dict[str, list[float]] = {name: [] for name in l2_peers}
        local: dict[str, list[float]] = {CWCS: [], ATC: []}
        hot = keys[:100]
        local_peers: list[tuple[str, Peer]] = [(CWCS, peers[CWCS]), (ATC, atc_l1)]
        for trial in range(plan.trials):
            # Every trial starts with another peer, so no one always runs after the same one.
            for name, peer in rotated(list(l2_peers.items()), trial):
                us, loads = await sequential_us(peer, keys, plan.seq_ops)
                seq[name].append(us)
                unexpected[name] = unexpected.get(name, 0) + loads
            for name, peer in rotated(local_peers, trial):
                us, loads = await sequential_us(peer, hot, plan.l1_ops)
                local[name].append(us)
                unexpected[name + " (local)"] = unexpected.get(name + " (local)", 0) + loads

        progress("sequential hits measured")

        # (c) 1,000 concurrent hits: rounds interleaved across peers.
        burst: dict[str, list[float]] = {name: [] for name in [*l2_peers, CWCS]}
        burst_l1: list[float] = []
        for peer in [*l2_peers.values(), peers[CWCS], atc_l1]:
            await concurrent_ops(peer, keys)  # warm-up: every pool opens its connections
        burst_peers: list[tuple[str, Peer]] = [*l2_peers.items(), (CWCS, peers[CWCS])]
        burst_peers.append((ATC + " L1", atc_l1))
        for trial in range(plan.concurrent_rounds):
            for name, peer in rotated(burst_peers, trial):
                ops, loads = await concurrent_ops(peer, keys)
                if name == ATC + " L1":
                    burst_l1.append(ops)
                    continue
                burst[name].append(ops)
                unexpected[name] = unexpected.get(name, 0) + loads
        extra["burst_l1"] = max(burst_l1)
        progress("concurrent hits measured")

        # (d) Zipf workload from cold caches: each peer starts with an empty Redis.
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
                    zipf[name] = result  # the run with the best wall time, and its counts
                progress(f"zipf workload run on {name}")
        extra["zipf"] = zipf
        extra["atc_stats"] = tool_cache.stats()
        extra["breaker_opened"] = tool_cache.breaker.opened
    finally:
        for peer in peers.values():
            await peer.close()
        await tool_cache.aclose()

    # Best of the trials: on a shared machine the least disturbed trial is the closest to
    # the libraries' own cost.
    best_time, best_rate = min, max
    l2_names = [RAW, CW, AIO]
    rows = [
        Row(
            "(a) sequential L2 hit",
            "µs/op",
            {n: best_time(v) for n, v in seq.items()},
            False,
            [RAW],
            "≤ 1.15× raw floor",
            lambda r: r <= 1.15,
            "aiotoolcache on a layer with l1=False",
        ),
        Row(
            "(b) L1 hit",
            "µs/op",
            {n: best_time(v) for n, v in local.items()},
            False,
            [CWCS],
            "≤ 0.4× cashews client_side",
            lambda r: r <= 0.4,
            "raw redis-py, cashews (plain) and aiocache have no local tier",
        ),
        Row(
            f"(c) {plan.concurrent:,} concurrent L2 hits",
            "ops/s",
            {n: best_rate(v) for n, v in burst.items()},
            True,
            l2_names,
            "≥ 5× raw, cashews, aiocache",
            lambda r: r >= 5,
            "cashews client_side serves these from its local cache (not an L2 read)",
        ),
        Row(
            "(d) zipf wall time",
            "s",
            {n: r.wall for n, r in zipf.items()},
            False,
            [RAW, CW, CWCS, AIO],
            "≤ 0.5× best peer",
            lambda r: r <= 0.5,
        ),
        Row(
            "(d) zipf loader calls",
            "calls",
            {n: float(r.loads) for n, r in zipf.items()},
            False,
            [RAW, CW, CWCS, AIO],
            f"= distinct keys ({zipf[ATC].distinct:,})",
        ),
        Row(
            "(d) zipf Redis commands",
            "calls",
            {n: float(r.commands) for n, r in zipf.items()},
            False,
            [CW],
            "≤ 0.6× cashews (plain)",
            lambda r: r <= 0.6,
            "INFO commandstats delta (commands run inside scripts included)",
        ),
        Row(
            "(d) zipf commands sent",
            "calls",
            {n: float(r.sent) for n, r in zipf.items()},
            False,
            [CW],
            "(context) vs cashews (plain)",
            None,
            "counted in redis-py: a script call is one command, the calls inside it are not; "
            "includes commands Redis 7.0 rejects (CLIENT SETINFO on each new connection)",
        ),
    ]
    return rows, extra


# -- output ----------------------------------------------------------------------------------
def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ops/s":
        return f"{value:,.0f}"
    if unit == "calls":
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.1f}"


def verdict(row: Row, extra: dict[str, Any]) -> tuple[str, str]:
    """Return (ratio text, met text) for the aiotoolcache column."""
    ratio = row.ratio()
    best = row.best_peer()
    ratio_text = "n/a" if ratio is None or best is None else f"{ratio:.2f}× {best[0]}"
    if row.metric.endswith("loader calls"):
        result: ZipfResult = extra["zipf"][ATC]
        met = result.loads == result.distinct
        return ratio_text, ("yes" if met else f"no ({result.loads:,} vs {result.distinct:,})")
    if ratio is None or row.check is None:
        return ratio_text, "n/a"
    return ratio_text, "yes" if row.check(ratio) else "no"


def table(rows: list[Row], extra: dict[str, Any]) -> str:
    header = ["metric", "unit", *COLUMNS, "aiotoolcache vs best peer", "target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        ratio_text, met = verdict(row, extra)
        cells = [row.metric, row.unit, *(fmt(row.values.get(c), row.unit) for c in COLUMNS)]
        lines.append("| " + " | ".join([*cells, ratio_text, row.target, met]) + " |")
    return "\n".join(lines)


def notes(rows: list[Row], extra: dict[str, Any], plan: Plan) -> str:
    out = [f"- {row.metric}: {row.note}" for row in rows if row.note]
    out.append(
        f"- {plan.concurrent:,} concurrent hits from aiotoolcache's L1 (results layer): "
        f"{extra['burst_l1']:,.0f} ops/s"
    )
    zipf: dict[str, ZipfResult] = extra["zipf"]
    for name in (ATC, CW):
        ranked = sorted(zipf[name].breakdown.items(), key=lambda kv: -kv[1])
        by_name = ", ".join(f"{command} {calls:,}" for command, calls in ranked)
        out.append(f"- {name} zipf Redis commands by name: {by_name}")
    stats = extra["atc_stats"]
    errors = sum(layer.backend_errors for layer in stats.layers.values())
    dropped = sum(layer.dropped_writes for layer in stats.layers.values())
    out.append(
        f"- aiotoolcache over the whole run: breaker {stats.breaker_state} at the end, opened "
        f"{extra['breaker_opened']:,} times; backend errors {errors:,}, dropped writes {dropped:,}"
    )
    unexpected = {k: v for k, v in extra["unexpected_loads"].items() if v}
    if unexpected:
        out.append(f"- loads during hit measurements (should be none): {unexpected}")
    out.append(
        f"- zipf: {plan.zipf_requests:,} requests over {plan.zipf_keys:,} keys, s = "
        f"{plan.zipf_s}, seed {plan.zipf_seed}, concurrency {plan.zipf_concurrency}, "
        f"loader = asyncio.sleep({plan.loader_delay}); every peer starts from an empty Redis; "
        f"best wall time of {plan.zipf_runs} run(s) per peer, with that run's counts"
    )
    out.append(
        "- read-through: raw redis-py GET/SET by hand; cashews `@cache(ttl=...)`; aiocache "
        "`@cached(ttl=...)`; aiotoolcache `layer.get_or_load`. cashews' decorator coalesces "
        "concurrent misses in process (its default `protected=True`); raw redis-py and "
        "aiocache's `@cached` do not; aiotoolcache coalesces in process and fleet-wide (leases)"
    )
    return "\n".join(out)


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """Return the commit the working tree is at, with ``-dirty`` if it has changes."""
    try:
        run = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return run.stdout.strip() or "unknown"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc), {model}, {platform.system()} {platform.release()}"


def report(
    rows: list[Row], extra: dict[str, Any], plan: Plan, redis_version: str, quick: bool
) -> str:
    versions = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("redis", "hiredis", "msgpack", "cashews", "aiocache")
    )
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "# aiotoolcache compared with redis-py, cashews and aiocache",
            "",
            f"- date: {now}{' (quick run)' if quick else ''}",
            f"- machine: {machine()}",
            f"- Python {platform.python_version()}, Redis server {redis_version}, "
            f"aiotoolcache {atc.__version__} ({source_revision()}); {versions}",
            f"- command: `{command}`",
            "",
            table(rows, extra),
            "",
            notes(rows, extra, plan),
            "",
        ]
    )


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
        rows, extra = asyncio.run(run(plan, server))
    finally:
        server.stop()
    text = report(rows, extra, plan, redis_version, args.quick)
    print(text)
    if output is not None:
        output.write_text(text)
        print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
