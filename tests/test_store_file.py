"""FileStore beyond the Store contract: file naming, bad files, the size bound, atomic writes."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.stores.file import FORMAT_VERSION, FileStore

HOUR_MS = 3_600_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    created = FileStore(tmp_path / "cache")
    try:
        yield created
    finally:
        await created.aclose()


def files_under(directory: Path) -> set[Path]:
    return {path for path in directory.rglob("*") if path.is_file()}


def bytes_under(directory: Path) -> int:
    return sum(path.stat().st_size for path in files_under(directory))


async def entry_file(store: FileStore, key: str, value: bytes = b"v") -> Path:
    """Write ``key`` and return the one file that the write created."""
    before = files_under(store.directory)
    await store.set_many([(key, value, HOUR_MS)])
    (created,) = files_under(store.directory) - before
    return created


def test_rejects_non_positive_max_bytes(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        FileStore(tmp_path, max_bytes=0)


async def test_directory_is_created_lazily(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
    assert await store.get_many(["k"]) == [None]
    await store.set_many([("k", b"v", HOUR_MS)])
    assert await store.get_many(["k"]) == [b"v"]


async def test_file_names_never_contain_the_key(store: FileStore) -> None:
    keys = ["tool:search", "user/../../etc/passwd", "ünïcödé", "x" * 1_000]
    for key in keys:
        path = await entry_file(store, key)
        relative = path.relative_to(store.directory)
        assert len(relative.parts) == 2
        fan_out, name = relative.parts
        assert len(name) == 32 and all(c in "0123456789abcdef" for c in name)
        assert fan_out == name[:2]
        assert key not in str(path)


async def test_file_content_is_the_documented_msgpack_array(store: FileStore) -> None:
    path = await entry_file(store, "k", b"value")
    version, key, expires_at_ms, value = msgpack.unpackb(path.read_bytes(), raw=False)
    assert (version, key, value) == (FORMAT_VERSION, b"k", b"value")
    assert isinstance(expires_at_ms, int)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        bytes(random.Random(1).randrange(256) for _ in range(4096)),
        b"\xc1",  # a byte msgpack never uses
        msgpack.packb([FORMAT_VERSION, b"k", 2**62], use_bin_type=True),  # too short
        msgpack.packb([FORMAT_VERSION + 1, b"k", 2**62, b"v"], use_bin_type=True),
        msgpack.packb([FORMAT_VERSION, "k", 2**62, b"v"], use_bin_type=True),  # key not bytes
        msgpack.packb([FORMAT_VERSION, b"k", 2**62, "v"], use_bin_type=True),  # value not bytes
        msgpack.packb({"a": 1}),
        msgpack.packb([FORMAT_VERSION, b"k", 2**62, b"v"], use_bin_type=True) + b"junk",
        msgpack.packb([FORMAT_VERSION, b"k", 2**62, b"v" * 100], use_bin_type=True)[:-10],
    ],
    ids=[
        "empty",
        "random",
        "never-used",
        "short-array",
        "other-version",
        "str-key",
        "str-value",
        "map",
        "trailing-junk",
        "truncated",
    ],
)
async def test_bad_file_content_is_absent_and_removed(store: FileStore, content: bytes) -> None:
    path = await entry_file(store, "k")
    path.write_bytes(content)
    assert await store.get_many(["k"]) == [None]
    assert not path.exists()
    assert await store.ttl_ms("k") is None


async def test_bad_file_content_does_not_break_ttl_ms(store: FileStore) -> None:
    path = await entry_file(store, "k")
    path.write_bytes(os.urandom(1000))
    assert await store.ttl_ms("k") is None
    assert not path.exists()


async def test_file_holding_another_key_is_absent_and_kept(store: FileStore) -> None:
    path_a = await entry_file(store, "a", b"value of a")
    path_b = await entry_file(store, "b", b"value of b")
    # As if "b" hashed to the same name as "a": b's file holds a's entry.
    path_b.write_bytes(path_a.read_bytes())
    assert await store.get_many(["b", "a"]) == [None, b"value of a"]
    assert await store.ttl_ms("b") is None
    assert path_b.exists()


async def test_expired_entry_file_is_removed_on_read(store: FileStore) -> None:
    before = files_under(store.directory)
    await store.set_many([("k", b"v", 20)])
    (path,) = files_under(store.directory) - before
    await anyio.sleep(0.05)
    assert await store.get_many(["k"]) == [None]
    assert not path.exists()


async def test_new_store_on_same_directory_reads_entries(tmp_path: Path) -> None:
    first = FileStore(tmp_path / "cache")
    await first.set_many([("a", b"1", HOUR_MS), ("b", b"2", 50)])
    await first.aclose()
    await first.aclose()  # closing twice is fine

    second = FileStore(tmp_path / "cache")
    assert await second.get_many(["a", "b", "c"]) == [b"1", b"2", None]
    remaining = await second.ttl_ms("a")
    assert remaining is not None and remaining > HOUR_MS - 10_000
    await anyio.sleep(0.1)
    assert await second.get_many(["b"]) == [None]  # the TTL is kept across stores
    await second.aclose()


async def test_clear_removes_entries_but_not_foreign_files(store: FileStore) -> None:
    await store.set_many([(f"k{i}", b"v", HOUR_MS) for i in range(20)])
    foreign = store.directory / "README"
    foreign.write_text("not an entry")
    await store.clear()
    assert await store.get_many([f"k{i}" for i in range(20)]) == [None] * 20
    assert files_under(store.directory) == {foreign}
    await store.set_many([("k0", b"again", HOUR_MS)])
    assert await store.get_many(["k0"]) == [b"again"]


async def test_size_bound_holds_and_newest_entries_survive(tmp_path: Path) -> None:
    max_bytes = 64 * 1024
    store = FileStore(tmp_path / "cache", max_bytes=max_bytes)
    value = b"x" * 1000
    for batch in range(40):  # about ten times max_bytes in all
        await store.set_many([(f"k{batch}-{i}", value, HOUR_MS) for i in range(16)])
        assert bytes_under(store.directory) <= max_bytes
    newest = [f"k39-{i}" for i in range(16)] + [f"k38-{i}" for i in range(16)]
    assert await store.get_many(newest) == [value] * len(newest)
    oldest = [f"k0-{i}" for i in range(16)]
    assert await store.get_many(oldest) == [None] * len(oldest)
    await store.aclose()


async def test_size_bound_holds_under_concurrent_writers(tmp_path: Path) -> None:
    max_bytes = 64 * 1024
    store = FileStore(tmp_path / "cache", max_bytes=max_bytes)

    async def write(task: int) -> None:
        for batch in range(10):
            await store.set_many([(f"t{task}-{batch}-{i}", b"x" * 500, HOUR_MS) for i in range(8)])

    async with anyio.create_task_group() as tg:
        for task in range(10):
            tg.start_soon(write, task)
    assert bytes_under(store.directory) <= max_bytes
    await store.aclose()


async def test_eviction_removes_expired_entries_before_older_live_ones(tmp_path: Path) -> None:
    max_bytes = 32 * 1024
    store = FileStore(tmp_path / "cache", max_bytes=max_bytes)
    value = b"x" * 1000
    await store.set_many([("oldest-live", value, HOUR_MS)])
    await store.set_many([(f"short{i}", value, 10) for i in range(20)])
    await anyio.sleep(0.05)
    await store.set_many([(f"new{i}", value, HOUR_MS) for i in range(12)])
    # 33 entries of about 1 KiB went over 32 KiB; the expired ones made room.
    assert await store.get_many(["oldest-live"]) == [value]
    assert bytes_under(store.directory) <= max_bytes
    await store.aclose()


async def test_eviction_is_amortised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "cache", max_bytes=100 * 1024)
    scans = 0
    real_scan = store._scan

    def counting_scan() -> list[Any]:
        nonlocal scans
        scans += 1
        return list(real_scan())

    monkeypatch.setattr(store, "_scan", counting_scan)
    for i in range(300):  # about three times max_bytes, one entry per call
        await store.set_many([(f"k{i}", b"x" * 1000, HOUR_MS)])
    # One scan to open, then one per ~10 KiB of headroom at most, not one per write.
    assert scans < 40
    assert bytes_under(store.directory) <= 100 * 1024
    await store.aclose()


async def test_entry_larger_than_max_bytes_is_dropped(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "cache", max_bytes=4096)
    await store.set_many([("big", b"small", HOUR_MS)])
    await store.set_many([("big", b"x" * 8192, HOUR_MS), ("small", b"y", HOUR_MS)])
    assert await store.get_many(["big", "small"]) == [None, b"y"]
    await store.aclose()


async def test_concurrent_writers_of_one_key_never_tear_it(store: FileStore) -> None:
    # Large values make each write take several system calls, so a torn write
    # would be seen by the readers running alongside: as a miss, since a file
    # that does not decode reads as absent.
    values = {bytes([task]) * (256 * 1024) for task in range(20)}
    await store.set_many([("shared", b"initial", HOUR_MS)])
    values.add(b"initial")
    seen: list[bytes | None] = []
    writing = True

    async def write(value: bytes) -> None:
        for _ in range(3):
            await store.set_many([("shared", value, HOUR_MS)])

    async def read() -> None:
        while writing:
            seen.extend(await store.get_many(["shared"]))

    async with anyio.create_task_group() as readers:
        for _ in range(3):
            readers.start_soon(read)
        async with anyio.create_task_group() as writers:
            for value in values - {b"initial"}:
                writers.start_soon(write, value)
        writing = False

    assert len(seen) > 3  # the readers did run alongside the writers
    assert all(value in values for value in seen)
    (final,) = await store.get_many(["shared"])
    assert final in values - {b"initial"}
    # Only the entry remains: every temp file was renamed into place.
    (path,) = files_under(store.directory)
    _, key, _, value = msgpack.unpackb(path.read_bytes(), raw=False)
    assert key == b"shared" and value == final


async def test_stale_temp_files_are_swept_by_eviction(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "cache", max_bytes=16 * 1024)
    path = await entry_file(store, "k")
    stale = path.parent / ".abandoned.tmp"
    stale.write_bytes(b"x" * 4096)
    os.utime(stale, (0, 0))
    await store.set_many([(f"k{i}", b"x" * 1000, HOUR_MS) for i in range(20)])
    assert not stale.exists()
    assert bytes_under(store.directory) <= 16 * 1024
    await store.aclose()
