"""ToolCacheResponseStore keeps the MCP SDK's ResponseCacheStore contract, embedded and on Redis.

The contract, as ``mcp.client.caching`` documents it: a ``CacheKey`` is the
tuple of its three fields (never a flattened string); ``get`` answers the
entry last ``set`` under exactly that key, or None; ``delete`` and ``clear``
remove entries; freshness is the SDK's decision, so the store returns an entry
past its ``expires_at``; a serializing store gives back the result model
object, and an entry of the wrong shape is a miss, never an error; the scope
arm is in the key's ``partition``, opaque to the store. The SDK's own tests of
the same contract run from its sdist in ``test_upstream_suites.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest

pytest.importorskip("mcp.client.caching")

from mcp.client.caching import CacheConfig, CacheEntry, CacheKey, ResponseCacheStore
from mcp_types import (
    CacheableResult,
    ListPromptsResult,
    ListToolsResult,
    ReadResourceResult,
    TextResourceContents,
    Tool,
)

import aiotoolcache as atc
from aiotoolcache.errors import ConfigurationError
from aiotoolcache.integrations.mcp import ToolCacheResponseStore
from aiotoolcache.layers import LayerConfig

HOUR = 3600.0
PRIVATE_ARM = '["private", "2026-07-28", "weather", "tenant-a"]'
PUBLIC_ARM = '["public", "2026-07-28", "weather"]'


@pytest.fixture(params=["embedded", "redis"])
async def tool_cache(request: pytest.FixtureRequest) -> AsyncIterator[atc.ToolCache]:
    """A ToolCache on each backend: the embedded default and a real Redis."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        async with atc.ToolCache.from_url(url, namespace="mcp-store") as cache:
            yield cache
    else:
        async with atc.ToolCache() as cache:
            yield cache


@pytest.fixture
def store(tool_cache: atc.ToolCache) -> ToolCacheResponseStore:
    return ToolCacheResponseStore(tool_cache)


def tools_page(*names: str, ttl_ms: int | None = None) -> ListToolsResult:
    tools = [Tool(name=name, input_schema={"type": "object"}) for name in names]
    if ttl_ms is None:
        return ListToolsResult(tools=tools)
    return ListToolsResult(tools=tools, ttl_ms=ttl_ms, cache_scope="public")


def entry(
    value: Any,
    *,
    scope: Literal["public", "private"] = "private",
    expires_in: float | None = 60.0,
) -> CacheEntry:
    return CacheEntry(
        value=value,
        scope=scope,
        expires_at=None if expires_in is None else time.time() + expires_in,
    )


def test_the_store_satisfies_the_sdk_protocol(store: ToolCacheResponseStore) -> None:
    checked: ResponseCacheStore = store  # mypy checks the structural type here
    config = CacheConfig(store=checked, partition="tenant-a")
    assert config.store is store


# -- round trips ------------------------------------------------------------------------------


async def test_a_result_model_comes_back_as_the_same_model(store: ToolCacheResponseStore) -> None:
    page = tools_page("forecast", "alerts", ttl_ms=30_000)
    key = CacheKey("tools/list", "", PUBLIC_ARM)
    await store.set(key, entry(page, scope="public"))
    got = await store.get(key)
    assert got is not None
    assert type(got.value) is ListToolsResult
    assert got.value == page


async def test_scope_and_expiry_round_trip_exactly(store: ToolCacheResponseStore) -> None:
    for scope in ("public", "private"):
        for expires_at in (None, 1_900_000_000.125, 12.5):
            key = CacheKey("prompts/list", f"{scope}-{expires_at}", PRIVATE_ARM)
            stored = CacheEntry(
                value=ListPromptsResult(prompts=[]), scope=scope, expires_at=expires_at
            )
            await store.set(key, stored)
            assert await store.get(key) == stored


async def test_a_resource_read_result_keeps_its_contents(store: ToolCacheResponseStore) -> None:
    uri = "file:///notes/today.md"
    result = ReadResourceResult(
        contents=[TextResourceContents(uri=uri, text="# Today\nrain", mime_type="text/markdown")]
    )
    key = CacheKey("resources/read", uri, PRIVATE_ARM)
    await store.set(key, entry(result))
    got = await store.get(key)
    assert got is not None and got.value == result


async def test_plain_json_values_round_trip(store: ToolCacheResponseStore) -> None:
    value = {"tools": [{"name": "a"}], "count": 1, "ratio": 0.5, "none": None, "ok": True}
    key = CacheKey("custom/method", "x", "arm")
    await store.set(key, entry(value))
    got = await store.get(key)
    assert got is not None and got.value == value


# -- misses, overwrite, delete, clear ---------------------------------------------------------


async def test_a_key_never_set_is_a_miss(store: ToolCacheResponseStore) -> None:
    await store.set(CacheKey("tools/list", "", "arm-1"), entry(tools_page("a")))
    assert await store.get(CacheKey("tools/list", "", "arm-2")) is None
    assert await store.get(CacheKey("prompts/list", "", "arm-1")) is None
    assert await store.get(CacheKey("tools/list", "page-2", "arm-1")) is None


async def test_fields_are_never_joined_into_one_string(store: ToolCacheResponseStore) -> None:
    # Each pair would be one key if the store concatenated the fields.
    look_alikes = [
        (CacheKey("resources/read", "a:b", "c"), CacheKey("resources/read", "a", "b:c")),
        (CacheKey("x/y", "z", ""), CacheKey("x", "y/z", "")),
        (CacheKey("m", "", "pq"), CacheKey("m", "pq", "")),
        (CacheKey("m", "p", '"q"]'), CacheKey("m", 'p", "q', "]")),
    ]
    for number, (first, second) in enumerate(look_alikes):
        await store.set(first, entry({"n": number, "side": 1}))
        await store.set(second, entry({"n": number, "side": 2}))
    for number, (first, second) in enumerate(look_alikes):
        got_first, got_second = await store.get(first), await store.get(second)
        assert got_first is not None and got_first.value == {"n": number, "side": 1}
        assert got_second is not None and got_second.value == {"n": number, "side": 2}


async def test_a_second_set_replaces_the_first(store: ToolCacheResponseStore) -> None:
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    await store.set(key, entry(tools_page("old"), scope="private"))
    newer = entry(tools_page("new", ttl_ms=5_000), scope="public", expires_in=5.0)
    await store.set(key, newer)
    assert await store.get(key) == newer


async def test_delete_removes_one_key_and_tolerates_a_missing_one(
    store: ToolCacheResponseStore,
) -> None:
    kept = CacheKey("resources/read", "file:///a", PUBLIC_ARM)
    dropped = CacheKey("resources/read", "file:///a", PRIVATE_ARM)
    await store.set(kept, entry({"arm": "public"}, scope="public"))
    await store.set(dropped, entry({"arm": "private"}))
    await store.delete(dropped)
    await store.delete(dropped)  # already gone: still no error
    await store.delete(CacheKey("never", "set", "anywhere"))
    assert await store.get(dropped) is None
    kept_entry = await store.get(kept)
    assert kept_entry is not None and kept_entry.value == {"arm": "public"}


async def test_clear_empties_this_store_and_leaves_others(tool_cache: atc.ToolCache) -> None:
    mine = ToolCacheResponseStore(tool_cache, name="client-a")
    theirs = ToolCacheResponseStore(tool_cache, name="client-b")
    keys = [CacheKey("tools/list", "", "p1"), CacheKey("resources/read", "file:///x", "p2")]
    for key in keys:
        await mine.set(key, entry({"owner": "a"}))
        await theirs.set(key, entry({"owner": "b"}))
    await mine.clear()
    for key in keys:
        assert await mine.get(key) is None
        still = await theirs.get(key)
        assert still is not None and still.value == {"owner": "b"}
    await mine.set(keys[0], entry({"owner": "a", "again": True}))  # usable after clear
    again = await mine.get(keys[0])
    assert again is not None and again.value["again"] is True


# -- freshness belongs to the SDK -------------------------------------------------------------


async def test_an_expired_entry_is_still_returned(store: ToolCacheResponseStore) -> None:
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    expired = entry(tools_page("a"), expires_in=-30.0)
    await store.set(key, expired)
    assert await store.get(key) == expired


async def test_an_entry_without_expiry_is_kept(store: ToolCacheResponseStore) -> None:
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    never_fresh = entry(tools_page("a"), expires_in=None)
    await store.set(key, never_fresh)
    assert await store.get(key) == never_fresh


async def test_retention_must_be_positive(tool_cache: atc.ToolCache) -> None:
    with pytest.raises(ConfigurationError):
        ToolCacheResponseStore(tool_cache, retention=0)


# -- private and public arms ------------------------------------------------------------------


async def test_private_and_public_arms_hold_separate_entries(
    store: ToolCacheResponseStore,
) -> None:
    private_key = CacheKey("tools/list", "", PRIVATE_ARM)
    public_key = CacheKey("tools/list", "", PUBLIC_ARM)
    await store.set(private_key, entry(tools_page("mine"), scope="private"))
    await store.set(public_key, entry(tools_page("shared", ttl_ms=1_000), scope="public"))
    got_private, got_public = await store.get(private_key), await store.get(public_key)
    assert got_private is not None and got_private.scope == "private"
    assert got_private.value.tools[0].name == "mine"
    assert got_public is not None and got_public.scope == "public"
    assert got_public.value.tools[0].name == "shared"


async def test_a_tenant_arm_never_answers_for_another(store: ToolCacheResponseStore) -> None:
    tenant_a = CacheKey("resources/read", "file:///secret", '["private", "v", "t", "a"]')
    tenant_b = CacheKey("resources/read", "file:///secret", '["private", "v", "t", "b"]')
    await store.set(tenant_a, entry({"secret": "a"}))
    assert await store.get(tenant_b) is None


async def test_the_scope_is_returned_as_stored_whatever_the_arm(
    store: ToolCacheResponseStore,
) -> None:
    # The SDK refuses a private-scoped entry found under a public arm; it can only
    # do so if the store hands back the scope it was given, not one from the key.
    key = CacheKey("tools/list", "", PUBLIC_ARM)
    await store.set(key, entry(tools_page("a"), scope="private"))
    got = await store.get(key)
    assert got is not None and got.scope == "private"


# -- size limits and entries the store cannot use ---------------------------------------------


async def test_an_entry_over_the_size_limit_is_a_miss_not_the_old_entry(
    tool_cache: atc.ToolCache,
) -> None:
    tool_cache.add_layer("small_responses", LayerConfig(ttl=HOUR, max_value_bytes=4096))
    store = ToolCacheResponseStore(tool_cache, layer="small_responses")
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    await store.set(key, entry(tools_page("small")))
    huge = tools_page(*(f"tool-{n}-{'x' * 40}" for n in range(200)))
    await store.set(key, entry(huge))  # too large: not stored, and no error
    assert await store.get(key) is None  # never the superseded small page
    assert tool_cache.layer("small_responses").counters.skipped_writes >= 1
    await store.set(key, entry(tools_page("small again")))
    assert await store.get(key) is not None


async def test_the_default_layer_takes_a_large_listing(store: ToolCacheResponseStore) -> None:
    page = tools_page(*(f"tool-{n}-{'d' * 200}" for n in range(2000)))  # about 0.5 MB
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    await store.set(key, entry(page))
    got = await store.get(key)
    assert got is not None and len(got.value.tools) == 2000


async def test_a_model_the_store_does_not_know_is_refused_on_set(
    store: ToolCacheResponseStore,
) -> None:
    class Unregistered(CacheableResult):
        note: str = "x"

    key = CacheKey("custom/list", "", PRIVATE_ARM)
    with pytest.raises(TypeError, match="Unregistered"):
        await store.set(key, entry(Unregistered()))
    assert await store.get(key) is None


async def test_an_entry_of_the_wrong_shape_is_a_miss(tool_cache: atc.ToolCache) -> None:
    # A writer whose ListToolsResult had another schema (an older or newer SDK).
    class ListToolsResultElsewhere(CacheableResult):
        listing: str = "not tools"

    ListToolsResultElsewhere.__name__ = "ListToolsResult"
    writer = ToolCacheResponseStore(tool_cache, name="shared", models=[ListToolsResultElsewhere])
    reader = ToolCacheResponseStore(tool_cache, name="shared")
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    await writer.set(key, entry(ListToolsResultElsewhere()))
    assert await reader.get(key) is None


async def test_a_registered_custom_model_round_trips(tool_cache: atc.ToolCache) -> None:
    class WeatherListing(CacheableResult):
        cities: list[str]

    store = ToolCacheResponseStore(tool_cache, models=[WeatherListing])
    key = CacheKey("weather/list", "", PRIVATE_ARM)
    await store.set(key, entry(WeatherListing(cities=["Oslo", "Lima"])))
    got = await store.get(key)
    assert got is not None and got.value == WeatherListing(cities=["Oslo", "Lima"])


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_sets_and_gets_on_many_keys(store: ToolCacheResponseStore) -> None:
    keys = [CacheKey("resources/read", f"file:///{n}", PRIVATE_ARM) for n in range(60)]
    await asyncio.gather(*(store.set(key, entry({"n": n})) for n, key in enumerate(keys)))
    got = await asyncio.gather(*(store.get(key) for key in keys))
    assert [item.value["n"] if item else None for item in got] == list(range(60))


async def test_racing_writers_leave_one_whole_entry(store: ToolCacheResponseStore) -> None:
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    written = [entry(tools_page(*(f"w{n}-{t}" for t in range(5)))) for n in range(20)]

    async def write_then_read(item: CacheEntry) -> CacheEntry | None:
        await store.set(key, item)
        return await store.get(key)

    reads = await asyncio.gather(*(write_then_read(item) for item in written))
    final = await store.get(key)
    assert final in written  # one writer's entry, never a mix of two
    assert all(read in written for read in reads)


async def test_reads_racing_a_delete_see_the_entry_or_nothing(
    store: ToolCacheResponseStore,
) -> None:
    key = CacheKey("tools/list", "", PRIVATE_ARM)
    stored = entry(tools_page("a"))
    await store.set(key, stored)
    results = await asyncio.gather(
        *(store.get(key) for _ in range(10)),
        store.delete(key),
        *(store.get(key) for _ in range(10)),
    )
    reads = [result for result in results if result is not None]
    assert all(read == stored for read in reads)
    assert await store.get(key) is None


async def test_two_workers_on_one_redis_share_entries(redis_url: str) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="fleet") as worker_a,
        atc.ToolCache.from_url(redis_url, namespace="fleet") as worker_b,
    ):
        store_a, store_b = ToolCacheResponseStore(worker_a), ToolCacheResponseStore(worker_b)
        key = CacheKey("tools/list", "", PUBLIC_ARM)
        assert await store_b.get(key) is None
        shared = entry(tools_page("fleet-wide", ttl_ms=60_000), scope="public")
        await store_a.set(key, shared)
        assert await store_b.get(key) == shared
        newer = entry(tools_page("replaced", ttl_ms=60_000), scope="public")
        await store_a.set(key, newer)
        assert await store_b.get(key) == newer  # b's local copy was dropped
        await store_b.delete(key)
        assert await store_a.get(key) is None
