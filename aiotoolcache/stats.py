"""Counters of what each layer did, and the frozen snapshots ``ToolCache.stats()`` returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["LOAD_BUCKETS", "CacheStats", "LayerCounters", "LayerStats"]

# Upper bounds (seconds) of the load-duration histogram: tool calls and embeddings
# range from milliseconds to tens of seconds.
LOAD_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


# The integer counters a snapshot copies as they are.
COUNTS = (
    "l1_hits",
    "l2_hits",
    "misses",
    "loads",
    "load_errors",
    "coalesced",
    "remote_coalesced",
    "stale_served",
    "early_refreshes",
    "refresh_errors",
    "lease_takeovers",
    "corrupt",
    "skipped_writes",
    "dropped_writes",
    "backend_errors",
)


class LayerCounters:
    """LayerCounters are one layer's live counters: plain integer increments, no locks.

    The event loop is single-threaded, so ``+= 1`` cannot race; snapshots are
    taken with ``snapshot()``.
    """

    __slots__ = (
        *COUNTS,
        "load_bucket_counts",
        "load_seconds",
        "replayed",
        "replayed_cost",
        "replayed_seconds",
    )

    def __init__(self) -> None:
        for name in COUNTS:
            setattr(self, name, 0)
        self.load_seconds = 0.0
        # Calls a cassette replayed, and the load time and dollars their recording measured.
        self.replayed = 0
        self.replayed_seconds = 0.0
        self.replayed_cost = 0.0
        self.load_bucket_counts = [0] * len(LOAD_BUCKETS)

    def observe_load(self, seconds: float) -> None:
        """Count one load that took ``seconds``."""
        self.loads += 1
        self.load_seconds += seconds
        for i, bound in enumerate(LOAD_BUCKETS):
            if seconds <= bound:
                self.load_bucket_counts[i] += 1
                break

    l1_hits: int
    l2_hits: int
    misses: int
    loads: int
    load_errors: int
    load_seconds: float
    load_bucket_counts: list[int]
    coalesced: int
    remote_coalesced: int
    stale_served: int
    early_refreshes: int
    refresh_errors: int
    lease_takeovers: int
    corrupt: int
    skipped_writes: int
    dropped_writes: int
    backend_errors: int
    replayed: int
    replayed_seconds: float
    replayed_cost: float

    def snapshot(self, name: str, cost_per_load: float, l1_bytes: int) -> LayerStats:
        hits = self.l1_hits + self.l2_hits
        lookups = hits + self.misses
        mean_load = self.load_seconds / self.loads if self.loads else 0.0
        cumulative, buckets = 0, []
        for bound, count in zip(LOAD_BUCKETS, self.load_bucket_counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        avoided = hits + self.coalesced + self.remote_coalesced
        return LayerStats(
            layer=name,
            **{count: getattr(self, count) for count in COUNTS},
            hit_rate=hits / lookups if lookups else 0.0,
            load_seconds_total=self.load_seconds,
            mean_load_seconds=mean_load,
            saved_seconds=avoided * mean_load + self.replayed_seconds,
            saved_cost=avoided * cost_per_load + self.replayed_cost,
            l1_bytes=l1_bytes,
            load_buckets=tuple(buckets),
            replayed=self.replayed,
        )


@dataclass(frozen=True, slots=True)
class LayerStats:
    """LayerStats is a snapshot of one layer's counters and what they saved.

    saved_seconds counts every avoided load (hits and coalesced waiters) at
    the layer's measured mean load time; saved_cost at its declared cost.
    Calls a cassette replayed (``replayed``) add the load time and cost their
    recording measured.
    """

    layer: str
    l1_hits: int
    l2_hits: int
    misses: int
    loads: int
    load_errors: int
    coalesced: int
    remote_coalesced: int
    stale_served: int
    early_refreshes: int
    refresh_errors: int
    lease_takeovers: int
    corrupt: int
    skipped_writes: int
    dropped_writes: int
    backend_errors: int
    hit_rate: float
    load_seconds_total: float
    mean_load_seconds: float
    saved_seconds: float
    saved_cost: float
    l1_bytes: int
    load_buckets: tuple[tuple[float, int], ...] = ()
    """Cumulative ``(upper_bound_seconds, loads)`` pairs of the load-duration histogram."""
    replayed: int = 0
    """Calls a cassette replayed instead of running their loaders."""

    @property
    def hits(self) -> int:
        """L1 plus L2 hits."""
        return self.l1_hits + self.l2_hits

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-able values."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """CacheStats is a snapshot of every layer plus the cache-wide state."""

    layers: dict[str, LayerStats]
    breaker_state: str
    l1_bytes: int
    l1_entries: int
    subscriber_connected: bool

    def __getitem__(self, layer: str) -> LayerStats:
        return self.layers[layer]

    @property
    def saved_seconds(self) -> float:
        """Loader seconds saved by every layer together."""
        return sum(s.saved_seconds for s in self.layers.values())

    @property
    def saved_cost(self) -> float:
        """Dollars saved by every layer together, at each layer's declared cost per load."""
        return sum(s.saved_cost for s in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-able values, layers nested by name."""
        return {
            "layers": {name: s.to_dict() for name, s in self.layers.items()},
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "layers"},
        }
