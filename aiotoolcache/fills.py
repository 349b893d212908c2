"""Fill tokens: a read or load in flight must not refill L1 with data invalidated meanwhile.

Every read from L2, every load and every write registers a ``Fill`` before it
starts. Invalidations that arrive while it runs revoke the matching fills (by
key, by layer, by tag, or all of them); a revoked fill is not written to L1
(nor, for loads, to L2). This closes the race where a read that started
before an invalidation lands after it and puts the old value back. A load's
fill also keeps the tag generations seen when it started: the value is sealed
with those, so a tag bump heard only after the load finished still marks it
old.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiotoolcache.keys import KeyRef

__all__ = ["Fill", "FillRegistry"]


class Fill:
    """Fill is one read or load in flight for one entry."""

    __slots__ = ("layer", "revoked", "tag_generations", "value_key")

    def __init__(self, ref: KeyRef, tag_generations: dict[str, int] | None = None) -> None:
        self.value_key = ref.value_key
        self.layer = ref.layer
        self.tag_generations = tag_generations  # tag -> generation when the fill began
        self.revoked = False  # set once, by FillRegistry.revoke_*; never cleared


class FillRegistry:
    """FillRegistry tracks the fills in flight so invalidations can revoke them."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[Fill]] = {}

    def __len__(self) -> int:
        return sum(len(fills) for fills in self._by_key.values())

    def __bool__(self) -> bool:
        return bool(self._by_key)  # an entry is deleted with its last fill

    def begin(self, ref: KeyRef, tag_generations: dict[str, int] | None = None) -> Fill:
        fill = Fill(ref, tag_generations)
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

    def revoke_tag(self, tag: str) -> list[str]:
        """Revoke the fills of entries carrying ``tag``; return their keys."""
        keys = []
        for key, fills in self._by_key.items():
            for fill in fills:
                if fill.tag_generations is not None and tag in fill.tag_generations:
                    fill.revoked = True
                    keys.append(key)
        return keys

    def revoke_all(self) -> None:
        for fills in self._by_key.values():
            for fill in fills:
                fill.revoked = True
