"""A slow, dead or hostile Redis never fails a tool call nor loses its result."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import aiotoolcache as atc
from tests.cluster_servers import TLSRedisServer
from tests.servers import RedisServer

pytestmark = pytest.mark.slow


def value_for(key: int) -> dict[str, Any]:
    return {"key": key, "payload": [key] * 3}


async def test_killed_redis_mid_run_loses_no_result_and_hits_resume(
    own_redis: RedisServer,
) -> None:
    cooldown = 1.0
    cache = atc.ToolCache.from_url(own_redis.url, namespace="kill", budget=0.1, cooldown=cooldown)
    errors: list[BaseException] = []
    wrong = 0
    done = 0
    past_600 = asyncio.Event()

    async def worker(task: int) -> None:
        nonlocal wrong, done
        for i in range(40):
            key = (task * 40 + i) % 300

            async def load(key: int = key) -> dict[str, Any]:
                await asyncio.sleep(0.001)
                return value_for(key)

            try:
                if await cache.results.get_or_load(key, load) != value_for(key):
                    wrong += 1
            except BaseException as exc:  # the point: nothing may escape
                errors.append(exc)
            done += 1
            if done == 600:
                past_600.set()

    async def killer() -> None:
        await past_600.wait()
        await asyncio.to_thread(own_redis.kill)

    async with cache:
        await asyncio.gather(killer(), *(worker(t) for t in range(50)))
        assert (errors, wrong, done) == ([], 0, 2000)
        # Reads stopped touching the dead Redis once the subscriber lost it (or the
        # breaker opened, if enough reads failed first): either way nothing waited on it.
        assert not cache.bus.hearing

        await asyncio.to_thread(own_redis.start)
        restarted = time.monotonic()
        l2_hit = False
        while time.monotonic() - restarted < cooldown + 1.0 and not l2_hit:
            await cache.results.set("probe", 1)
            cache.l1.clear()
            before = cache.stats()["results"].l2_hits
            await cache.results.get("probe")
            l2_hit = cache.stats()["results"].l2_hits > before
            await asyncio.sleep(0.05)
        assert l2_hit, "L2 hits did not resume within the cool-down + 1 s"


async def test_frozen_redis_costs_at_most_the_budget(own_redis: RedisServer) -> None:
    budget = 0.1
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="freeze", budget=budget, cooldown=0.5
    ) as cache:
        await cache.results.set("warm", 1)
        own_redis.pause()
        try:
            for i in range(10):
                started = time.monotonic()

                async def load(i: int = i) -> int:
                    await asyncio.sleep(0.01)
                    return i

                assert await cache.results.get_or_load(("frozen", i), load) == i
                # Loose bound: read budget + write budget + loader, with slack for a busy machine.
                assert time.monotonic() - started < 10 * budget + 1.0
            # Reads stop touching the frozen Redis once the breaker opens or the subscriber's
            # pings go unanswered (then nothing cached is trusted), whichever comes first.
            assert cache.breaker.state is not atc.BreakerState.CLOSED or not cache.bus.hearing
        finally:
            own_redis.resume()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            await cache.results.set("after", 2)
            cache.l1.clear()
            if await cache.results.get("after") == 2 and cache.breaker.state.value == "closed":
                break
            await asyncio.sleep(0.1)
        assert cache.breaker.state is atc.BreakerState.CLOSED


async def test_file_fallback_serves_mirrored_values_during_an_outage(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    calls = [0]

    async def load() -> str:
        calls[0] += 1
        return "from the tool"

    async with atc.ToolCache.from_url(
        own_redis.url,
        namespace="fb",
        fallback=f"file://{tmp_path}",
        mirror_to_fallback=True,
        budget=0.1,
        cooldown=30,
    ) as cache:
        assert await cache.results.get_or_load("k", load) == "from the tool"
        own_redis.kill()
        cache.l1.clear()
        assert await cache.results.get_or_load("k", load) == "from the tool"
        assert calls[0] == 1  # served from the file store, not reloaded
        # A value first loaded during the outage is loaded once and kept there.
        for _ in range(3):
            cache.l1.clear()
            assert await cache.results.get_or_load("new", load) == "from the tool"
        assert calls[0] == 2
        health = await cache.health()
        assert not health.reachable and health.fallback_in_use


async def test_file_store_is_a_single_machine_l2(tmp_path: Path) -> None:
    async with atc.ToolCache.from_url(f"file://{tmp_path}", namespace="disk") as first:
        await first.results.set("k", {"v": 1})
    async with atc.ToolCache.from_url(f"file://{tmp_path}", namespace="disk") as second:
        assert await second.results.get("k") == {"v": 1}


async def test_tls_with_the_ca_works_and_unknown_ca_fails_open() -> None:
    with TLSRedisServer() as server:
        async with atc.ToolCache.from_url(
            server.url, namespace="tls", tls_ca_file=str(server.ca_file)
        ) as trusted:
            await trusted.results.set("k", "secure")
            trusted.l1.clear()
            assert await trusted.results.get("k") == "secure"
            assert (await trusted.health()).ok

        async with atc.ToolCache.from_url(server.url, namespace="tls", budget=0.2) as untrusted:
            calls = [0]

            async def load() -> str:
                calls[0] += 1
                return "still answered"

            assert await untrusted.results.get_or_load("k", load) == "still answered"
            health = await untrusted.health()
            assert not health.reachable
            assert health.error is not None and "CERTIFICATE_VERIFY_FAILED" in health.error


async def test_strict_mode_surfaces_backend_errors(own_redis: RedisServer) -> None:
    async with atc.ToolCache.from_url(
        own_redis.url, namespace="strict", strict=True, budget=0.1
    ) as cache:
        own_redis.kill()
        # A write always goes to Redis (a read may find the subscriber has lost Redis
        # already, and then touches nothing cached).
        with pytest.raises(atc.BackendError):
            await cache.results.set("k", 1)
