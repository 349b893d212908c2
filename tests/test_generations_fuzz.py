"""Fuzzing the generations read from Redis: whatever the hash holds, invalidation still works.

Anyone with write access to Redis can put anything in the generations hash.
Whatever it is, a worker never raises to its caller and never serves a value
invalidated after it read the hash.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotoolcache as atc
from aiotoolcache.bus_messages import MAX_GENERATION, generation_bound
from aiotoolcache.generations import parse_bumped, parse_stored
from aiotoolcache.invalidation import RedisBus
from tests.servers import RedisServer

names = st.one_of(
    st.sampled_from(["ns", "tag:t", "layer:results", "tag:server:gh"]),
    st.text(max_size=12),
    st.binary(max_size=12),
)
values = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=0, max_value=2**53).map(str),
    st.binary(max_size=24),
    st.text(max_size=24),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@given(st.dictionaries(st.one_of(st.text(max_size=8), st.binary(max_size=8)), values, max_size=8))
def test_parsing_a_hash_never_raises_and_keeps_only_sane_values(raw: dict[Any, Any]) -> None:
    parsed = parse_stored(raw, lambda _name: generation_bound(0))
    for value in parsed.values.values():
        assert isinstance(value, int) and 0 <= value <= generation_bound(0) <= MAX_GENERATION
    assert len(parsed.values) + len(parsed.insane) <= len(raw)


@given(st.lists(values, min_size=4, max_size=4))
def test_parsing_a_bump_reply_never_adopts_an_insane_value(reply: list[Any]) -> None:
    try:
        bumped = parse_bumped([1, reply[1], 0, 0], generation_bound(0))
    except ValueError:
        return
    assert bumped.value is None or 0 <= bumped.value <= generation_bound(0)


async def planted_scenario(url: str, planted: dict[Any, Any], attempt: int) -> None:
    namespace = f"fuzz{attempt}"
    async with (
        atc.ToolCache.from_url(url, namespace=namespace) as reader,
        atc.ToolCache.from_url(url, namespace=namespace) as writer,
    ):
        assert await reader.results.get_or_load("k", _value("v1"), tags=["t"]) == "v1"
        assert await reader.list_tools("gh", _value("tools v1")) == "tools v1"
        if planted:
            await _plant(reader, f"{namespace}:generations", planted)
        for cache in (reader, writer):
            bus = cache.bus
            assert isinstance(bus, RedisBus)
            await bus.load_generations()  # never raises, whatever the hash holds
            assert all(0 <= g <= MAX_GENERATION for g in bus.generations.values())
        await writer.invalidate(tags=["t"], settle=True)
        assert await reader.results.get_or_load("k", _value("v2"), tags=["t"]) == "v2"
        await writer.invalidate_server("gh", settle=True)
        assert await reader.list_tools("gh", _value("tools v2")) == "tools v2"
        await writer.invalidate(settle=True)
        assert await reader.results.get_or_load("k", _value("v3"), tags=["t"]) == "v3"


def _value(value: str) -> Any:
    async def load() -> str:
        return value

    return load


async def _plant(cache: atc.ToolCache, key: str, planted: dict[Any, Any]) -> None:
    client = cache.client
    assert client is not None
    await client.hset(key, mapping=planted)


_attempts = iter(range(10**9))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(names, values, max_size=6))
def test_whatever_the_generations_hash_holds_an_invalidation_is_never_lost(
    redis_server: RedisServer, planted: dict[Any, Any]
) -> None:
    asyncio.run(planted_scenario(redis_server.url, planted, next(_attempts)))
