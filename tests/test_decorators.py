"""@cache.cached, sync loaders refused, and the one WARNING for values the cache cannot store."""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import pytest
import redis.asyncio as aioredis

import aiotoolcache as atc
from tests.workers import eventually


async def test_key_args_partition_invalidate_and_key(
    cache: atc.ToolCache, other_worker: atc.ToolCache, redis_url: str
) -> None:
    runs: list[tuple[str, str]] = []

    def decorate(worker: atc.ToolCache) -> Any:
        @worker.cached("results", ttl=60, key_args=["city"], partition=lambda args: args["user"])
        async def forecast(city: str, user: str, verbose: bool = False) -> dict[str, Any]:
            runs.append((city, user))
            return {"city": city, "n": len(runs)}

        return forecast

    here, there = decorate(cache), decorate(other_worker)
    assert await here("Paris", user="u1") == {"city": "Paris", "n": 1}
    assert await there("Paris", "u1", verbose=True) == {"city": "Paris", "n": 1}  # hit
    assert await here("Paris", user="u2") == {"city": "Paris", "n": 2}  # another partition
    assert here.__name__ == "forecast" and here.__wrapped__ is not None
    # Frameworks that check for a coroutine function (to await a tool) see one.
    assert inspect.iscoroutinefunction(here)
    assert list(inspect.signature(here).parameters) == ["city", "user", "verbose"]

    ref = here.key("Paris", user="u1")
    assert ref == there.key("Paris", user="u1", verbose=True)
    assert ref != here.key("Paris", user="u2")
    async with aioredis.from_url(redis_url) as client:
        assert 60_000 * 0.85 < await client.pttl(ref.value_key) <= 60_000

    await here.invalidate("Paris", user="u1")
    async with aioredis.from_url(redis_url) as client:
        assert await client.exists(ref.value_key) == 0
    await eventually(lambda: other_worker.l1.get(ref.value_key) is None)
    assert await there("Paris", user="u1") == {"city": "Paris", "n": 3}
    assert await here("Paris", user="u2") == {"city": "Paris", "n": 2}  # untouched


def test_a_method_is_refused_until_it_says_how_its_instance_enters_the_key(
    cache: atc.ToolCache,
) -> None:
    with pytest.raises(atc.ConfigurationError) as caught:

        class MailClient:
            @cache.cached("results")
            async def inbox(self) -> list[str]:
                return []

    message = str(caught.value)
    assert "MailClient.inbox()" in message and "'self'" in message
    for choice in ("key_args=", "partition=lambda args: args['self']", "ignore=('self',)"):
        assert choice in message
    with pytest.raises(atc.ConfigurationError, match="'cls'"):

        async def listing(cls: type, page: int) -> list[int]:
            return [page]

        cache.cached("results")(listing)
    with pytest.raises(atc.ConfigurationError, match="'self'"):  # ignoring others is not enough
        cache.cached("results", ignore=("verbose",))(MailClientLike.inbox)


class MailClientLike:
    async def inbox(self, verbose: bool = False) -> list[str]:
        return []


async def test_a_partition_by_instance_keeps_tenants_apart(cache: atc.ToolCache) -> None:
    class MailClient:
        def __init__(self, token: str) -> None:
            self.token = token

        @cache.cached("results", partition=lambda args: args["self"].token)
        async def inbox(self, folder: str = "in") -> list[str]:
            return [f"{folder} mail for {self.token}"]

    alice, bob = MailClient("alice"), MailClient("bob")
    assert await alice.inbox() == ["in mail for alice"]
    assert await bob.inbox() == ["in mail for bob"]
    assert await MailClient("alice").inbox() == ["in mail for alice"]  # alice's entry, shared
    assert alice.inbox.key() != bob.inbox.key()
    assert alice.inbox.key() == MailClient("alice").inbox.key()


async def test_methods_declared_alike_share_entries_per_arguments(cache: atc.ToolCache) -> None:
    class Weather:
        runs = 0

        @cache.cached("results", ignore=("self",))
        async def forecast(self, city: str) -> str:
            Weather.runs += 1
            return city.upper()

        @cache.cached("results", key_args=["city"])
        async def alerts(self, city: str, verbose: bool = False) -> str:
            Weather.runs += 1
            return f"no alerts in {city}"

    weather = Weather()
    assert await weather.forecast("oslo") == "OSLO"
    assert await Weather().forecast("oslo") == "OSLO"  # declared: self is not part of the key
    assert Weather.runs == 1
    assert weather.forecast.key("oslo") == Weather().forecast.key("oslo")
    await weather.forecast.invalidate("oslo")
    assert await weather.forecast("oslo") == "OSLO"
    assert Weather.runs == 2
    assert await weather.alerts("oslo") == await Weather().alerts("oslo", verbose=True)
    assert Weather.runs == 3


async def test_a_function_whose_first_parameter_is_not_self_is_not_a_method(
    cache: atc.ToolCache,
) -> None:
    @cache.cached("results")
    async def shelf(selfie: str) -> str:
        return selfie

    assert await shelf("x") == "x"


async def test_a_sync_function_is_refused_before_it_runs(cache: atc.ToolCache) -> None:
    called: list[int] = []

    def lookup(x: int) -> int:
        called.append(x)
        return x

    with pytest.raises(TypeError, match="run_sync=True"):
        cache.cached("results")(lookup)  # type: ignore[arg-type]

    def load() -> int:
        called.append(0)
        return 0

    with pytest.raises(TypeError, match="run_sync=True"):
        await cache.results.get_or_load("k", load)  # type: ignore[arg-type, arg-type]
    with pytest.raises(TypeError, match="synchronous"):
        await cache.call_tool("s", "t", {}, load)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="synchronous"):
        await cache.call_tool("s", "t", {}, load, writes=True)  # type: ignore[arg-type]
    assert called == []


async def test_run_sync_runs_the_function_in_a_worker_thread(cache: atc.ToolCache) -> None:
    threads: list[int] = []

    @cache.cached("results", run_sync=True)
    def lookup(x: int) -> int:
        threads.append(threading.get_ident())
        return x * 2

    assert await lookup(2) == 4
    assert await lookup(2) == 4
    assert threads and threads[0] != threading.get_ident() and len(threads) == 1

    async def already_async(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="run_sync"):
        cache.cached("results", run_sync=True)(already_async)


class Opaque:
    """A type the codec has no encoding for."""


async def test_an_unstorable_value_warns_once_per_layer_and_type(
    cache: atc.ToolCache, caplog: pytest.LogCaptureFixture
) -> None:
    runs = [0]

    async def load() -> dict[str, Any]:
        runs[0] += 1
        return {"when": Opaque()}

    caplog.set_level(logging.DEBUG, logger="aiotoolcache.cache")
    for key in ("a", "a", "b"):
        value = await cache.results.get_or_load(key, load)
        assert isinstance(value["when"], Opaque)  # returned, though never stored
    assert runs == [3]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "test_decorators.Opaque" in message and "register_model" in message
    assert "'results'" in message

    # Another layer, or a value too large, warns once again, naming its own fix.
    await cache.search.get_or_load("c", load)
    await cache.results.get_or_load("big", lambda: big())
    await cache.results.get_or_load("big2", lambda: big())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "'search'" in warnings[1]
    assert "max_value_bytes" in warnings[2] and "'results'" in warnings[2]


async def big() -> str:
    return "x" * (2 * 2**20)


async def test_strict_mode_still_raises_for_unstorable_values(redis_url: str) -> None:
    async def load() -> Opaque:
        return Opaque()

    async with atc.ToolCache.from_url(redis_url, namespace="strict", strict=True) as cache:
        with pytest.raises(atc.UnserializableValue):
            await cache.results.get_or_load("k", load)


async def test_a_call_is_keyed_by_its_arguments_however_they_are_passed(
    cache: atc.ToolCache,
) -> None:
    calls: list[tuple[object, ...]] = []

    async def plain(query: str, limit: int = 10, *, exact: bool = False) -> str:
        calls.append((query, limit, exact))
        return f"{query}:{limit}:{exact}"

    async def variadic(query: str, /, *rest: int, **options: object) -> str:
        calls.append((query, rest, options))
        return query

    cached_plain = cache.cached(ttl=60)(plain)
    cached_variadic = cache.cached(ttl=60)(variadic)
    assert await cached_plain("q") == "q:10:False"
    assert await cached_plain("q", 10) == "q:10:False"
    assert await cached_plain(query="q") == "q:10:False"
    assert await cached_plain("q", limit=10, exact=False) == "q:10:False"
    assert await cached_plain(limit=10, query="q") == "q:10:False"
    assert len(calls) == 1  # one entry: every spelling binds to the same arguments
    assert cached_plain.key("q") == cached_plain.key(limit=10, exact=False, query="q")
    assert cached_plain.key("q") != cached_plain.key("q", 11)
    assert cached_plain.key("q") != cached_plain.key("q", exact=True)
    assert await cached_variadic("v", 1, 2, flag=True) == "v"
    assert cached_variadic.key("v", 1) != cached_variadic.key("v", 1, 2)
    # Calls a plain function would refuse are refused as it would, before any lookup.
    for bad_args, bad_kwargs in (
        ((), {}),  # a required argument missing
        (("q", 1, 2), {}),  # too many positional arguments
        (("q",), {"query": "again"}),  # given twice
        (("q",), {"unknown": 1}),
    ):
        with pytest.raises(TypeError):
            await cached_plain(*bad_args, **bad_kwargs)
    assert len(calls) == 2


async def test_arguments_that_compare_equal_but_differ_in_type_read_their_own_entries(
    cache: atc.ToolCache,
) -> None:
    async def describe(value: object, scale: object = 1) -> str:
        return f"{value!r}*{scale!r}"

    cached_describe = cache.cached(ttl=60)(describe)
    values = (1, True, 1.0, 0, False, 0.0, -0.0, "1", None)
    for _ in range(2):  # the second round reads what the first stored
        assert [await cached_describe(v) for v in values] == [f"{v!r}*1" for v in values]
        assert [await cached_describe(1, scale=v) for v in values] == [f"1*{v!r}" for v in values]
