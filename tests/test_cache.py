"""The tiered cache against a real Redis: layers, tiers, values, keys and single-flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import aiotoolcache as atc
from aiotoolcache.layers import DEFAULT_LAYERS
from tests.servers import RedisServer
from tests.workers import eventually


def counting_loader(value: Any, delay: float = 0.0) -> tuple[list[int], Any]:
    calls = [0]

    async def load() -> Any:
        calls[0] += 1
        if delay:
            await asyncio.sleep(delay)
        return value

    return calls, load


def redis_keys(server: RedisServer, pattern: str = "*") -> list[str]:
    with server.client() as client:
        return sorted(k.decode() for k in client.scan_iter(pattern))


async def test_each_layer_default_ttl_is_what_redis_keeps(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    for name, config in DEFAULT_LAYERS.items():
        await cache.layer(name).set("k", "v")
        [key] = redis_keys(redis_server, f"test:{name}:*")
        with redis_server.client() as client:
            pttl = client.pttl(key)
        longest = (config.ttl + config.stale_ttl) * 1000
        shortest = (config.ttl * (1 - config.jitter) + config.stale_ttl) * 1000 - 5000
        assert shortest <= pttl <= longest, (name, pttl)


async def test_layer_by_name_is_the_same_object(cache: atc.ToolCache) -> None:
    assert cache.layer("results") is cache.results
    assert cache.layer("discovery") is cache.discovery
    with pytest.raises(atc.ConfigurationError, match="unknown layer"):
        cache.layer("nope")


async def test_l1_hit_then_l2_hit_after_l1_eviction(cache: atc.ToolCache) -> None:
    calls, load = counting_loader({"temp": 21})
    assert await cache.results.get_or_load(("weather", "paris"), load) == {"temp": 21}
    assert await cache.results.get_or_load(("weather", "paris"), load) == {"temp": 21}
    assert cache.stats()["results"].l1_hits == 1
    cache.l1.clear()
    assert await cache.results.get_or_load(("weather", "paris"), load) == {"temp": 21}
    stats = cache.stats()["results"]
    assert (stats.l2_hits, stats.loads, calls[0]) == (1, 1, 1)


async def test_another_worker_reads_what_the_first_wrote(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    _, load = counting_loader([1, 2, 3])
    await cache.search.get_or_load("q", load)
    never_called, never = counting_loader("wrong")
    assert await other_worker.search.get_or_load("q", never) == [1, 2, 3]
    assert never_called[0] == 0
    assert other_worker.stats()["search"].l2_hits == 1


@pytest.mark.parametrize("value", [None, {}, [], "", 0, False, b""])
async def test_empty_values_are_cached_and_distinct_from_a_miss(
    cache: atc.ToolCache, value: Any
) -> None:
    calls, load = counting_loader(value)
    assert await cache.results.get_or_load("empty", load) == value
    cache.l1.clear()
    assert await cache.results.get_or_load("empty", load) == value
    assert calls[0] == 1
    assert await cache.results.get("empty", default="MISS") == value
    assert await cache.results.get("absent", default="MISS") == "MISS"


async def test_hundred_concurrent_misses_run_the_loader_once(cache: atc.ToolCache) -> None:
    calls, load = counting_loader({"v": 1}, delay=0.05)
    results = await asyncio.gather(*(cache.results.get_or_load("hot", load) for _ in range(100)))
    assert calls[0] == 1
    assert all(r == {"v": 1} for r in results)
    assert cache.stats()["results"].coalesced == 99


async def test_a_raising_loader_reaches_every_waiter_and_caches_nothing(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    calls = [0]

    async def fail() -> None:
        calls[0] += 1
        await asyncio.sleep(0.02)
        raise RuntimeError("tool failed")

    outcomes = await asyncio.gather(
        *(cache.results.get_or_load("bad", fail) for _ in range(20)), return_exceptions=True
    )
    assert calls[0] == 1
    assert all(isinstance(o, RuntimeError) and str(o) == "tool failed" for o in outcomes)
    assert redis_keys(redis_server, "test:results:*") == []
    assert await cache.results.get("bad", default="MISS") == "MISS"
    assert cache.stats()["results"].load_errors == 1


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"\x01\x00garbage", b"\x01\x01\x78\x9c", b"\xff" * 100, b"\x01\x02" + b"x" * 16],
)
async def test_garbage_bytes_under_a_real_key_are_a_counted_miss(
    cache: atc.ToolCache, redis_server: RedisServer, garbage: bytes
) -> None:
    await cache.results.set("victim", "good")
    [key] = redis_keys(redis_server, "test:results:*")
    with redis_server.client() as client:
        client.set(key, garbage)
    cache.l1.clear()
    assert await cache.results.get("victim", default="MISS") == "MISS"
    assert cache.stats()["results"].corrupt == 1
    await eventually(lambda: redis_keys(redis_server, "test:results:*") == [])  # deleted


async def test_wrong_mac_is_a_miss(redis_url: str, redis_server: RedisServer) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="test", secret="s3cret") as signed,
        atc.ToolCache.from_url(redis_url, namespace="test", secret="other") as forger,
    ):
        await forger.results.set("k", "forged")
        assert await signed.results.get("k", default="MISS") == "MISS"
        assert signed.stats()["results"].corrupt == 1
        await signed.results.set("k", "genuine")
        signed.l1.clear()
        assert await signed.results.get("k") == "genuine"
        # A valid signed value copied under another key fails too: the MAC covers the key name.
        await signed.results.set("other", "x")
        [genuine_key, other_key] = sorted(redis_keys(redis_server, "test:results:*"))
        with redis_server.client() as client:
            client.set(other_key, client.get(genuine_key) or b"")
        signed.l1.clear()
        assert await signed.results.get("k", default="MISS") in ("MISS", "genuine")
        assert await signed.results.get("other", default="MISS") in ("MISS", "x")
        assert signed.stats()["results"].corrupt == 2


async def test_l1_stays_under_its_byte_bound(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="test", l1_max_bytes=50_000) as cache:
        for i in range(200):
            await cache.results.set(i, "x" * 1000)
            assert cache.l1.bytes <= 50_000
        assert 0 < len(cache.l1) < 200


async def test_argument_values_never_appear_in_redis_keys(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    secret = "sk-live-abcdef123456"
    _, load = counting_loader("ok")
    await cache.call_tool("payments", "charge", {"api_key": secret, "amount": 5}, load)
    await cache.results.set({"token": secret}, 1)
    await cache.embed([secret], model="m", loader=lambda texts: _vectors(texts))
    keys = redis_keys(redis_server)
    assert keys
    assert not any(secret in key or "abcdef" in key for key in keys)


async def _vectors(texts: list[str]) -> list[list[float]]:
    return [[float(len(t)), 0.5] for t in texts]


async def test_embed_partial_hits_keep_order_and_load_only_missing(cache: atc.ToolCache) -> None:
    seen: list[list[str]] = []

    async def embed_batch(texts: list[str]) -> list[list[float]]:
        seen.append(list(texts))
        return [[float(len(t)), 1.0, -2.5] for t in texts]

    first = await cache.embed(["a", "bb"], model="m", loader=embed_batch)
    assert first == [[1.0, 1.0, -2.5], [2.0, 1.0, -2.5]]
    second = await cache.embed(["ccc", "a", "dddd", "bb", "ccc"], model="m", loader=embed_batch)
    assert seen == [["a", "bb"], ["ccc", "dddd"]]
    assert second == [
        [3.0, 1.0, -2.5],
        [1.0, 1.0, -2.5],
        [4.0, 1.0, -2.5],
        [2.0, 1.0, -2.5],
        [3.0, 1.0, -2.5],
    ]
    # model and dimensions are part of the key
    await cache.embed(["a"], model="other", loader=embed_batch)
    await cache.embed(["a"], model="m", loader=embed_batch, dimensions=2)
    assert seen[2:] == [["a"], ["a"]]


async def test_embeddings_are_stored_as_packed_float32(
    cache: atc.ToolCache, redis_server: RedisServer
) -> None:
    async def embed_batch(texts: list[str]) -> list[list[float]]:
        return [[0.1] * 1536 for _ in texts]

    await cache.embed(["t"], model="m", loader=embed_batch)
    [key] = redis_keys(redis_server, "test:embeddings:*")
    with redis_server.client() as client:
        assert (client.strlen(key) or 0) < 1536 * 4 + 200  # a msgpack list of doubles is ~9 B each


async def test_every_layer_shares_one_pool(cache: atc.ToolCache) -> None:
    assert cache.redis is not None
    pool = cache.redis.connection_pool
    for name in ("discovery", "tools", "search", "results", "embeddings"):
        _, load = counting_loader(name)
        await cache.layer(name).get_or_load(name, load)
    stores = {id(layer._tier.store) for layer in cache.layers.values()}
    assert stores == {id(cache.store)}
    assert cache.store.client is cache.redis  # type: ignore[attr-defined]
    assert cache.bus.client is cache.redis  # type: ignore[attr-defined]
    assert cache.redis.connection_pool is pool
    assert type(pool).__name__ == "BlockingConnectionPool"


async def test_direct_get_set_delete_get_many_set_many(cache: atc.ToolCache) -> None:
    await cache.results.set_many([("a", 1), ("b", [2]), (("t", 1), {"x": None})])
    assert await cache.results.get_many(["a", "zz", ("t", 1), "b"], default="-") == [
        1,
        "-",
        {"x": None},
        [2],
    ]
    await cache.results.delete("a")
    assert await cache.results.get("a", default="gone") == "gone"


async def test_keys_are_canonical(cache: atc.ToolCache) -> None:
    calls, load = counting_loader("r")
    await cache.call_tool("s", "t", {"b": 1, "a": [1, {"y": 2, "x": 1}]}, load)
    await cache.call_tool("s", "t", {"a": [1, {"x": 1, "y": 2}], "b": 1}, load)
    assert calls[0] == 1


async def test_partitions_never_cross(cache: atc.ToolCache) -> None:
    await cache.results.set("same", "alice's", partition="alice")
    assert await cache.results.get("same", partition="bob", default="MISS") == "MISS"
    assert await cache.results.get("same", default="MISS") == "MISS"
    assert await cache.results.get("same", partition="alice") == "alice's"


class Forecast(BaseModel):
    city: str
    temps: list[float]


async def test_pydantic_models_round_trip_only_when_registered(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="test", models=[Forecast]) as cache:
        value = Forecast(city="Oslo", temps=[1.5, 2.0])
        await cache.results.set(value, value)  # models are valid keys too
        cache.l1.clear()
        assert await cache.results.get(value) == value
    async with atc.ToolCache.from_url(redis_url, namespace="test") as unregistered:
        # Not registered here: the stored model is a miss, never an import of a class path.
        assert await unregistered.results.get(value, default="MISS") == "MISS"
        calls, load = counting_loader(Forecast(city="x", temps=[]))
        assert await unregistered.results.get_or_load("m", load) == Forecast(city="x", temps=[])
        assert unregistered.stats()["results"].skipped_writes == 1


async def test_unserializable_value_is_returned_but_not_cached(cache: atc.ToolCache) -> None:
    calls, load = counting_loader(object())
    await cache.results.get_or_load("obj", load)
    await cache.results.get_or_load("obj", load)
    assert calls[0] == 2
    assert cache.stats()["results"].skipped_writes == 2


async def test_strict_mode_raises_typed_errors(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="test", strict=True) as cache:
        with pytest.raises(atc.UnserializableValue):
            await cache.results.set("k", object())
    with pytest.raises(atc.KeyEncodingError):
        await atc.ToolCache().results.get(object())


async def test_cached_decorator_keys_on_bound_arguments(cache: atc.ToolCache) -> None:
    calls = [0]

    @cache.cached("results", ttl=60)
    async def get_weather(city: str, units: str = "metric") -> dict[str, Any]:
        calls[0] += 1
        return {"city": city, "units": units}

    assert await get_weather("Paris") == {"city": "Paris", "units": "metric"}
    assert await get_weather(city="Paris", units="metric") == {"city": "Paris", "units": "metric"}
    assert await get_weather("Rome") == {"city": "Rome", "units": "metric"}
    assert calls[0] == 2


async def test_domain_helpers_cache_their_layers(cache: atc.ToolCache) -> None:
    list_calls, list_tools = counting_loader([])
    assert await cache.list_tools("weather", list_tools) == []
    assert await cache.list_tools("weather", list_tools) == []
    search_calls, search = counting_loader(["get_forecast"])
    await cache.search_tools("rain?", search, catalog_version="v3", top_k=5)
    await cache.search_tools("rain?", search, catalog_version="v3", top_k=5)
    await cache.search_tools("rain?", search, catalog_version="v4", top_k=5)
    assert (list_calls[0], search_calls[0]) == (1, 2)
    stats = cache.stats()
    assert stats["discovery"].l1_hits == 1 and stats["search"].l1_hits == 1


async def test_embedded_default_needs_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOTOOLCACHE_URL", raising=False)
    async with atc.ToolCache() as cache:
        assert cache.redis is None
        calls, load = counting_loader({"ok": True}, delay=0.01)
        results = await asyncio.gather(*(cache.results.get_or_load("k", load) for _ in range(10)))
        assert calls[0] == 1 and results[0] == {"ok": True}
        cache.l1.clear()
        assert await cache.results.get("k") == {"ok": True}


async def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("AIOTOOLCACHE_URL", redis_url)
    monkeypatch.setenv("AIOTOOLCACHE_NAMESPACE", "envns")
    monkeypatch.setenv("AIOTOOLCACHE_SECRET", "k")
    async with atc.ToolCache() as cache:
        assert cache.redis is not None and cache.namespace == "envns" and cache.codec.signed
    with pytest.raises(atc.ConfigurationError, match="scheme"):
        atc.ToolCache.from_url("http://example.com")
    with pytest.raises(atc.ConfigurationError, match="namespace"):
        atc.ToolCache(namespace="bad namespace")


def test_public_api_is_sorted_and_importable() -> None:
    assert list(atc.__all__) == sorted(atc.__all__, key=lambda n: (not n.isupper(), n))
    for name in atc.__all__:
        assert getattr(atc, name) is not None


async def test_negative_caching_is_off_by_default_and_short_when_on(cache: atc.ToolCache) -> None:
    calls = [0]

    async def fail() -> None:
        calls[0] += 1
        raise ValueError("no such city")

    for _ in range(2):
        with pytest.raises(ValueError):
            await cache.results.get_or_load("city", fail)
    assert calls[0] == 2

    cache.add_layer("lookups", atc.LayerConfig(ttl=60, negative_ttl=0.3, jitter=0))
    for _ in range(3):
        with pytest.raises((ValueError, atc.CachedLoaderError)) as info:
            await cache.layer("lookups").get_or_load("city", fail)
    assert calls[0] == 3
    assert isinstance(info.value, atc.CachedLoaderError)
    assert info.value.error_type == "ValueError" and info.value.message == "no such city"
    assert await cache.layer("lookups").get("city", default="MISS") == "MISS"
    await asyncio.sleep(0.4)
    with pytest.raises(ValueError):
        await cache.layer("lookups").get_or_load("city", fail)
    assert calls[0] == 4


async def test_get_many_reads_a_negatively_cached_failure_as_default(cache: atc.ToolCache) -> None:
    cache.add_layer("lookups", atc.LayerConfig(ttl=60, negative_ttl=30, jitter=0))

    async def fail() -> None:
        raise ValueError("no such city")

    with pytest.raises(ValueError):
        await cache.layer("lookups").get_or_load("city", fail)
    assert await cache.layer("lookups").get_many(["city", "other"], default="-") == ["-", "-"]
    cache.l1.clear()
    assert await cache.layer("lookups").get_many(["city"], default="-") == ["-"]


async def test_cached_values_are_shared_unless_copy_on_read(redis_url: str) -> None:
    layers = {
        "shared": atc.LayerConfig(ttl=60),
        "copied": atc.LayerConfig(ttl=60, copy_on_read=True),
    }
    async with atc.ToolCache.from_url(redis_url, namespace="cor", layers=layers) as cache:

        async def load() -> dict[str, list[int]]:
            return {"items": [1, 2]}

        for name, shared in (("shared", True), ("copied", False)):
            layer = cache.layer(name)
            await layer.get_or_load("k", load)
            first = await layer.get_or_load("k", load)  # from L1
            first["items"].append(3)  # a caller that mutates what it got
            second = await layer.get_or_load("k", load)
            assert (second["items"] == [1, 2, 3]) is shared
            assert (first is second) is shared

        async def directed(layer: atc.Layer) -> Any:
            with atc.cache_control(max_age=60):
                return await layer.get_or_load("k", load)

        async def many(layer: atc.Layer) -> Any:
            return (await layer.get_many(["k"]))[0]

        # Every read hands out copies: get, get_many and a directed read too.
        copied = cache.layer("copied")
        for read in (lambda layer: layer.get("k"), many, directed):
            mutated = await read(copied)
            mutated["items"].append(4)
            assert await copied.get_or_load("k", load) == {"items": [1, 2]}


async def test_a_remembered_key_name_follows_every_invalidation(
    cache: atc.ToolCache, other_worker: atc.ToolCache
) -> None:
    layer = cache.layer("results")
    assert layer.ref("k") is layer.ref("k")  # named once, while nothing changes
    before = layer.ref("k")
    await layer.set("k", "old")
    await other_worker.invalidate("results")  # another worker's bump, heard over the bus
    await eventually(lambda: layer.ref("k").value_key != before.value_key)
    assert await layer.get("k") is None
    calls, load = counting_loader("new")
    assert await layer.get_or_load("k", load) == "new" and calls == [1]
    # Partitions and labels are part of the name: never answered from the memo.
    assert layer.ref("k", partition="t1").value_key != layer.ref("k").value_key


async def test_the_key_name_memo_stays_bounded(cache: atc.ToolCache) -> None:
    from aiotoolcache.cache import REF_MEMO_SIZE

    layer = cache.layer("results")
    names = {layer.ref(f"k{i}").value_key for i in range(REF_MEMO_SIZE + 10)}
    assert len(names) == REF_MEMO_SIZE + 10
    assert len(layer._refs) <= REF_MEMO_SIZE
    await layer.set("k1", 1)
    assert await layer.get("k1") == 1


async def test_commands_carry_no_per_command_socket_timeout(cache: atc.ToolCache) -> None:
    # The breaker's budget bounds every command; redis-py's own default (5 s) would
    # cost a task and two timers per command.
    assert cache.redis is not None
    assert cache.redis.connection_pool.connection_kwargs["socket_timeout"] is None


async def test_a_lone_read_is_one_get_and_concurrent_reads_share_an_mget(
    own_redis: RedisServer,
) -> None:
    async with atc.ToolCache.from_url(own_redis.url, namespace="t") as cache:
        layer = cache.layer("results")
        await layer.set_many([(f"k{i}", i) for i in range(50)])
        layer._coherence.l1.clear()

        def calls(command: str) -> int:
            with own_redis.client() as client:
                stats = client.info("commandstats").get(f"cmdstat_{command}", {})
            return int(stats.get("calls", 0))

        gets, mgets = calls("get"), calls("mget")
        assert await layer.get_or_load("k1", counting_loader(None)[1]) == 1
        assert (calls("get") - gets, calls("mget") - mgets) == (1, 0)
        layer._coherence.l1.clear()
        values = await asyncio.gather(
            *(layer.get_or_load(f"k{i}", counting_loader(None)[1]) for i in range(50))
        )
        assert values == list(range(50))
        # The first read goes out alone; the 49 made while it is in flight share one MGET.
        assert (calls("get") - gets, calls("mget") - mgets) == (2, 1)
