"""ToolCacheKeyValue: the py-key-value contract, and FastMCP's ResponseCachingMiddleware on it."""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("key_value.aio")

import aiotoolcache as atc
from aiotoolcache.integrations.key_value import ToolCacheKeyValue
from tests.integrations.kv_store_contract import (
    ContextManagedStoreContract,
    KeyValueStoreContract,
)


class TestEmbeddedContract(KeyValueStoreContract, ContextManagedStoreContract):
    """The contract on the embedded default: a cache passed in, and one the store created."""

    @pytest.fixture(params=["cache_passed_in", "cache_of_its_own"])
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[ToolCacheKeyValue]:
        if request.param == "cache_of_its_own":
            own = ToolCacheKeyValue()
            yield own
            assert own.cache.closing  # the lifecycle fixture closed or exited it
            return
        async with atc.ToolCache() as cache:
            yield ToolCacheKeyValue(cache)
            assert not cache.closing


class TestRedisContract(KeyValueStoreContract, ContextManagedStoreContract):
    """The contract on Redis, with a cache the store opened on the URL (and closes)."""

    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[ToolCacheKeyValue]:
        own = ToolCacheKeyValue(url=redis_url)
        yield own
        assert own.cache.closing


# -- lifecycle: async with and close() ---------------------------------------------------------


@pytest.mark.parametrize("exit_by", ["async_with", "close"])
async def test_a_store_closes_the_cache_it_created(exit_by: str) -> None:
    store = ToolCacheKeyValue()
    assert store.owns_cache
    if exit_by == "async_with":
        async with store:
            await store.put("k", {"v": 1}, collection="c")
            assert not store.cache.closing
    else:
        await store.put("k", {"v": 1}, collection="c")
        await store.close()
    assert store.cache.closing
    await store.close()  # a second close is harmless


async def test_an_unused_store_still_closes_its_cache() -> None:
    store = ToolCacheKeyValue()
    await store.close()
    assert store.cache.closing


@pytest.mark.parametrize("exit_by", ["async_with", "close"])
async def test_a_cache_passed_in_stays_open(cache: atc.ToolCache, exit_by: str) -> None:
    store = ToolCacheKeyValue(cache)
    assert not store.owns_cache
    if exit_by == "async_with":
        async with store:
            await store.put("k", {"v": 1}, collection="c")
    else:
        await store.put("k", {"v": 1}, collection="c")
        await store.close()
    assert not cache.closing
    # The cache still serves this store's entries and takes new ones.
    again = ToolCacheKeyValue(cache)
    assert await again.get("k", collection="c") == {"v": 1}
    await again.put("k2", {"v": 2}, collection="c")
    assert await again.get("k2", collection="c") == {"v": 2}


async def test_a_store_on_a_url_releases_its_redis_connections(redis_url: str) -> None:
    async with ToolCacheKeyValue(url=redis_url) as store:
        await store.put("k", {"v": 1}, collection="c", ttl=60)
        assert store.cache.client is not None  # a Redis-backed cache of its own
    assert store.cache.closing
    # What another store on the same Redis sees was written through.
    async with ToolCacheKeyValue(url=redis_url) as other:
        assert await other.get("k", collection="c") == {"v": 1}


def test_a_cache_and_a_url_are_refused(cache: atc.ToolCache) -> None:
    with pytest.raises(atc.ConfigurationError, match="either a cache or a url"):
        ToolCacheKeyValue(cache, url="memory://")


async def test_destroy_collection_drops_only_that_collection(cache: atc.ToolCache) -> None:
    store = ToolCacheKeyValue(cache)
    await store.put("k", {"v": 1}, collection="one")
    await store.put("k", {"v": 2}, collection="two")
    assert await store.destroy_collection("one") is True
    assert await store.get("k", collection="one") is None
    assert await store.get("k", collection="two") == {"v": 2}
    await store.put("k", {"v": 3}, collection="one")  # the collection is usable again
    assert await store.get("k", collection="one") == {"v": 3}


async def test_destroy_drops_only_this_store(cache: atc.ToolCache) -> None:
    mine = ToolCacheKeyValue(cache, name="mine")
    theirs = ToolCacheKeyValue(cache, name="theirs")
    await mine.put("k", {"v": "mine"}, collection="c")
    await theirs.put("k", {"v": "theirs"}, collection="c")
    await cache.results.set("unrelated", 1)
    assert await mine.destroy() is True
    assert await mine.get("k", collection="c") is None
    assert await theirs.get("k", collection="c") == {"v": "theirs"}
    assert await cache.results.get("unrelated") == 1


async def test_entries_live_in_their_layer(cache: atc.ToolCache) -> None:
    store = ToolCacheKeyValue(cache, layer="sessions")
    await store.put("k", {"v": 1}, collection="c")
    assert cache.layer("sessions").config.jitter == 0.0
    await cache.invalidate(layer="sessions")
    assert await store.get("k", collection="c") is None


async def test_two_caches_on_one_redis_share_entries(redis_url: str) -> None:
    namespace = f"kv-{uuid.uuid4().hex}"
    async with (
        atc.ToolCache.from_url(redis_url, namespace=namespace) as first,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as second,
    ):
        await ToolCacheKeyValue(first).put("k", {"v": 1}, collection="c", ttl=60)
        value, ttl = await ToolCacheKeyValue(second).ttl("k", collection="c")
        assert value == {"v": 1}
        assert ttl is not None and 55 < ttl <= 60
        await ToolCacheKeyValue(second).destroy_collection("c")
        # The other worker hears of the invalidation through Redis pub/sub.
        for _ in range(100):
            if await ToolCacheKeyValue(first).get("k", collection="c") is None:
                break
            await asyncio.sleep(0.02)
        assert await ToolCacheKeyValue(first).get("k", collection="c") is None


def test_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "key_value.aio.stores.base", None)
    monkeypatch.delitem(sys.modules, "aiotoolcache.integrations.key_value")
    with pytest.raises(ImportError, match=r"pip install 'aiotoolcache\[fastmcp\]'"):
        importlib.import_module("aiotoolcache.integrations.key_value")


# -- FastMCP's ResponseCachingMiddleware on a ToolCacheKeyValue ---------------------------


class TestResponseCachingMiddleware:
    @pytest.fixture(autouse=True)
    def _needs_fastmcp(self) -> None:
        pytest.importorskip("fastmcp")

    def _server(self, store: ToolCacheKeyValue, calls: list[str]) -> object:
        from fastmcp import FastMCP
        from fastmcp.server.middleware.caching import ResponseCachingMiddleware

        server = FastMCP("calc")
        server.add_middleware(ResponseCachingMiddleware(cache_storage=store))

        @server.tool
        def add(a: int, b: int) -> int:
            calls.append("add")
            return a + b

        return server

    async def test_serves_repeated_calls(self, cache: atc.ToolCache) -> None:
        from fastmcp import Client, FastMCP

        calls: list[str] = []
        server = self._server(ToolCacheKeyValue(cache), calls)
        assert isinstance(server, FastMCP)
        async with Client(server) as client:
            first = await client.call_tool("add", {"a": 1, "b": 2})
            second = await client.call_tool("add", {"b": 2, "a": 1})
            assert first.data == second.data == 3
            assert calls == ["add"]
            assert await client.list_tools() == await client.list_tools()

    async def test_clearing_one_collection_keeps_the_others(self, cache: atc.ToolCache) -> None:
        from fastmcp import Client, FastMCP

        calls: list[str] = []
        store = ToolCacheKeyValue(cache)
        server = self._server(store, calls)
        assert isinstance(server, FastMCP)
        async with Client(server) as client:
            await client.list_tools()
            await client.call_tool("add", {"a": 1, "b": 2})
            listing = cache.stats().layers["kv"]
            await store.destroy_collection("tools/call")
            await client.call_tool("add", {"a": 1, "b": 2})
            assert calls == ["add", "add"]  # the call collection was cleared
            await client.list_tools()
            after = cache.stats().layers["kv"]
            # the listing was still cached: one more hit, no more misses for it
            assert after.l1_hits + after.l2_hits > listing.l1_hits + listing.l2_hits

    async def test_response_cache_store_clear_is_scoped(self, cache: atc.ToolCache) -> None:
        from fastmcp.client.caching import KeyValueResponseCacheStore
        from mcp.client.caching import CacheEntry, CacheKey
        from mcp_types import ListToolsResult

        storage = ToolCacheKeyValue(cache)
        responses = KeyValueResponseCacheStore(storage, collection="responses")
        entry = CacheEntry(value=ListToolsResult(tools=[]), scope="private", expires_at=None)
        await responses.set(CacheKey("tools/list", "", "p"), entry)
        await storage.put("other", {"kept": True}, collection="elsewhere")
        assert await responses.get(CacheKey("tools/list", "", "p")) == entry
        await responses.clear()
        assert await responses.get(CacheKey("tools/list", "", "p")) is None
        assert await storage.get("other", collection="elsewhere") == {"kept": True}

    async def test_on_redis(self, redis_url: str) -> None:
        from fastmcp import Client, FastMCP

        calls: list[str] = []
        namespace = f"rcm-{uuid.uuid4().hex}"
        async with (
            atc.ToolCache.from_url(redis_url, namespace=namespace) as first,
            atc.ToolCache.from_url(redis_url, namespace=namespace) as second,
        ):
            replica_a = self._server(ToolCacheKeyValue(first), calls)
            replica_b = self._server(ToolCacheKeyValue(second), calls)
            assert isinstance(replica_a, FastMCP) and isinstance(replica_b, FastMCP)
            async with Client(replica_a) as client:
                assert (await client.call_tool("add", {"a": 2, "b": 2})).data == 4
            async with Client(replica_b) as client:
                assert (await client.call_tool("add", {"a": 2, "b": 2})).data == 4
            assert calls == ["add"]
