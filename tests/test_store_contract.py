"""The Store contract: every byte store must pass each of these tests.

A store joins the contract by adding ``(name, factory)`` to ``STORE_FACTORIES``:
the factory takes the test's ``tmp_path`` and returns an awaitable of a fresh,
empty store, which the fixture closes after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from aiotoolcache.stores.base import Store
from aiotoolcache.stores.file import FileStore

StoreFactory = Callable[[Path], Awaitable[Store]]


async def file_store(tmp_path: Path) -> Store:
    return FileStore(tmp_path / "file-store")


STORE_FACTORIES: list[tuple[str, StoreFactory]] = [
    ("file", file_store),
]

HOUR_MS = 3_600_000


@pytest.fixture(
    params=[factory for _, factory in STORE_FACTORIES],
    ids=[name for name, _ in STORE_FACTORIES],
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    factory: StoreFactory = request.param
    created = await factory(tmp_path)
    try:
        yield created
    finally:
        await created.aclose()


async def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


async def test_absent_keys_read_as_none_in_order(store: Store) -> None:
    assert await store.get_many(["a", "b", "c"]) == [None, None, None]


async def test_empty_batches_are_no_ops(store: Store) -> None:
    assert await store.get_many([]) == []
    await store.set_many([])
    await store.delete_many([])


async def test_set_then_get(store: Store) -> None:
    await store.set_many([("a", b"1", HOUR_MS), ("b", b"2", HOUR_MS)])
    assert await store.get_many(["a", "b"]) == [b"1", b"2"]


async def test_binary_value_with_every_byte(store: Store) -> None:
    value = bytes(range(256)) * 4
    await store.set_many([("bin", value, HOUR_MS)])
    assert await store.get_many(["bin"]) == [value]


async def test_empty_value_is_not_absent(store: Store) -> None:
    await store.set_many([("empty", b"", HOUR_MS)])
    assert await store.get_many(["empty", "absent"]) == [b"", None]


async def test_overwrite_replaces_value(store: Store) -> None:
    await store.set_many([("k", b"old value, longer", HOUR_MS)])
    await store.set_many([("k", b"new", HOUR_MS)])
    assert await store.get_many(["k"]) == [b"new"]


async def test_last_item_wins_within_a_batch(store: Store) -> None:
    await store.set_many([("k", b"first", HOUR_MS), ("k", b"second", HOUR_MS)])
    assert await store.get_many(["k"]) == [b"second"]


async def test_delete_many_removes_and_ignores_absent(store: Store) -> None:
    await store.set_many([("a", b"1", HOUR_MS), ("b", b"2", HOUR_MS), ("c", b"3", HOUR_MS)])
    await store.delete_many(["a", "never-set", "c"])
    assert await store.get_many(["a", "b", "c"]) == [None, b"2", None]
    await store.delete_many(["a"])  # deleting again is fine


async def test_entry_expires_after_ttl(store: Store) -> None:
    await store.set_many([("short", b"x", 50), ("long", b"y", HOUR_MS)])
    await anyio.sleep(0.1)
    assert await store.get_many(["short", "long"]) == [None, b"y"]
    assert await store.ttl_ms("short") is None


async def test_ttl_ms_is_roughly_the_ttl_set(store: Store) -> None:
    await store.set_many([("k", b"v", 10_000)])
    remaining = await store.ttl_ms("k")
    assert remaining is not None
    assert 9_000 < remaining <= 10_000


async def test_ttl_ms_of_absent_key_is_none(store: Store) -> None:
    assert await store.ttl_ms("absent") is None


async def test_overwrite_resets_ttl(store: Store) -> None:
    await store.set_many([("k", b"v", 100)])
    await store.set_many([("k", b"v2", HOUR_MS)])
    remaining = await store.ttl_ms("k")
    assert remaining is not None and remaining > HOUR_MS - 10_000


async def test_order_preserved_for_mixed_present_and_absent(store: Store) -> None:
    await store.set_many([(f"k{i}", f"v{i}".encode(), HOUR_MS) for i in range(0, 20, 2)])
    keys = [f"k{i}" for i in reversed(range(20))]
    expected = [f"v{i}".encode() if i % 2 == 0 else None for i in reversed(range(20))]
    assert await store.get_many(keys) == expected


async def test_repeated_key_in_get_many(store: Store) -> None:
    await store.set_many([("k", b"v", HOUR_MS)])
    assert await store.get_many(["k", "absent", "k"]) == [b"v", None, b"v"]


ODD_KEYS = [
    "with:colons:in:it",
    "with/slashes/../and/dots",
    "{braces}[brackets]",
    "spaces and\ttabs\nand newlines",
    "\x00nul and \\ backslash",
    "ünïcödé ключ 键 🔑",
    ".",
    "..",
    "",
    "k" * 1_000,
    "é" * 1_000,
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
async def test_odd_keys_round_trip(store: Store, key: str) -> None:
    await store.set_many([(key, key.encode(), HOUR_MS)])
    assert await store.get_many([key, key + "x"]) == [key.encode(), None]
    remaining = await store.ttl_ms(key)
    assert remaining is not None and remaining > 0
    await store.delete_many([key])
    assert await store.get_many([key]) == [None]


async def test_odd_keys_are_distinct(store: Store) -> None:
    await store.set_many([(key, str(i).encode(), HOUR_MS) for i, key in enumerate(ODD_KEYS)])
    assert await store.get_many(ODD_KEYS) == [str(i).encode() for i in range(len(ODD_KEYS))]


async def test_concurrent_batches_do_not_interfere(store: Store) -> None:
    async def write(task: int) -> None:
        await store.set_many([(f"t{task}-{i}", f"{task}:{i}".encode(), HOUR_MS) for i in range(10)])

    async with anyio.create_task_group() as tg:
        for task in range(10):
            tg.start_soon(write, task)
    keys = [f"t{task}-{i}" for task in range(10) for i in range(10)]
    expected = [f"{task}:{i}".encode() for task in range(10) for i in range(10)]
    assert await store.get_many(keys) == expected
