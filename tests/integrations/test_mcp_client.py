"""The MCP SDK adapters: ToolCacheResponseStore and ToolCallCache, in process (no network)."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import uuid
from typing import Any

import pytest

pytest.importorskip("mcp.client.caching")
pytest.importorskip("fastmcp")

import mcp_types
import redis
from fastmcp import Client as FastMCPClient
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import Tool, ToolResult
from mcp import Client
from mcp.client.caching import CacheConfig, CacheEntry, CacheKey
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer
from mcp_types import ListToolsResult, ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations.mcp import (
    ToolCacheResponseStore,
    ToolCallCache,
    cached_call_tool,
    partition_for_token,
)
from tests.integrations.fastmcp_helpers import RequestCounter

READ_ONLY = ToolAnnotations(read_only_hint=True)


def make_server(**options: Any) -> tuple[FastMCP, dict[str, int], RequestCounter]:
    runs: dict[str, int] = {}

    def ran(tool: str) -> None:
        runs[tool] = runs.get(tool, 0) + 1

    server = FastMCP("weather", **options)
    counter = RequestCounter()
    server.add_middleware(counter)

    @server.tool(annotations=READ_ONLY)
    def forecast(city: str, days: int = 1) -> dict[str, Any]:
        ran("forecast")
        return {"city": city, "days": days}

    @server.tool
    def book(city: str) -> str:
        ran("book")
        return f"booked {city}"

    @server.tool(annotations=READ_ONLY)
    def flaky(city: str) -> str:
        ran("flaky")
        raise ToolError("upstream down")

    @server.tool(annotations=READ_ONLY)
    def soft_error(city: str) -> ToolResult:
        ran("soft_error")
        return ToolResult(content="no data", is_error=True)

    @server.tool
    async def add_tool(ctx: Context) -> str:
        server.add_tool(Tool.from_function(lambda: "new", name="brand_new"))
        await ctx.send_notification(mcp_types.ToolListChangedNotification())
        return "added"

    return server, runs, counter


# -- ToolCallCache ------------------------------------------------------------------------------


async def test_second_identical_call_is_served_from_cache(cache: atc.ToolCache) -> None:
    server, runs, _ = make_server()
    calls = ToolCallCache(cache, server_id="weather")
    async with FastMCPClient(server) as client:
        first = await calls.call_tool(client, "forecast", {"city": "Paris", "days": 2})
        second = await calls.call_tool(client, "forecast", {"days": 2, "city": "Paris"})
        third = await calls.call_tool(client.session, "forecast", {"city": "Paris", "days": 2})
    assert runs == {"forecast": 1}
    assert first == second == third
    assert first.structured_content == {"city": "Paris", "days": 2}


async def test_errors_and_non_read_only_tools_are_not_cached(cache: atc.ToolCache) -> None:
    server, runs, _ = make_server()
    calls = ToolCallCache(cache, server_id="weather")
    async with FastMCPClient(server) as client:
        for _ in range(2):
            assert (await calls.call_tool(client, "flaky", {"city": "x"})).is_error
            assert (await calls.call_tool(client, "soft_error", {"city": "x"})).is_error
            assert not (await calls.call_tool(client, "book", {"city": "x"})).is_error
    assert runs == {"flaky": 2, "soft_error": 2, "book": 2}


async def test_allow_and_deny_lists(cache: atc.ToolCache) -> None:
    server, runs, _ = make_server()
    calls = ToolCallCache(cache, server_id="weather", allow_tools=["book"], deny_tools=["forecast"])
    async with FastMCPClient(server) as client:
        for _ in range(2):
            await calls.call_tool(client, "book", {"city": "x"})
            await calls.call_tool(client, "forecast", {"city": "x"})
    assert runs == {"book": 1, "forecast": 2}


async def test_partitions_are_isolated(cache: atc.ToolCache) -> None:
    server, runs, _ = make_server()
    alice = ToolCallCache(cache, server_id="weather", partition=partition_for_token("alice"))
    bob = ToolCallCache(cache, server_id="weather", partition=partition_for_token("bob"))
    async with FastMCPClient(server) as client:
        for calls in (alice, bob, alice, bob):
            await calls.call_tool(client, "forecast", {"city": "x"})
    assert runs == {"forecast": 2}
    assert partition_for_token("alice") != partition_for_token("bob")
    assert "alice" not in partition_for_token("alice")


async def test_list_changed_invalidates_discovery(cache: atc.ToolCache) -> None:
    server, _, counter = make_server()
    calls = ToolCallCache(cache, server_id="weather")
    delivered: list[str] = []

    async def app_handler(message: Any) -> None:
        delivered.append(type(message).__name__)

    async with FastMCPClient(server, message_handler=calls.message_handler(app_handler)) as client:
        before = {tool.name for tool in await calls.list_tools(client)}
        assert {tool.name for tool in await calls.list_tools(client)} == before
        listed = counter.count("tools/list")
        await client.call_tool("add_tool", {})
        after = {tool.name for tool in await calls.list_tools(client)}
    assert after == before | {"brand_new"}
    assert counter.count("tools/list") > listed
    assert "ToolListChangedNotification" in delivered  # the application still sees it


async def test_an_empty_tool_list_is_cached(cache: atc.ToolCache) -> None:
    server = FastMCP("empty")
    counter = RequestCounter()
    server.add_middleware(counter)
    calls = ToolCallCache(cache, server_id="empty")
    async with FastMCPClient(server) as client:
        assert await calls.list_tools(client) == []
        assert await calls.list_tools(client) == []
        assert (await calls.call_tool(client, "missing", {})).is_error
    assert counter.count("tools/list") == 1


async def test_server_list_hints_are_honoured(cache: atc.ToolCache) -> None:
    server, _, counter = make_server(cache_ttl=1, cache_scope="public")
    alice = ToolCallCache(cache, server_id="weather", partition="alice", share_public=True)
    bob = ToolCallCache(cache, server_id="weather", partition="bob", share_public=True)
    async with FastMCPClient(server) as client:
        assert client.protocol_version == "2026-07-28"
        await alice.list_tools(client)
        await bob.list_tools(client)  # cacheScope "public": shared across partitions
        assert counter.count("tools/list") == 1
        await asyncio.sleep(1.05)  # ttlMs = 1000
        await alice.list_tools(client)
        assert counter.count("tools/list") == 2


async def test_share_public_never_serves_a_listing_stored_private(cache: atc.ToolCache) -> None:
    anonymous_view = MCPServer("inv")  # no hint at all: the listing is private

    @anonymous_view.tool(annotations=READ_ONLY)
    def lookup(sku: str) -> str:
        return "anonymous"

    own_view, _, counter = make_server()
    anonymous = ToolCallCache(cache, server_id="inv")  # no partition: stores in the shared one
    tenant = ToolCallCache(cache, server_id="inv", partition="tenant-b", share_public=True)
    async with Client(anonymous_view, cache=None) as client:
        assert [t.name for t in await anonymous.list_tools(client)] == ["lookup"]
    async with FastMCPClient(own_view) as client:
        names = [t.name for t in await tenant.list_tools(client)]
        assert "lookup" not in names and "book" in names  # its own listing, from its server
        await tenant.list_tools(client)
    assert counter.count("tools/list") == 1  # then cached in its own partition


async def test_share_public_serves_a_public_listing_to_every_partition(
    cache: atc.ToolCache,
) -> None:
    server, _, counter = make_server(cache_ttl=60, cache_scope="public")
    anonymous = ToolCallCache(cache, server_id="weather", share_public=True)
    tenant = ToolCallCache(cache, server_id="weather", partition="tenant-b", share_public=True)
    async with FastMCPClient(server) as client:
        await anonymous.list_tools(client)
        assert "forecast" in [t.name for t in await tenant.list_tools(client)]
    assert counter.count("tools/list") == 1


async def test_a_replay_never_lists_the_servers_tools(tmp_path: Any) -> None:
    tape = tmp_path / "mcp.jsonl"
    for mode in ("record", "replay"):
        server, runs, counter = make_server()
        async with (
            atc.ToolCache(cassette=tape, mode=mode) as cache,
            FastMCPClient(server) as client,
        ):
            calls = ToolCallCache(cache, server_id="weather")
            assert "forecast" in [t.name for t in await calls.list_tools(client)]
            result = await calls.call_tool(client, "forecast", {"city": "Oslo"})
            assert result.structured_content == {"city": "Oslo", "days": 1}
        # Recording runs every call live (call_tool lists the tools again); a replay, none.
        assert counter.count("tools/list") == (2 if mode == "record" else 0), mode
        assert runs.get("forecast", 0) == (1 if mode == "record" else 0), mode


async def test_a_zero_ttl_hint_can_be_respected(cache: atc.ToolCache) -> None:
    server = MCPServer("hinted", cache_hints={"tools/list": CacheHint(ttl_ms=0, scope="private")})

    @server.tool(annotations=READ_ONLY)
    def ping() -> str:
        return "pong"

    calls = ToolCallCache(cache, server_id="hinted", respect_zero_ttl=True)
    async with Client(server, cache=None) as client:
        await calls.list_tools(client)
        await calls.list_tools(client)
        result = await calls.call_tool(client, "ping")
    assert [block.text for block in result.content if isinstance(block, mcp_types.TextContent)] == [
        "pong"
    ]
    assert cache.stats().layers["discovery"].l1_hits == 0


async def test_works_with_the_sdk_client_and_server(cache: atc.ToolCache) -> None:
    server = MCPServer("sdk")
    runs: list[str] = []

    @server.tool(annotations=READ_ONLY)
    def lookup(key: str, exact: bool = True) -> str:
        runs.append(key)
        return f"value of {key}"

    async with Client(server) as client:
        first = await cached_call_tool(
            client, cache, "lookup", {"key": "k", "exact": False}, server_id="sdk"
        )
        second = await cached_call_tool(
            client, cache, "lookup", {"exact": False, "key": "k"}, server_id="sdk"
        )
    assert first == second
    assert runs == ["k"]


async def test_invalidate_drops_listing_and_results(cache: atc.ToolCache) -> None:
    server, runs, _ = make_server()
    calls = ToolCallCache(cache, server_id="weather")
    async with FastMCPClient(server) as client:
        await calls.call_tool(client, "forecast", {"city": "x"})
        await calls.invalidate()
        await calls.call_tool(client, "forecast", {"city": "x"})
    assert runs == {"forecast": 2}


# -- ToolCacheResponseStore --------------------------------------------------------------------


async def test_response_store_serves_the_sdk_client(cache: atc.ToolCache) -> None:
    server, _, counter = make_server(cache_ttl=60)
    config = CacheConfig(store=ToolCacheResponseStore(cache), partition="p", target_id="weather")
    async with FastMCPClient(server, cache=config) as client:
        first = await client.list_tools_mcp()
    async with FastMCPClient(server, cache=config) as client:
        second = await client.list_tools_mcp()
    assert first == second
    assert counter.count("tools/list") == 1


async def test_round_trips_models_and_plain_values(cache: atc.ToolCache) -> None:
    store = ToolCacheResponseStore(cache)
    listing = ListToolsResult.model_validate(
        {
            "tools": [
                {
                    "name": "t",
                    "inputSchema": {"type": "object"},
                    "annotations": {"readOnlyHint": True},
                    "icons": [{"src": "https://e.x/i.png"}],
                    "_meta": {"k": "v"},
                }
            ],
            "ttlMs": 5000,
            "cacheScope": "public",
        }
    )
    read = mcp_types.ReadResourceResult(
        contents=[
            mcp_types.TextResourceContents(uri="file:///a", text="a"),
            mcp_types.BlobResourceContents(uri="file:///b", blob="AAEC"),
        ]
    )
    entries = {
        CacheKey("tools/list", "", "p"): CacheEntry(listing, "public", time.time() + 5),
        CacheKey("resources/read", "file:///a", "p"): CacheEntry(read, "private", 1.5),
        CacheKey("custom", "", "p"): CacheEntry({"a": [1, 2.5, None, "x"]}, "private", None),
    }
    for key, entry in entries.items():
        await store.set(key, entry)
    for key, entry in entries.items():
        got = await store.get(key)
        assert got == entry
        assert got is not None and type(got.value) is type(entry.value)


async def test_an_expired_entry_comes_back_until_deleted(redis_url: str) -> None:
    namespace = f"responses-{uuid.uuid4().hex}"
    async with atc.ToolCache.from_url(redis_url, namespace=namespace) as cache:
        store = ToolCacheResponseStore(cache, retention=120)
        key = CacheKey("tools/list", "", "p")
        entry = CacheEntry(ListToolsResult(tools=[]), "private", time.time() - 30)
        await store.set(key, entry)
        assert await store.get(key) == entry
        with redis.Redis.from_url(redis_url) as plain:
            names = list(plain.scan_iter(match=f"{namespace}:mcp_responses:*"))
            assert names
            ttls = [plain.pttl(name) for name in names if not name.endswith(b":lease")]
        assert all(0 < ttl <= 120_000 for ttl in ttls)  # retention is separate and bounded
        await store.delete(key)
        assert await store.get(key) is None


async def test_clear_drops_only_this_store(cache: atc.ToolCache) -> None:
    mine = ToolCacheResponseStore(cache, name="mine")
    theirs = ToolCacheResponseStore(cache, name="theirs")
    key = CacheKey("tools/list", "", "p")
    entry = CacheEntry({"tools": []}, "private", None)
    await mine.set(key, entry)
    await theirs.set(key, entry)
    await mine.clear()
    assert await mine.get(key) is None
    assert await theirs.get(key) == entry


async def test_two_caches_on_one_redis_share_entries(redis_url: str) -> None:
    server, _, counter = make_server(cache_ttl=60)
    namespace = f"responses-{uuid.uuid4().hex}"
    async with (
        atc.ToolCache.from_url(redis_url, namespace=namespace) as first,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as second,
    ):
        for cache in (first, second):
            config = CacheConfig(
                store=ToolCacheResponseStore(cache), partition="tenant", target_id="weather"
            )
            async with FastMCPClient(server, cache=config) as client:
                assert {tool.name for tool in await client.list_tools()} >= {"forecast"}
        assert counter.count("tools/list") == 1


async def test_tool_results_are_shared_through_redis(redis_url: str) -> None:
    server, runs, _ = make_server()
    namespace = f"calls-{uuid.uuid4().hex}"
    async with (
        atc.ToolCache.from_url(redis_url, namespace=namespace) as first,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as second,
    ):
        async with FastMCPClient(server) as client:
            a = await ToolCallCache(first, server_id="weather").call_tool(
                client, "forecast", {"city": "Rome"}
            )
            b = await ToolCallCache(second, server_id="weather").call_tool(
                client, "forecast", {"city": "Rome"}
            )
    assert a == b
    assert runs == {"forecast": 1}


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp.client.caching", None)
    monkeypatch.delitem(sys.modules, "aiotoolcache.integrations.mcp")
    with pytest.raises(ImportError, match=r"pip install 'aiotoolcache\[mcp\]'"):
        importlib.import_module("aiotoolcache.integrations.mcp")


async def test_a_result_built_from_an_answer_the_client_gave_is_never_stored(
    cache: atc.ToolCache,
) -> None:
    # An older-protocol server asks mid-call; the client's handler answers for its user.
    server = FastMCP("s")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def greet(ctx: Context) -> str:
        reply = await ctx.elicit("your name?", response_type=str)
        return f"hello {reply.data}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def motd() -> str:
        return "welcome"

    names = iter(["alice", "bob"])
    asked: list[str] = []

    async def answer(message: str, response_type: Any, params: Any, context: Any) -> str:
        asked.append(message)
        return next(names)

    calls = ToolCallCache(cache, server_id="s")
    async with FastMCPClient(server, elicitation_handler=answer, mode="legacy") as client:
        greetings = [(await calls.call_tool(client, "greet", {})).structured_content for _ in "ab"]
        for _ in range(2):
            await calls.call_tool(client, "motd", {})
    assert greetings == [{"result": "hello alice"}, {"result": "hello bob"}]
    assert len(asked) == 2  # bob was asked, never served alice's answer
    assert cache.stats().layers["results"].hits == 1  # a call that asked nobody is cached
