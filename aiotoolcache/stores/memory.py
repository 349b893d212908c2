"""In-process storage: a byte- and entry-bounded LRU, and the embedded L2 built on it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

__all__ = ["BoundedLRU", "MemoryStore"]

V = TypeVar("V")


class BoundedLRU(Generic[V]):
    """BoundedLRU keeps at most ``max_entries`` values and ``max_bytes`` of their sizes.

    The least recently used entries are evicted first. Sizes are given by the
    caller, so the bound is as exact as the sizes it is told.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data  # without touching its recency

    def get(self, key: str) -> V | None:
        """Return the value of ``key`` and mark it most recently used, or None."""
        item = self._data.get(key)
        if item is None:
            return None
        self._data.move_to_end(key)
        return item[0]

    def put(self, key: str, value: V, size: int) -> bool:
        """Store ``value``; return False (and store nothing) when it alone exceeds the bound."""
        self.pop(key)
        if size > self.max_bytes:
            return False
        self._data[key] = (value, size)
        self.bytes += size
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, evicted) = self._data.popitem(last=False)
            self.bytes -= evicted
        return True

    def pop(self, key: str) -> V | None:
        item = self._data.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def remove_if(self, predicate: Callable[[str, V], bool]) -> int:
        """Remove every entry for which ``predicate(key, value)`` holds; return how many."""
        doomed = [k for k, (v, _) in self._data.items() if predicate(k, v)]
        for key in doomed:
            self.pop(key)
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def values(self) -> Iterator[V]:
        """Iterate over a snapshot of the values without touching their recency."""
        return iter([value for value, _ in self._data.values()])


class MemoryStore:
    """MemoryStore is the embedded L2: bytes with TTLs in this process, no server needed."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 256 * 2**20) -> None:
        self._lru: BoundedLRU[tuple[bytes, float]] = BoundedLRU(max_entries, max_bytes)

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._lru.get(key)
        if item is None:
            return None
        if item[1] <= now:
            self._lru.pop(key)
            return None
        return item[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return each key's value, None where absent or expired, in key order."""
        now = time.monotonic()
        return [self._live(key, now) for key in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes, int]]) -> None:
        """Store each ``(key, value, ttl_ms)``, evicting least recently used entries."""
        now = time.monotonic()
        for key, value, ttl_ms in items:
            self._lru.put(key, (value, now + ttl_ms / 1000), len(key) + len(value))

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Remove the keys; absent keys are ignored."""
        for key in keys:
            self._lru.pop(key)

    async def ttl_ms(self, key: str) -> int | None:
        """Remaining lifetime of ``key`` in milliseconds, None when absent."""
        now = time.monotonic()
        if self._live(key, now) is None:
            return None
        item = self._lru.get(key)
        assert item is not None
        return int((item[1] - now) * 1000)

    async def aclose(self) -> None:
        """Drop every entry."""
        self._lru.clear()
