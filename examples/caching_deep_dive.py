"""A deeper tour on Redis: layers and TTLs, two workers, invalidation, the breaker and fallback.

Needs nothing beyond the core install (pip install aiotoolcache), and a Redis
server; it starts none itself:

    AIOTOOLCACHE_URL=redis://127.0.0.1:6379/0 python examples/caching_deep_dive.py

It uses a namespace of its own and deletes that namespace's keys when it ends.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from typing import Any

import aiotoolcache as atc
from aiotoolcache.purge import purge_namespace


async def main() -> None:
    url = os.environ.get("AIOTOOLCACHE_URL", "redis://127.0.0.1:6379/0")
    namespace = f"deep-dive-{uuid.uuid4().hex[:8]}"
    loads: dict[str, int] = {}

    def loader(name: str, value: Any) -> Any:
        async def load() -> Any:
            loads[name] = loads.get(name, 0) + 1
            await asyncio.sleep(0.05)
            return value

        return load

    # 1. Layers keep their own TTLs: discovery for a day, results for minutes.
    layers = {"results": atc.LayerConfig(ttl=60, beta=0.0)}
    async with (
        atc.ToolCache.from_url(url, namespace=namespace, layers=layers) as worker_a,
        atc.ToolCache.from_url(url, namespace=namespace, layers=layers) as worker_b,
    ):
        tools = await worker_a.list_tools("weather", loader("list", ["get_forecast"]))
        hours = worker_a.discovery.config.ttl / 3600
        print(f"1. Tool lists stay cached for {hours:g} h (discovery layer); tools: {tools}.")

        # 2. Two workers, one load: B reads what A loaded through Redis.
        await worker_a.call_tool("weather", "get_forecast", {"city": "Oslo"}, loader("call", 1))
        await worker_b.call_tool("weather", "get_forecast", {"city": "Oslo"}, loader("call", 2))
        print(
            f"2. Two workers asked for the same forecast; the tool ran {loads['call']} time: "
            "worker B read worker A's result from Redis."
        )

        # 3. Invalidation reaches the other worker's L1 through pub/sub.
        await worker_a.invalidate_server("weather")
        await asyncio.sleep(0.05)
        value = await worker_b.call_tool(
            "weather", "get_forecast", {"city": "Oslo"}, loader("call", 3)
        )
        print(
            f"3. Worker A invalidated the weather server; worker B heard it over pub/sub and "
            f"loaded a fresh value ({value!r}) instead of serving the old one."
        )

    # 4. Fail-open with a file fallback: an unreachable Redis costs one time budget, then
    #    the breaker opens and the fallback store serves what was mirrored to it.
    with tempfile.TemporaryDirectory() as fallback_dir:
        async with atc.ToolCache.from_url(
            "redis://127.0.0.1:1/0",  # nothing listens on port 1
            namespace=namespace,
            fallback=f"file://{fallback_dir}",
            budget=0.05,
            cooldown=30,
        ) as offline:
            for _ in range(6):  # the sixth call finds the breaker open
                offline.l1.clear()
                result = await offline.call_tool("search", "q", {}, loader("offline", "ok"))
            health = await offline.health()
            print(
                f"4. With Redis down every call still answered ({result!r}): the loader ran "
                f"{loads['offline']} time, the breaker is {health.breaker_state}, and the file "
                f"fallback served the rest (fallback in use: {health.fallback_in_use})."
            )

    # 5. Leave nothing behind: unlink this run's namespace (SCAN + UNLINK, never KEYS).
    async with atc.ToolCache.from_url(url, namespace=namespace) as cleaner:
        if cleaner.client is not None:
            removed = await purge_namespace(cleaner.client, namespace)
            print(f"5. Removed the {removed} keys this run wrote under namespace {namespace}.")


if __name__ == "__main__":
    asyncio.run(main())
