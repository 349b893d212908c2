"""FileStore keeps the byte-store contract on local disk, one atomically written file per entry.

It serves a single machine, and stands in for Redis while Redis is down. Each
entry lives at ``<directory>/<h[:2]>/<h>`` where ``h`` is the 32-hex-digit
BLAKE2b hash of the key, so any key, whatever characters it holds, maps to a
safe, fixed-length file name. The file holds the msgpack array
``[format_version, key_utf8, expires_at_epoch_ms, value]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple

import anyio.to_thread
import msgpack  # type: ignore[import-untyped, unused-ignore]

from aiotoolcache.errors import ConfigurationError

__all__ = ["FORMAT_VERSION", "FileStore"]

FORMAT_VERSION: Final = 1
"""Version written as the first element of every entry file; other versions read as absent."""

_DIGEST_SIZE: Final = 16  # 32 hex digits: collisions are negligible and checked anyway.
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_TEMP_PREFIX: Final = "."
_TEMP_SUFFIX: Final = ".tmp"
# A temp file this old belongs to a writer that died before its rename; younger
# ones may still be renamed into place, so sweeps leave them alone.
_STALE_TEMP_NS: Final = 600 * 10**9
# Eviction frees down to this share of max_bytes so that the next few writes do
# not immediately trigger another directory scan.
_LOW_WATER: Final = 0.9


class _Found(NamedTuple):
    """_Found is one file seen by a directory scan, with the identity it had then."""

    path: str
    size: int
    ino: int
    mtime_ns: int
    temp: bool


def _settled(found: list[_Found], now_ns: int) -> list[_Found]:
    """Drop the temp files of writes that may still be in flight from a scan.

    Their size is counted when their write completes, so counting them here
    as well would only make the total err high.
    """
    return [f for f in found if not f.temp or now_ns - f.mtime_ns >= _STALE_TEMP_NS]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _key_bytes(key: str) -> bytes:
    # surrogatepass: a key holding a lone surrogate still hashes and round-trips
    # instead of failing to encode.
    return key.encode("utf-8", "surrogatepass")


def _is_hex(name: str) -> bool:
    return all(c in _HEX_DIGITS for c in name)


def _is_entry_name(name: str) -> bool:
    return len(name) == 2 * _DIGEST_SIZE and _is_hex(name)


def _is_temp_name(name: str) -> bool:
    return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)


def _encode(key: bytes, expires_at_ms: int, value: bytes) -> bytes:
    data: bytes = msgpack.packb([FORMAT_VERSION, key, expires_at_ms, value], use_bin_type=True)
    return data


def _valid_header(version: object, key: object, expires_at_ms: object) -> bool:
    return (
        type(version) is int
        and version == FORMAT_VERSION
        and isinstance(key, bytes)
        and type(expires_at_ms) is int
    )


def _decode(data: bytes) -> tuple[bytes, int, bytes] | None:
    """Return ``(key, expires_at_ms, value)`` from an entry file's bytes, ``None`` if not one."""
    try:
        obj: Any = msgpack.unpackb(data, raw=False)
    except Exception:
        # Garbage fails in many ways (ValueError subclasses, TypeError for
        # unhashable map keys, OverflowError, ...); every one of them means
        # "not an entry", and decoding has no side effects to undo.
        return None
    if not isinstance(obj, list) or len(obj) != 4:
        return None
    version, key, expires_at_ms, value = obj
    if not _valid_header(version, key, expires_at_ms) or not isinstance(value, bytes):
        return None
    return key, expires_at_ms, value


def _peek_expiry(file: BinaryIO) -> int | None:
    """Return an entry file's expiry read from its header alone, ``None`` if it is not an entry.

    Only the first chunk of the file is read, so scanning a store of large
    values costs one small read per entry.
    """
    try:
        unpacker = msgpack.Unpacker(file, raw=False, read_size=4096)
        if unpacker.read_array_header() != 4:
            return None
        version, key, expires_at_ms = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    except OSError:
        raise
    except Exception:
        # As in _decode: any failure to parse means the file is not an entry.
        return None
    if not _valid_header(version, key, expires_at_ms):
        return None
    expiry: int = expires_at_ms
    return expiry


def _unlink_if_same(path: str, ino: int, mtime_ns: int) -> bool:
    """Remove ``path`` only if it is still the file that was read; return whether it was removed.

    A concurrent writer may have renamed a fresh entry over the file since it
    was read; comparing inode and mtime first narrows the window in which that
    fresh entry could be lost to a stale decision (losing it is only a miss).
    """
    try:
        st = os.stat(path, follow_symlinks=False)
        if st.st_ino != ino or st.st_mtime_ns != mtime_ns:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


class FileStore:
    """FileStore is a Store on local disk whose entries survive restarts and are never torn.

    Guarantees:

    * Writes are atomic: each entry is written to a temp file in its final
      directory and renamed over the old one, so a reader (in this or another
      process) sees either the old or the new entry, never a mix.
    * Bad content is a miss: a file that does not decode, has another format
      version or has expired reads as absent and is removed; one that holds
      another key (a hash collision) reads as absent and is left alone. No
      method raises because of what a file contains.
    * Size is bounded: the store tracks the approximate total size of its
      entry files (scanning the directory once, lazily, on the first write) and
      when a write takes it over ``max_bytes`` removes expired and undecodable
      entries, then the least recently written ones, until it is at 90% of
      ``max_bytes``. The bound is per ``FileStore`` object: several objects or
      processes sharing a directory each correct their view at each eviction.
    * Each call makes one hop to a worker thread, whatever the number of keys.

    Entries are not fsynced: after a power cut an entry may be lost or read as
    garbage, and both are misses. Files in the directory whose names are not
    entry or temp names are never counted, read or removed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 256 * 2**20) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be a positive int, got {max_bytes!r}")
        # Resolved now so a later chdir cannot move the store.
        self._root = os.path.abspath(os.fspath(directory))
        self._max_bytes = max_bytes
        # _lock guards the fields below; worker threads of concurrent calls share them.
        self._lock = threading.Lock()
        self._total: int | None = None  # None until the first scan (and again after clear)
        self._added_since_scan = 0
        self._evicting = False

    def __repr__(self) -> str:
        return f"FileStore({self._root!r}, max_bytes={self._max_bytes})"

    @property
    def directory(self) -> Path:
        """Absolute path of the directory holding the entry files."""
        return Path(self._root)

    @property
    def max_bytes(self) -> int:
        """Bound on the total size of the entry files, in bytes."""
        return self._max_bytes

    # -- Store protocol ---------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return each key's value in key order, ``None`` where absent, expired or unreadable."""
        if not keys:
            return []
        return await anyio.to_thread.run_sync(self._get_many_sync, list(keys))

    async def set_many(self, items: Sequence[tuple[str, bytes, int]]) -> None:
        """Store each ``(key, value, ttl_ms)`` atomically, dropping any larger than ``max_bytes``.

        A dropped entry's older value is removed too, so it reads as absent.
        """
        if not items:
            return
        await anyio.to_thread.run_sync(self._set_many_sync, list(items))

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Remove the keys' entries; absent keys are ignored."""
        if not keys:
            return
        await anyio.to_thread.run_sync(self._delete_many_sync, list(keys))

    async def ttl_ms(self, key: str) -> int | None:
        """Remaining lifetime of ``key`` in milliseconds, ``None`` when absent or expired."""
        return await anyio.to_thread.run_sync(self._ttl_ms_sync, key)

    async def aclose(self) -> None:
        """Close the store; it holds no open files between calls, so this only returns.

        Safe to call any number of times.
        """

    async def clear(self) -> None:
        """Remove every entry of the store, leaving files that are not entries in place.

        Temp files of writes still in flight are kept so those writes can
        complete; entries they land after ``clear`` are visible as usual.
        """
        await anyio.to_thread.run_sync(self._clear_sync)

    # -- worker-thread halves ---------------------------------------------

    def _path(self, key: bytes) -> str:
        name = hashlib.blake2b(key, digest_size=_DIGEST_SIZE).hexdigest()
        return os.path.join(self._root, name[:2], name)

    def _get_many_sync(self, keys: list[str]) -> list[bytes | None]:
        now_ms = _now_ms()
        values: list[bytes | None] = []
        for key in keys:
            entry = self._read(key, now_ms)
            values.append(None if entry is None else entry[1])
        return values

    def _ttl_ms_sync(self, key: str) -> int | None:
        now_ms = _now_ms()
        entry = self._read(key, now_ms)
        return None if entry is None else entry[0] - now_ms

    def _read(self, key: str, now_ms: int) -> tuple[int, bytes] | None:
        """Return ``(expires_at_ms, value)`` of a live entry for ``key``, removing a dead one."""
        key_b = _key_bytes(key)
        path = self._path(key_b)
        try:
            with open(path, "rb") as file:
                st = os.fstat(file.fileno())
                data = file.read()
        except FileNotFoundError:
            return None
        entry = _decode(data)
        if entry is not None and entry[0] != key_b:
            return None  # another key's entry under the same hash: not ours to remove
        if entry is not None and entry[1] > now_ms:
            return entry[1], entry[2]
        if _unlink_if_same(path, st.st_ino, st.st_mtime_ns):
            self._account(added=0, removed=st.st_size)
        return None

    def _set_many_sync(self, items: list[tuple[str, bytes, int]]) -> None:
        self._ensure_total()
        now_ms = _now_ms()
        must_evict = False
        try:
            for key, value, ttl_ms in items:
                key_b = _key_bytes(key)
                path = self._path(key_b)
                data = _encode(key_b, now_ms + ttl_ms, value)
                if len(data) > self._max_bytes:
                    # It could only be stored by evicting everything, itself
                    # next; dropping the write must not leave the old value.
                    self._account(added=0, removed=self._remove(path))
                    continue
                old_size = self._size_of(path)
                self._write_atomic(path, data)
                must_evict |= self._account(added=len(data), removed=old_size)
        finally:
            # Also after a failed write (a full disk, say): freeing space is
            # what helps, and the flag set by _account must be cleared.
            if must_evict:
                self._evict()

    def _delete_many_sync(self, keys: list[str]) -> None:
        for key in keys:
            self._account(added=0, removed=self._remove(self._path(_key_bytes(key))))

    def _clear_sync(self) -> None:
        now_ns = time.time_ns()
        for found in self._scan():
            if found.temp and now_ns - found.mtime_ns < _STALE_TEMP_NS:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(found.path)
        with self._lock:
            self._total = None  # rescanned on the next write, which also sees in-flight ones

    # -- files ------------------------------------------------------------

    @staticmethod
    def _size_of(path: str) -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    @staticmethod
    def _remove(path: str) -> int:
        """Remove the file at ``path``; return its size, 0 when there was none."""
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return size

    @staticmethod
    def _write_atomic(path: str, data: bytes) -> None:
        """Put ``data`` at ``path`` by writing a temp file beside it and renaming it over."""
        directory = os.path.dirname(path)
        try:
            fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=directory)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=directory)
        try:
            with open(fd, "wb") as file:
                file.write(data)
                file.flush()
                # Eviction orders entries by mtime; filesystem timestamps are
                # often coarser than the gap between two writes, so stamp the
                # clock's full resolution.
                now_ns = time.time_ns()
                os.utime(file.fileno(), ns=(now_ns, now_ns))
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _scan(self) -> list[_Found]:
        """List the entry and temp files under the directory (missing directory: none)."""
        found: list[_Found] = []
        try:
            top = os.scandir(self._root)
        except FileNotFoundError:
            return found
        with top:
            for sub in top:
                if len(sub.name) != 2 or not _is_hex(sub.name):
                    continue
                if not sub.is_dir(follow_symlinks=False):
                    continue
                try:
                    files = os.scandir(sub.path)
                except FileNotFoundError:
                    continue
                with files:
                    for entry in files:
                        temp = _is_temp_name(entry.name)
                        if not temp and not _is_entry_name(entry.name):
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed since it was listed
                        if stat.S_ISREG(st.st_mode):
                            found.append(
                                _Found(entry.path, st.st_size, st.st_ino, st.st_mtime_ns, temp)
                            )
        return found

    # -- size bound -------------------------------------------------------

    def _ensure_total(self) -> None:
        with self._lock:
            if self._total is None:
                # Under the lock so concurrent first writes scan once, and no
                # write is accounted against a total that does not exist yet.
                found = _settled(self._scan(), time.time_ns())
                self._total = sum(f.size for f in found)
                self._added_since_scan = 0

    def _account(self, *, added: int, removed: int) -> bool:
        """Apply a change of the stored size; return True when the caller must now evict.

        At most one thread evicts at a time: the one this returns True to,
        until ``_evict`` clears the flag.
        """
        with self._lock:
            if self._total is None:
                return False  # the next scan will see the change
            self._total += added - removed
            self._added_since_scan += added
            if self._total > self._max_bytes and not self._evicting:
                self._evicting = True
                return True
            return False

    def _evict(self) -> None:
        """Scan and free space until the tracked total is within ``max_bytes``.

        The new total is the scanned size, less what was freed, plus everything
        written since the scan began: a write the scan also saw is counted
        twice, so the total errs high, which can only make eviction early.
        Checking the total and clearing the flag happen under one lock hold
        with every write's accounting, so no write can push the store over the
        bound unseen.
        """
        try:
            while True:
                with self._lock:
                    self._added_since_scan = 0
                found = _settled(self._scan(), time.time_ns())
                scanned = sum(f.size for f in found)
                freed = self._shrink(found, scanned) if scanned > self._max_bytes else 0
                with self._lock:
                    self._total = scanned - freed + self._added_since_scan
                    if self._total <= self._max_bytes:
                        self._evicting = False
                        return
        except BaseException:
            with self._lock:
                self._evicting = False
            raise

    def _shrink(self, found: list[_Found], scanned: int) -> int:
        """Remove stale temp files, dead entries, then the oldest entries, down to low water.

        Returns the number of bytes removed.
        """
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        freed = 0
        live: list[_Found] = []
        for f in found:
            if f.temp:  # stale: its writer died before renaming it
                if _unlink_if_same(f.path, f.ino, f.mtime_ns):
                    freed += f.size
                continue
            try:
                with open(f.path, "rb") as file:
                    expires_at_ms = _peek_expiry(file)
            except FileNotFoundError:
                continue  # deleted since the scan; its deleter accounted for it
            if expires_at_ms is not None and expires_at_ms > now_ms:
                live.append(f)
            elif _unlink_if_same(f.path, f.ino, f.mtime_ns):
                freed += f.size
        target = int(self._max_bytes * _LOW_WATER)
        live.sort(key=lambda f: f.mtime_ns)
        for f in live:
            if scanned - freed <= target:
                break
            if _unlink_if_same(f.path, f.ino, f.mtime_ns):
                freed += f.size
        return freed
