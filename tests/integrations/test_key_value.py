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
from tests.integrations.kv_store_contract import KeyValueStoreContract


class TestEmbeddedContract(KeyValueStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[ToolCacheKeyValue]:
        async with atc.ToolCache() as cache:
            yield ToolCacheKeyValue(cache)


class TestRedisContract(KeyValueStoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[ToolCacheKeyValue]:
        async with atc.ToolCache.from_url(redis_url, namespace="kv-contract") as cache:
            yield ToolCacheKeyValue(cache)


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
