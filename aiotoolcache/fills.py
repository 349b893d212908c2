"""Fill tokens: a read or load in flight must not refill L1 with data invalidated meanwhile.

Every read from L2 and every load registers a ``Fill`` before it starts.
Invalidations that arrive while it runs revoke the matching fills (by key,
by layer, or all of them); a revoked fill is not written to L1 (nor, for
loads, to L2). This closes the race where a read that started before an
invalidation lands after it and puts the old value back.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiotoolcache.keys import KeyRef

__all__ = ["Fill", "FillRegistry"]


class Fill:
    """Fill is one read or load in flight for one entry."""

    __slots__ = ("layer", "revoked", "value_key")

    def __init__(self, ref: KeyRef) -> None:
        self.value_key = ref.value_key
        self.layer = ref.layer
        self.revoked = False  # set once, by FillRegistry.revoke_*; never cleared


class FillRegistry:
    """FillRegistry tracks the fills in flight so invalidations can revoke them."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[Fill]] = {}

    def __len__(self) -> int:
        return sum(len(fills) for fills in self._by_key.values())

    def begin(self, ref: KeyRef) -> Fill:
        fill = Fill(ref)
        self._by_key.setdefault(ref.value_key, []).append(fill)
        return fill

    def end(self, fill: Fill) -> None:
        fills = self._by_key.get(fill.value_key)
        if fills is None:
            return
        try:
            fills.remove(fill)
        except ValueError:
            return
        if not fills:
            del self._by_key[fill.value_key]

    def revoke_keys(self, value_keys: Iterable[str]) -> None:
        for key in value_keys:
            for fill in self._by_key.get(key, ()):
                fill.revoked = True

    def revoke_layer(self, layer: str) -> None:
        for fills in self._by_key.values():
            for fill in fills:
                if fill.layer == layer:
                    fill.revoked = True

    def revoke_all(self) -> None:
        for fills in self._by_key.values():
            for fill in fills:
                fill.revoked = True
