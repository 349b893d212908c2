"""A cache's life: start-up messages, lazy starts, use after close, nothing leaked at exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import textwrap
import tracemalloc
import weakref

import pytest

import aiotoolcache as atc
from aiotoolcache import types_ext
from tests.servers import RedisServer, free_port
from tests.workers import Counting, eventually


async def one() -> int:
    return 1


async def test_start_warns_once_when_redis_is_unreachable_then_informs_when_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, logger="aiotoolcache")
    cache = atc.ToolCache.from_url(f"redis://127.0.0.1:{port}/0", health_interval=0.1)
    try:
        await cache.start()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "uncached until it does" in warnings[0].getMessage()
        server = RedisServer(port=port).start()
        try:
            await eventually(lambda: cache.coherence.known, within=10)
            assert any("caching is on" in r.getMessage() for r in caplog.records)
            assert await cache.results.get_or_load("k", one) == 1
        finally:
            await cache.aclose()
            server.stop()
    finally:
        await cache.aclose()


async def test_a_lazy_start_warns_once_with_the_fix(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = atc.ToolCache.from_url(redis_url, namespace="lazy")
    try:
        for _ in range(3):
            await cache.results.get_or_load("k", one)
        lazy = [r for r in caplog.records if "started lazily" in r.getMessage()]
        assert len(lazy) == 1 and "async with" in lazy[0].getMessage()
    finally:
        await cache.aclose()


async def test_use_after_close_raises_cache_closed(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="closed") as cache:
        await cache.results.set("k", 1)
    for call in (
        lambda: cache.results.get_or_load("k", one),
        lambda: cache.results.get("k"),
        lambda: cache.results.set("k", 2),
        lambda: cache.invalidate(layer="results"),
        cache.start,
    ):
        with pytest.raises(atc.CacheClosed, match="aclose"):
            await call()


def test_an_unclosed_cache_leaks_nothing_at_exit(redis_server: RedisServer) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, gc
        import aiotoolcache as atc

        async def main():
            cache = atc.ToolCache.from_url("{redis_server.url}", namespace="exit")
            async def load():
                return 1
            assert await cache.results.get_or_load("k", load) == 1

        asyncio.run(main())
        gc.collect()
        print("clean exit")
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "clean exit" in result.stdout
    assert "ResourceWarning" not in result.stderr and "unclosed" not in result.stderr


async def test_aclose_never_hangs(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from aiotoolcache import toolcache

    monkeypatch.setattr(toolcache, "CLOSE_WITHIN", 0.2)
    cache = atc.ToolCache.from_url(redis_url, namespace="stuck")
    await cache.start()

    async def stuck(grace: float = 5.0) -> None:
        await asyncio.sleep(3600)  # background work that never ends

    monkeypatch.setattr(cache.loads, "aclose", stuck)
    async with asyncio.timeout(5):
        await cache.aclose()
    assert any("closed at once" in r.getMessage() for r in caplog.records)


async def test_a_closed_cache_is_collected_with_everything_it_started(redis_url: str) -> None:
    # A worker that opens a cache per task (or per chaos phase) must not accumulate them:
    # no task, callback or registry outlives aclose() holding a reference.
    refs: list[weakref.ref[atc.ToolCache]] = []
    for i in range(20):
        async with atc.ToolCache.from_url(redis_url, namespace="gc") as cache:
            await cache.results.get_or_load(("k", i % 3), Counting(i))
            await cache.results.delete(("k", i % 3), settle=True)
            await cache.call_tool("s", "write", {"i": i}, Counting("ok"), writes=True)
            refs.append(weakref.ref(cache))
        del cache
    await asyncio.sleep(0)  # callbacks scheduled by the last close run
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


def _largest_block_from(module_file: str) -> int:
    """The size of the largest live allocation made from ``module_file`` (tracemalloc)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, module_file)])
    return max((trace.size for trace in snapshot.traces), default=0)


async def test_a_closed_cache_frees_its_encoding_buffers_while_still_referenced(
    redis_url: str,
) -> None:
    # A cache's objects form reference cycles, freed when the cyclic collector runs;
    # the msgpack packers it keeps for reuse hold native buffers (256 KiB each), which
    # aclose() frees at once, so a worker opening cache after cache does not pile them
    # up (and grow its heap) between collections.
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()  # nothing is freed here by the collector: only by aclose()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        async with atc.ToolCache.from_url(redis_url, namespace="buffers") as cache:
            for i in range(20):
                await cache.results.set(("k", i), {"i": i, "tags": ("a", "b")})
                assert await cache.results.get_or_load(("n", i), one) == 1
            open_block = _largest_block_from(types_ext.__file__)
        closed_block = _largest_block_from(types_ext.__file__)
        assert open_block >= 64 * 1024  # a packer's buffer, seen while the cache is open
        assert closed_block < 64 * 1024, closed_block
        # Encoding after the release builds a new packer.
        assert cache.codec.decode_value(cache.codec.encode_value({"i": 1})) == {"i": 1}
    finally:
        if not tracing:
            tracemalloc.stop()
        if collecting:
            gc.enable()
