"""Housekeeping keys expire: fleet keys carry a TTL renewed while workers live, and
``invalidate --purge`` removes a namespace's keys with SCAN and UNLINK."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

import aiotoolcache as atc
from aiotoolcache.fleet import FleetReporter, fleet_keys, retention_seconds
from aiotoolcache.purge import purge_namespace
from tests.test_cli import arun_cli


async def _pttl(url: str, key: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.pttl(key))
    finally:
        await client.aclose()


async def test_every_fleet_key_has_a_ttl_renewed_by_each_flush(
    redis_url: str, cache: atc.ToolCache
) -> None:
    reporter = FleetReporter(cache, interval=60)
    await cache.call_tool("s", "t", {}, lambda: asyncio.sleep(0, "v"))
    assert await reporter.flush()
    stats_key, workers_key, prefix = fleet_keys("test")
    longest = retention_seconds(cache)
    assert longest == max(
        layer.config.ttl + layer.config.stale_ttl for layer in cache.layers.values()
    )
    for key in (stats_key, workers_key, prefix + reporter.origin):
        assert await _pttl(redis_url, key) > 0, key  # -1 would mean: never expires
    assert 0 < await _pttl(redis_url, stats_key) <= longest * 1000
    # A later flush renews the TTL even when nothing changed.
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.pexpire(stats_key, 5_000)
        assert await reporter.flush()
        assert await client.pttl(stats_key) > 5_000
    finally:
        await client.aclose()
    await reporter.aclose()
    # After the last worker leaves, what remains still expires.
    assert await _pttl(redis_url, stats_key) > 0
    assert await _pttl(redis_url, prefix + reporter.origin) == -2  # heartbeat gone


async def test_purge_namespace_unlinks_only_that_namespace(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.mset({f"gone:k{i}": b"v" for i in range(1_234)})
        await client.set("kept:k", b"v")
        assert await purge_namespace(client, "gone", batch=100) == 1_234
        assert await client.dbsize() == 1 and await client.exists("kept:k")
    finally:
        await client.aclose()


async def test_invalidate_purge_from_the_command_line(redis_url: str, cache: atc.ToolCache) -> None:
    await cache.call_tool("s", "t", {}, lambda: asyncio.sleep(0, "v"))
    await cache.results.set("k", "v")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set("other:k", b"v")
        assert len(await client.keys("test:*")) >= 2
        result = await arun_cli(
            "invalidate", "--url", redis_url, "--namespace", "test", "--purge", "--json"
        )
        assert result.returncode == 0, result.stderr
        assert '"keys_deleted"' in result.stdout
        # No entry is left. The live worker may write its bookkeeping again at once (it
        # finds the generations gone and moves past them), which is what it should do.
        assert await client.keys("test:results:*") == []
        assert await client.exists("other:k")
    finally:
        await client.aclose()
