"""Redis commands per miss: the lease scripts against the one-command fill and release.

``python benchmarks/lease_commands.py`` starts its own server (``AIOTOOLCACHE_SERVER``
chooses the binary, see ``aiotoolcache.local_server``) and counts, with ``INFO
commandstats`` (commands run inside scripts included), what a cold miss costs in
each of four cases:

- ``lone``: one miss at a time, nobody else asking (take the lease, load, fill);
- ``batch``: K misses at once in one worker (their lease requests and fills share
  pipelines, and the scripted fills of a tick share one script call);
- ``failed``: a lone miss whose loader raises (take the lease, release it);
- ``awaited``: a second worker asks while the first loads, so the fill wakes it.

Each case runs twice: with the leases going by script (as on a server without
``SET … IFEQ`` and a compare-and-delete) and as this server allows. It prints a
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiotoolcache as atc
from aiotoolcache.local_server import require_server
from benchmarks.measure import snapshot
from tests.servers import RedisServer

# A worker's own upkeep (health checks, its subscriber, its presence), not the misses'.
UPKEEP = frozenset({"ping", "client", "hello", "select", "subscribe", "script"})
# A case runs its misses and returns the GETs it sent itself to watch them (not charged).
Case = Callable[[atc.ToolCache, atc.ToolCache, int], Awaitable[int]]


async def lone(cache: atc.ToolCache, _: atc.ToolCache, keys: int) -> int:
    for i in range(keys):
        await cache.results.get_or_load(("lone", i), _loader(i))
    return 0


async def batch(cache: atc.ToolCache, _: atc.ToolCache, keys: int) -> int:
    await asyncio.gather(
        *(cache.results.get_or_load(("batch", i), _loader(i)) for i in range(keys))
    )
    return 0


async def failed(cache: atc.ToolCache, _: atc.ToolCache, keys: int) -> int:
    async def fails() -> int:
        raise LookupError("not found")

    for i in range(keys):
        try:
            await cache.results.get_or_load(("failed", i), fails)
        except LookupError:
            pass
    return 0


async def awaited(cache: atc.ToolCache, other: atc.ToolCache, keys: int) -> int:
    watching = 0
    for i in range(keys):
        started, gate = asyncio.Event(), asyncio.Event()
        held = _held(i, started, gate)
        holder = asyncio.create_task(cache.results.get_or_load(("awaited", i), held))
        await started.wait()
        waiter = asyncio.create_task(other.results.get_or_load(("awaited", i), held))
        watching += await _marked_as_awaited(cache, ("awaited", i))
        gate.set()
        assert await holder == i and await waiter == i
    return watching


def _held(i: int, started: asyncio.Event, gate: asyncio.Event) -> Callable[[], Awaitable[int]]:
    """A loader that says it started, then returns ``i`` once ``gate`` opens."""

    async def load() -> int:
        started.set()
        await gate.wait()
        return i

    return load


async def _marked_as_awaited(cache: atc.ToolCache, key: Any) -> int:
    """Wait until the waiter has appended "+" to the holder's marker; return the GETs sent."""
    client: Any = cache.client
    value_key = cache.results.ref(key).value_key
    sent = 1
    async with asyncio.timeout(30):
        while not bytes(await client.get(value_key) or b"").endswith(b"+"):
            sent += 1
            await asyncio.sleep(0.001)
    return sent


def _loader(i: int) -> Callable[[], Awaitable[int]]:
    async def load() -> int:
        await asyncio.sleep(0)
        return i

    return load


CASES: dict[str, Case] = {"lone": lone, "batch": batch, "failed": failed, "awaited": awaited}


async def measure(server: RedisServer, case: Case, keys: int, by_script: bool) -> dict[str, int]:
    """Commands (by name) that ``keys`` misses of ``case`` cost, in a fresh namespace."""
    options: dict[str, Any] = {"namespace": f"b{uuid.uuid4().hex[:8]}", "fleet_interval": None}
    async with (
        atc.ToolCache.from_url(server.url, **options) as cache,
        atc.ToolCache.from_url(server.url, **options) as other,
    ):
        for worker in (cache, other):
            assert worker.loads.leases is not None
            await worker.loads.leases.presence.connected()
            if by_script:
                worker.loads.leases.use_server(None)
        await cache.results.get_or_load("warm-up", _loader(-1))  # scripts loaded
        await cache.loads.aclose()
        cache.loads.closing = False
        with server.client() as plain:
            before = snapshot(plain)
            watching = await case(cache, other, keys)
            spent, _ = snapshot(plain).since(before)
    spent["get"] = spent.get("get", 0) - watching
    return {name: n for name, n in spent.items() if n and name.split("|")[0] not in UPKEEP}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200, help="misses per case (default 200)")
    args = parser.parse_args()
    binary = require_server()
    server = RedisServer().start()
    rows: list[dict[str, Any]] = []
    try:
        for name, case in CASES.items():
            keys = args.keys if name != "awaited" else max(1, args.keys // 10)
            for by_script in (True, False):
                spent = await measure(server, case, keys, by_script)
                rows.append(
                    {
                        "case": name,
                        "path": "scripts" if by_script else "as the server allows",
                        "keys": keys,
                        "commands_per_miss": round(sum(spent.values()) / keys, 2),
                        "scripts_per_miss": round(
                            (spent.get("evalsha", 0) + spent.get("eval", 0)) / keys, 2
                        ),
                        "commands": dict(sorted(spent.items())),
                    }
                )
    finally:
        server.stop()
    print(f"{binary.flavour} {binary.version}: Redis commands per miss (INFO commandstats)\n")
    print("| case | path | commands/miss | scripts/miss | commands |")
    print("|---|---|---:|---:|---|")
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in row["commands"].items())
        print(
            f"| {row['case']} | {row['path']} | {row['commands_per_miss']} "
            f"| {row['scripts_per_miss']} | {counts} |"
        )
    print(json.dumps({"server": f"{binary.flavour} {binary.version}", "rows": rows}))


if __name__ == "__main__":
    asyncio.run(main())
