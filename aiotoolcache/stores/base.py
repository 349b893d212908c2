"""The byte-store contract every shared tier (L2) implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Store(Protocol):
    """Store is an async mapping of ``str`` keys to ``bytes`` with per-entry TTLs.

    Stores know nothing of envelopes, layers or locks: they move bytes. Every
    method may raise; the cache above decides whether an error is a miss.
    """

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the value of each key, ``None`` where absent or expired, in key order."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes, int]]) -> None:
        """Store each ``(key, value, ttl_ms)``; ``ttl_ms`` is at least 1."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Remove the keys; absent keys are ignored."""
        ...

    async def ttl_ms(self, key: str) -> int | None:
        """Remaining lifetime of ``key`` in milliseconds, ``None`` when absent."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources; further calls are not expected."""
        ...
