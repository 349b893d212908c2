"""Layer settings: how long each kind of cached work stays fresh, and how it is kept."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from aiotoolcache.errors import ConfigurationError

__all__ = ["DEFAULT_LAYERS", "VALUE_LIMIT", "LayerConfig", "value_limit"]

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class LayerConfig:
    """LayerConfig is the freshness and storage policy of one cache layer.

    ttl: seconds a value is fresh. stale_ttl: further seconds it may be served
    stale while one background refresh runs (stale-while-revalidate) or when
    the refresh fails (stale-if-error); Redis keeps the entry ttl + stale_ttl.
    l1 / l1_ttl: keep decoded-ready copies in process, at most l1_ttl seconds,
    so even a lost invalidation heals. jitter: TTLs are shortened by up to this
    fraction so entries written together do not expire together. beta: XFetch
    early-refresh eagerness (0 disables it). negative_ttl: cache loader errors
    for this long (None: never). cost_per_load: dollars one load costs.
    copy_on_read: hand every caller a deep copy of a cached value, for callers
    that mutate what they get (values are otherwise shared, and must not be).
    """

    ttl: float
    stale_ttl: float = 0.0
    l1: bool = True
    l1_ttl: float = 60.0
    max_value_bytes: int = 1 * 2**20
    jitter: float = 0.1
    beta: float = 1.0
    negative_ttl: float | None = None
    cost_per_load: float = 0.0
    copy_on_read: bool = False

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ConfigurationError(f"ttl must be positive, got {self.ttl!r}")
        if self.stale_ttl < 0 or self.l1_ttl <= 0 or self.max_value_bytes <= 0:
            raise ConfigurationError("stale_ttl must be >= 0; l1_ttl, max_value_bytes > 0")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if self.beta < 0:
            raise ConfigurationError(f"beta must be >= 0, got {self.beta!r}")
        if self.negative_ttl is not None and self.negative_ttl <= 0:
            raise ConfigurationError("negative_ttl must be positive or None")

    def with_options(self, **changes: Any) -> LayerConfig:
        """Return a copy with some settings changed."""
        return replace(self, **changes)


DEFAULT_LAYERS: dict[str, LayerConfig] = {
    "discovery": LayerConfig(ttl=24 * HOUR, stale_ttl=HOUR),
    "tools": LayerConfig(ttl=24 * HOUR, stale_ttl=HOUR),
    "search": LayerConfig(ttl=HOUR, stale_ttl=5 * 60.0),
    # No early refresh for results: it would re-run a tool call nobody is waiting for.
    "results": LayerConfig(ttl=5 * 60.0, beta=0.0),
    "embeddings": LayerConfig(ttl=7 * DAY, max_value_bytes=8 * 2**20),
}


VALUE_LIMIT: ContextVar[int | None] = ContextVar("aiotoolcache_value_limit", default=None)
"""A tool policy's ``max_value_bytes`` for the call under way (None: no policy sets one).

A context variable, so the loads and L2 reads a call starts (its own tasks
included) see the limit of that call's tool, and no other call does.
"""


def value_limit(config: LayerConfig) -> int:
    """The largest encoded value a layer stores and reads in this context.

    A tool policy may raise the layer's ``max_value_bytes`` for its own
    results; a policy's lower cap is applied before the value reaches the
    layer (see ``calls.read_through``).
    """
    override = VALUE_LIMIT.get()
    return config.max_value_bytes if override is None else max(override, config.max_value_bytes)
