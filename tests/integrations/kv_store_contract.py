"""The AsyncKeyValue contract a py-key-value store must keep, as reusable pytest tests.

Origin: the behaviours are those py-key-value (https://github.com/strawgate/py-key-value,
Apache License 2.0) checks for every store in its shared ``BaseStoreTests``: round trips
of JSON-able values, bulk operations, delete results, TTL reporting and expiry,
serialization and TTL errors, long and unusual keys and collections, concurrency.
These tests are written for this project against py-key-value-aio 0.4.x; subclass
``KeyValueStoreContract`` and provide a ``store`` fixture to run them. Add
``ContextManagedStoreContract`` to run every test twice more: inside ``async with
store`` and with ``await store.close()`` after it, as py-key-value's own stores are used.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("key_value.aio")

from key_value.aio.errors import InvalidTTLError, SerializationError
from key_value.aio.protocols.key_value import AsyncKeyValue, AsyncKeyValueProtocol
from pydantic import AnyHttpUrl

ROUND_TRIP_VALUES: list[dict[str, Any]] = [
    {"result": None},
    {"missing_fields": [None, "partial", None]},
    {"forecast": {"today": None, "tomorrow": {"rain": None}}},
    {"None": "a key spelled like Python's null"},
    {"cached": False, "stale": True},
    {"hints": [False, True]},
    {"read_only": "yes, as text"},
    {"calls": 7, "delta": -3, "tokens_total": 2**62},
    {"404": "a key made of digits"},
    {"status": "200"},
    {"latency_s": 0.25, "cost_usd": 98765.4321},
    {"summary": "sunny", "page": "w" * 2048},
    {"city": "Zürich ☀ 東京 🚲"},
    {"table": "a\tb\r\nc\td"},
    {"request_id": "0f0e0d0c-0b0a-4909-8807-060504030201"},
    {"tool": {"input": {"schema": {"properties": {"city": "string"}}}}},
    {"rows": [{"city": "Oslo", "temp": -4}, {"city": "Lima", "temp": 19}] * 40},
    {"transcript": "z" * 20_000, "samples": list(range(-500, 500))},
]

NOT_JSON_VALUES: list[dict[str, Any]] = [
    {"fetched_at": datetime(2024, 6, 30, 12, 0, tzinfo=UTC)},
    {"valid_until": datetime(2024, 6, 30, tzinfo=UTC).date()},
    {"opens_at": datetime(2024, 6, 30, 8, 30, tzinfo=UTC).time()},
    {"request_id": uuid.UUID("0f0e0d0c-0b0a-4909-8807-060504030201")},
    {"source": AnyHttpUrl("https://weather.invalid/api")},
    {"blob": b"\x00\x01raw"},
    {"tags": {"weather", "cached"}},
]


class KeyValueStoreContract:
    """Tests every AsyncKeyValue store must pass; subclasses provide the ``store`` fixture."""

    async def test_is_an_async_key_value(self, store: AsyncKeyValue) -> None:
        assert isinstance(store, AsyncKeyValueProtocol)

    async def test_missing_key_reads_as_none(self, store: AsyncKeyValue) -> None:
        assert await store.get("absent", collection="c") is None
        assert await store.ttl("absent", collection="c") == (None, None)
        assert await store.get_many(["a", "b"], collection="c") == [None, None]
        assert await store.ttl_many(["a"], collection="c") == [(None, None)]

    @pytest.mark.parametrize("value", ROUND_TRIP_VALUES)
    async def test_json_values_round_trip(
        self, store: AsyncKeyValue, value: dict[str, Any]
    ) -> None:
        await store.put("k", value, collection="c")
        assert await store.get("k", collection="c") == value

    async def test_tuples_come_back_as_lists(self, store: AsyncKeyValue) -> None:
        await store.put("k", {"coords": (59.91, 10.75, "Oslo")}, collection="c")
        assert await store.get("k", collection="c") == {"coords": [59.91, 10.75, "Oslo"]}

    @pytest.mark.parametrize("value", NOT_JSON_VALUES)
    async def test_values_json_cannot_hold_are_refused(
        self, store: AsyncKeyValue, value: dict[str, Any]
    ) -> None:
        with pytest.raises(SerializationError):
            await store.put("k", value, collection="c")
        assert await store.get("k", collection="c") is None

    async def test_put_replaces(self, store: AsyncKeyValue) -> None:
        await store.put("k", {"v": 1}, collection="c")
        await store.put("k", {"v": 2}, collection="c")
        assert await store.get("k", collection="c") == {"v": 2}

    async def test_bulk_operations(self, store: AsyncKeyValue) -> None:
        keys = [f"k{i}" for i in range(10)]
        values = [{"i": i} for i in range(10)]
        await store.put_many(keys, values, collection="c")
        assert await store.get_many(keys, collection="c") == values
        assert await store.get_many(["k0", "nope", "k9"], collection="c") == [
            {"i": 0},
            None,
            {"i": 9},
        ]
        assert await store.delete_many(keys + ["nope"], collection="c") == 10
        assert await store.get_many(keys, collection="c") == [None] * 10
        assert await store.delete_many(keys, collection="c") == 0

    async def test_put_many_accepts_tuples(self, store: AsyncKeyValue) -> None:
        await store.put_many(("a", "b"), ({"v": "a"}, {"v": "b"}), collection="c")
        assert await store.get_many(["a", "b"], collection="c") == [{"v": "a"}, {"v": "b"}]

    async def test_put_many_needs_one_value_per_key(self, store: AsyncKeyValue) -> None:
        with pytest.raises(ValueError):
            await store.put_many(["a", "b"], [{"v": 1}], collection="c")

    async def test_delete_reports_whether_the_key_existed(self, store: AsyncKeyValue) -> None:
        assert await store.delete("k", collection="c") is False
        await store.put("k", {"v": 1}, collection="c")
        assert await store.delete("k", collection="c") is True
        assert await store.delete("k", collection="c") is False
        assert await store.get("k", collection="c") is None

    async def test_collections_are_separate(self, store: AsyncKeyValue) -> None:
        await store.put("k", {"in": "one"}, collection="one")
        await store.put("k", {"in": "two"}, collection="two")
        assert await store.get("k", collection="one") == {"in": "one"}
        assert await store.get("k", collection="two") == {"in": "two"}
        await store.delete("k", collection="one")
        assert await store.get("k", collection="two") == {"in": "two"}

    async def test_default_collection(self, store: AsyncKeyValue) -> None:
        await store.put("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
        assert await store.get("k", collection="elsewhere") is None

    async def test_ttl_is_reported(self, store: AsyncKeyValue) -> None:
        await store.put("k", {"v": 1}, collection="c", ttl=100)
        value, ttl = await store.ttl("k", collection="c")
        assert value == {"v": 1}
        assert ttl is not None and math.isclose(ttl, 100, abs_tol=2)
        await store.put("forever", {"v": 2}, collection="c")
        assert await store.ttl("forever", collection="c") == ({"v": 2}, None)

    async def test_invalid_ttls_are_refused(self, store: AsyncKeyValue) -> None:
        with pytest.raises(InvalidTTLError):
            await store.put("k", {"v": 1}, collection="c", ttl=-1)
        with pytest.raises(InvalidTTLError):
            await store.put("k", {"v": 1}, collection="c", ttl=True)

    async def test_entries_expire(self, store: AsyncKeyValue) -> None:
        await store.put("k", {"v": 1}, collection="c", ttl=1)
        await store.put_many(["a"], [{"v": 2}], collection="c", ttl=1)
        assert await store.get("k", collection="c") == {"v": 1}
        for _ in range(30):
            await asyncio.sleep(0.1)
            if await store.get("k", collection="c") is None:
                break
        assert await store.get("k", collection="c") is None
        assert await store.get_many(["a"], collection="c") == [None]
        assert await store.ttl("k", collection="c") == (None, None)

    async def test_long_and_unusual_names(self, store: AsyncKeyValue) -> None:
        for collection, key in [
            ("collection" * 100, "key"),
            ("tools/list?v=2 & <all> ~'x'|{y}", "key"),
            ("c", "key" * 200),
            ("c", 'weather:get city=Oslo;\t["x"]=%20\n'),
            ("c", ""),
        ]:
            await store.put(key, {"at": [collection, key]}, collection=collection)
            assert await store.get(key, collection=collection) == {"at": [collection, key]}

    async def test_keys_that_concatenate_alike_stay_apart(self, store: AsyncKeyValue) -> None:
        await store.put("b::c", {"v": 1}, collection="a")
        await store.put("c", {"v": 2}, collection="a::b")
        assert await store.get("b::c", collection="a") == {"v": 1}
        assert await store.get("c", collection="a::b") == {"v": 2}

    async def test_concurrent_workers(self, store: AsyncKeyValue) -> None:
        async def worker(n: int) -> None:
            for i in range(5):
                key = f"w{n}-{i}"
                assert await store.get(key, collection="c") is None
                await store.put(key, {"i": i}, collection="c")
                assert await store.get(key, collection="c") == {"i": i}
                await store.put(key, {"i": -i}, collection="c")
                assert await store.get(key, collection="c") == {"i": -i}
                assert await store.delete(key, collection="c") is True
                assert await store.get(key, collection="c") is None

        await asyncio.gather(*(worker(n) for n in range(4)))


class ContextManagedStoreContract:
    """Runs each contract test in a store entered with ``async with``, then in one closed after.

    Subclasses provide the ``store`` fixture; the store must support both
    lifecycles and stay usable until it is exited or closed.
    """

    @pytest.fixture(params=["async_with", "close"], autouse=True)
    async def lifecycle(
        self, request: pytest.FixtureRequest, store: AsyncKeyValue
    ) -> AsyncIterator[str]:
        if request.param == "async_with":
            async with store as entered:  # type: ignore[attr-defined]
                assert entered is store
                yield request.param
        else:
            yield request.param
            await store.close()  # type: ignore[attr-defined]
