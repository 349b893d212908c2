"""What a cold miss costs Redis: commands per distinct key under fleet-wide single-flight.

Counted with ``INFO commandstats`` (commands run inside scripts included), so
the numbers are exact, not timings.
"""

from __future__ import annotations

import asyncio
import os

import aiotoolcache as atc
from aiotoolcache.lease import MERGED_FILL_BYTES
from tests.servers import RedisServer

KEYS = 200
# Commands a worker sends for its own upkeep, not for the reads and fills measured here.
UPKEEP = {"info", "config", "ping", "client", "hello", "select", "subscribe", "script"}


def data_commands(server: RedisServer) -> dict[str, int]:
    with server.client() as plain:
        stats = plain.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    return {name: n for name, n in calls.items() if name.split("|")[0] not in UPKEEP}


async def test_a_cold_batch_of_misses_costs_at_most_four_commands_per_key(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    loads = 0

    async def loader(i: int) -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return i

    await cache.results.get_or_load("warm-up", lambda: loader(-1))  # scripts loaded, pool open
    await cache.loads.aclose()  # background work of the warm-up is done
    cache.loads.closing = False
    with redis_server.client() as plain:
        plain.config_resetstat()
    loads = 0
    values = await asyncio.gather(
        *(cache.results.get_or_load(("k", i), lambda i=i: loader(i)) for i in range(KEYS))
    )
    assert values == list(range(KEYS)) and loads == KEYS
    spent = data_commands(redis_server)
    assert sum(spent.values()) <= 4 * KEYS, sorted(spent.items())


async def test_large_fills_of_one_tick_are_split_over_several_script_calls(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    """One script runs atomically: merged fills stop at MERGED_FILL_BYTES of values."""
    assert cache.loads.leases is not None
    cache.loads.leases.one_command_fill = False  # the merged script, even where SET IFEQ is
    await cache.results.get_or_load("warm-up", lambda: asyncio.sleep(0, "w"))
    values = [os.urandom(MERGED_FILL_BYTES // 2 + 1000) for _ in range(3)]  # incompressible
    small = [f"v{i}" for i in range(10)]
    # Every load ends in the same loop iteration (a timer each could end in several on a
    # busy machine), so all the fills are of one tick.
    gate = asyncio.Event()
    waiting = 0

    async def load(value: object) -> object:
        nonlocal waiting
        waiting += 1
        if waiting == len(values) + len(small):
            gate.set()
        await gate.wait()
        return value

    with redis_server.client() as plain:
        plain.config_resetstat()
    loaded = await asyncio.gather(
        *(cache.results.get_or_load(("big", i), lambda v=v: load(v)) for i, v in enumerate(values)),
        *(
            cache.results.get_or_load(("small", i), lambda v=v: load(v))
            for i, v in enumerate(small)
        ),
    )
    assert loaded == [*values, *small]
    assert data_commands(redis_server)["evalsha"] == 3  # no two big values in one call
    cache.l1.clear()
    assert await cache.results.get_many([("big", i) for i in range(3)]) == values
