"""cache_control directives on a real Redis: every mode, max_age, nesting and tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import aiotoolcache as atc
from aiotoolcache.control import (
    META_KEY,
    CacheDirective,
    applied,
    current_directive,
    directive_from_meta,
)
from tests.workers import Link, Worker, run_workers


def counting(prefix: str = "v") -> tuple[list[int], Callable[[], Awaitable[str]]]:
    runs = [0]

    async def load() -> str:
        runs[0] += 1
        return f"{prefix}{runs[0]}"

    return runs, load


async def test_refresh_runs_the_loader_and_stores(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    runs, load = counting()
    assert await cache.results.get_or_load("k", load) == "v1"
    with atc.cache_control("refresh"):
        assert await cache.results.get_or_load("k", load) == "v2"
    assert await cache.results.get_or_load("k", load) == "v2"
    assert await other_worker.results.get_or_load("k", load) == "v2"
    assert runs == [2]


async def test_bypass_neither_reads_nor_stores(cache: atc.ToolCache) -> None:
    runs, load = counting()
    assert await cache.results.get_or_load("k", load) == "v1"
    with atc.cache_control("bypass"):
        assert await cache.results.get_or_load("k", load) == "v2"  # not read
        assert await cache.results.get_or_load("new", load) == "v3"
        assert await cache.results.get("k") is None
        await cache.results.set("other", "x")
    assert await cache.results.get_or_load("k", load) == "v1"  # not overwritten
    assert await cache.results.get("new") is None  # not stored
    assert await cache.results.get("other") is None
    assert runs == [3]


async def test_no_store_reads_but_never_writes(cache: atc.ToolCache) -> None:
    runs, load = counting()
    await cache.results.get_or_load("k", load)
    with atc.cache_control("no-store"):
        assert await cache.results.get_or_load("k", load) == "v1"  # read
        assert await cache.results.get_or_load("new", load) == "v2"  # miss: loaded
        await cache.results.set("other", "x")
    assert await cache.results.get("new") is None
    assert await cache.results.get("other") is None
    assert runs == [2]


async def test_only_if_cached_never_runs_a_loader(cache: atc.ToolCache) -> None:
    runs, load = counting()
    await cache.results.get_or_load("k", load)
    with atc.cache_control("only-if-cached"):
        assert await cache.results.get_or_load("k", load) == "v1"
        with pytest.raises(atc.NotCached):
            await cache.results.get_or_load("missing", load)
        with pytest.raises(atc.NotCached):
            await cache.call_tool("s", "t", {}, load)
        with pytest.raises(atc.NotCached):
            await cache.list_tools("s", load)
        with pytest.raises(atc.NotCached):
            await cache.embed(["a"], model="m", loader=lambda texts: vectors(texts))
    assert runs == [1]


async def vectors(texts: list[str]) -> list[list[float]]:
    return [[1.0, 2.0] for _ in texts]


async def test_max_age_treats_older_entries_as_misses(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    runs, load = counting()
    await cache.results.get_or_load("k", load)
    with atc.cache_control(max_age=60):
        assert await cache.results.get_or_load("k", load) == "v1"
    await asyncio.sleep(0.15)
    with atc.cache_control(max_age=0.1):
        assert await cache.results.get("k") is None
        assert await other_worker.results.get_or_load("k", load) == "v2"  # too old: reloaded
    assert await cache.results.get_or_load("k", load) == "v2"  # and stored for everyone
    with atc.cache_control("only-if-cached", max_age=0.1):
        assert await cache.results.get_or_load("k", load) == "v2"
    await asyncio.sleep(0.15)
    with atc.cache_control("only-if-cached", max_age=0.1), pytest.raises(atc.NotCached):
        await cache.results.get_or_load("k", load)
    assert runs == [2]


async def test_max_age_on_a_miss_keeps_single_flight(cache: atc.ToolCache) -> None:
    runs = [0]
    gate = asyncio.Event()

    async def slow() -> str:
        runs[0] += 1
        await gate.wait()
        return "v"

    with atc.cache_control(max_age=30):
        calls = [asyncio.create_task(cache.results.get_or_load("k", slow)) for _ in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(*calls) == ["v"] * 5
    assert runs == [1]


def test_nested_blocks_combine_innermost_winning_per_field() -> None:
    assert current_directive() is None
    with atc.cache_control(max_age=30):
        with atc.cache_control("no-store") as inner:
            assert inner == CacheDirective("no-store", 30)
            with atc.cache_control("refresh", max_age=5):
                assert current_directive() == CacheDirective("refresh", 5)
            assert current_directive() == CacheDirective("no-store", 30)
        assert current_directive() == CacheDirective(None, 30)
    assert current_directive() is None


async def test_tasks_started_inside_see_the_directive() -> None:
    async def seen() -> CacheDirective | None:
        return current_directive()

    with atc.cache_control("bypass"):
        task = asyncio.create_task(seen())
    outside = asyncio.create_task(seen())
    assert await task == CacheDirective("bypass")
    assert await outside is None


def test_bad_directives_are_refused() -> None:
    with pytest.raises(atc.ConfigurationError, match="mode"):
        with atc.cache_control("sometimes"):  # type: ignore[arg-type]
            pass
    with pytest.raises(atc.ConfigurationError, match="max_age"):
        with atc.cache_control(max_age=-1):
            pass
    # From a client's _meta, junk is ignored rather than raised.
    key = "io.aiotoolcache/cache-control"
    assert directive_from_meta({key: "refresh"}) == CacheDirective("refresh")
    assert directive_from_meta({key: {"max_age": 5}}) == CacheDirective(None, 5)
    assert directive_from_meta({key: "sometimes"}) is None
    assert directive_from_meta({key: {"max_age": "x"}}) is None
    assert directive_from_meta(None) is None


async def test_the_decorator_follows_the_directive(cache: atc.ToolCache) -> None:
    runs = [0]

    @cache.cached("results", ttl=60)
    async def lookup(x: int) -> dict[str, Any]:
        runs[0] += 1
        return {"x": x, "run": runs[0]}

    await lookup(1)
    with atc.cache_control("refresh"):
        assert (await lookup(1))["run"] == 2
    with atc.cache_control("only-if-cached"):
        assert (await lookup(1))["run"] == 2
        with pytest.raises(atc.NotCached):
            await lookup(2)
    assert runs == [2]


# -- in real worker processes -------------------------------------------------------------


async def directed(cache: atc.ToolCache, link: Link, _arg: None) -> None:
    """Run ``(mode, max_age, key)`` lookups under cache_control until told to stop."""
    runs = [0]

    async def load() -> str:
        runs[0] += 1
        return f"w{link.index}-{runs[0]}"

    while (command := await link.recv()) is not None:
        mode, max_age, key = command
        before = runs[0]
        try:
            with atc.cache_control(mode, max_age=max_age):
                reply: dict[str, Any] = {"value": await cache.results.get_or_load(key, load)}
        except atc.NotCached:
            reply = {"value": "NotCached"}
        reply["ran"] = runs[0] > before
        link.send(reply)


async def test_every_mode_across_worker_processes(redis_url: str) -> None:
    async def ask(worker: Worker, mode: Any, key: str, max_age: float | None = None) -> Any:
        worker.send((mode, max_age, key))
        reply = await worker.recv()
        return reply["value"], reply["ran"]

    async def until(worker: Worker, value: str, max_age: float | None = None) -> None:
        async with asyncio.timeout(5):
            while (got := await ask(worker, None, "k", max_age)) != (value, False):
                assert got[1] is False, got  # a hit, never a load, while waiting
                await asyncio.sleep(0.01)

    async with run_workers(2, redis_url, directed, namespace="modes") as (a, b):
        assert await ask(a, None, "k") == ("w0-1", True)
        assert await ask(b, "only-if-cached", "k") == ("w0-1", False)
        assert await ask(b, "only-if-cached", "missing") == ("NotCached", False)
        assert await ask(b, "no-store", "k2") == ("w1-1", True)
        assert await ask(a, "only-if-cached", "k2") == ("NotCached", False)  # not stored
        assert await ask(b, "bypass", "k") == ("w1-2", True)
        assert await ask(a, None, "k") == ("w0-1", False)  # bypass stored nothing
        assert await ask(b, "refresh", "k") == ("w1-3", True)
        await until(a, "w1-3")  # the refreshed value replaced every worker's copy
        await asyncio.sleep(0.3)
        assert await ask(b, None, "k", max_age=0.2) == ("w1-4", True)  # too old: reloaded
        await until(a, "w1-4", max_age=60)
        for worker in (a, b):
            worker.send(None)
            await worker.result()


@pytest.mark.parametrize("lookup", ["max_age", "only-if-cached", "get", "mcp-meta"])
async def test_a_directed_first_call_on_a_lazily_started_cache_never_serves_an_invalidated_entry(
    redis_url: str, lookup: str
) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="lazy") as writer:
        await writer.results.set("k", "old")
        await writer.invalidate(layer="results")
        # Under generation 0 of the layer the old entry is still in Redis.
    fresh = atc.ToolCache.from_url(redis_url, namespace="lazy")  # started by its first call
    _, load = counting("new")
    try:
        if lookup == "max_age":
            with atc.cache_control(max_age=600):
                assert await fresh.results.get_or_load("k", load) == "new1"
        elif lookup == "only-if-cached":
            with atc.cache_control("only-if-cached"), pytest.raises(atc.NotCached):
                await fresh.results.get_or_load("k", load)
        elif lookup == "get":
            with atc.cache_control(max_age=600):
                assert await fresh.results.get("k") is None
        else:
            # An MCP request's _meta directive takes the same path.
            with applied(directive_from_meta({META_KEY: {"max_age": 600}})):
                assert await fresh.results.get_or_load("k", load) == "new1"
    finally:
        await fresh.aclose()
