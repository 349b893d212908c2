"""OpenTelemetry metrics of ToolCaches: observable instruments on a Meter.

Instruments are observed when the SDK's reader collects (one ``stats()``
snapshot per cache per collection), so nothing is added to the request path::

    from aiotoolcache.metrics.otel import instrument
    instrument(cache)                  # uses the global MeterProvider
    instrument(cache, meter_provider=provider)

Counters (cumulative, observable): ``aiotoolcache.hits`` {namespace, layer,
tier}, ``aiotoolcache.misses``, ``aiotoolcache.loads``,
``aiotoolcache.load_errors``, ``aiotoolcache.coalesced`` {scope},
``aiotoolcache.load_time`` (s), ``aiotoolcache.saved_time`` (s),
``aiotoolcache.saved_cost`` (USD), ``aiotoolcache.backend_errors``,
``aiotoolcache.stale_served``. Gauges: ``aiotoolcache.l1.size`` (By),
``aiotoolcache.l1.entries``, ``aiotoolcache.breaker.state`` {state},
``aiotoolcache.subscriber.connected``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ImportError as exc:
    raise ImportError(
        "aiotoolcache.metrics.otel needs opentelemetry-api: pip install 'aiotoolcache[otel]'"
    ) from exc

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.stats import CacheStats, LayerStats
from aiotoolcache.toolcache import ToolCache

__all__ = ["ToolCacheInstruments", "instrument"]

BREAKER_STATES = ("closed", "open", "half_open")
_SNAPSHOT_REUSE = 0.5  # seconds: one snapshot serves every instrument of one collection

# (instrument name, LayerStats attribute, unit, description)
_LAYER_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("aiotoolcache.misses", "misses", "{lookup}", "Lookups that found no usable value."),
    ("aiotoolcache.loads", "loads", "{load}", "Loader runs that succeeded."),
    ("aiotoolcache.load_errors", "load_errors", "{load}", "Loader runs that raised."),
    ("aiotoolcache.load_time", "load_seconds_total", "s", "Time spent in successful loads."),
    (
        "aiotoolcache.saved_time",
        "saved_seconds",
        "s",
        "Loader time avoided: avoided loads times the mean measured load time.",
    ),
    (
        "aiotoolcache.saved_cost",
        "saved_cost",
        "USD",
        "Dollars avoided: avoided loads times the layer's declared cost_per_load.",
    ),
    ("aiotoolcache.stale_served", "stale_served", "{lookup}", "Stale values served."),
    ("aiotoolcache.backend_errors", "backend_errors", "{call}", "Backend calls that failed."),
)

Callback = Callable[[CallbackOptions], Iterable[Observation]]


class ToolCacheInstruments:
    """ToolCacheInstruments observes the counters of one or more ToolCaches on a Meter."""

    def __init__(
        self,
        caches: ToolCache | Iterable[ToolCache] = (),
        *,
        meter: Meter | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        from aiotoolcache import __version__

        if meter is None:
            provider = meter_provider or metrics.get_meter_provider()
            meter = provider.get_meter("aiotoolcache", __version__)
        self.meter = meter
        self._caches: dict[str, ToolCache] = {}
        self._snapshots: dict[str, tuple[float, CacheStats]] = {}
        self._lock = threading.Lock()
        for cache in [caches] if isinstance(caches, ToolCache) else caches:
            self.add(cache)
        self.instruments: list[Any] = []
        counter = meter.create_observable_counter
        gauge = meter.create_observable_gauge
        self.instruments.append(
            counter(
                "aiotoolcache.hits",
                [self._hits],
                unit="{lookup}",
                description="Lookups served from the cache, by tier (l1 in-process, l2 Redis).",
            )
        )
        for name, attr, unit, text in _LAYER_COUNTERS:
            self.instruments.append(counter(name, [self._layer(attr)], unit, text))
        self.instruments += [
            counter(
                "aiotoolcache.coalesced",
                [self._coalesced],
                unit="{lookup}",
                description="Lookups that shared another caller's load (process or fleet).",
            ),
            gauge(
                "aiotoolcache.l1.size",
                [self._layer("l1_bytes")],
                unit="By",
                description="Payload bytes held in the in-process L1.",
            ),
            gauge(
                "aiotoolcache.l1.entries",
                [self._l1_entries],
                unit="{entry}",
                description="Entries held in the in-process L1.",
            ),
            gauge(
                "aiotoolcache.breaker.state",
                [self._breaker],
                unit="1",
                description="Circuit breaker state: 1 for the current state, 0 for the others.",
            ),
            gauge(
                "aiotoolcache.subscriber.connected",
                [self._subscriber],
                unit="1",
                description="1 while the invalidation subscriber is connected.",
            ),
        ]

    def add(self, cache: ToolCache) -> None:
        """Observe ``cache`` too; its namespace must differ from those already observed."""
        with self._lock:
            known = self._caches.get(cache.namespace)
            if known is not None and known is not cache:
                raise ConfigurationError(
                    f"a cache with namespace {cache.namespace!r} is already observed"
                )
            self._caches[cache.namespace] = cache

    def remove(self, cache: ToolCache) -> None:
        with self._lock:
            if self._caches.get(cache.namespace) is cache:
                del self._caches[cache.namespace]
                self._snapshots.pop(cache.namespace, None)

    # -- snapshots ----------------------------------------------------------------
    def _stats(self) -> Iterator[tuple[ToolCache, CacheStats]]:
        now = time.monotonic()
        with self._lock:
            caches = list(self._caches.values())
        for cache in caches:
            taken = self._snapshots.get(cache.namespace)
            if taken is None or now - taken[0] > _SNAPSHOT_REUSE:
                taken = (now, cache.stats())
                self._snapshots[cache.namespace] = taken
            yield cache, taken[1]

    def _layers(self) -> Iterator[tuple[dict[str, str], LayerStats]]:
        for cache, snapshot in self._stats():
            for name, stats in snapshot.layers.items():
                yield {"namespace": cache.namespace, "layer": name}, stats

    # -- callbacks --------------------------------------------------------------------
    def _hits(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, stats in self._layers():
            yield Observation(stats.l1_hits, {**attributes, "tier": "l1"})
            yield Observation(stats.l2_hits, {**attributes, "tier": "l2"})

    def _coalesced(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, stats in self._layers():
            yield Observation(stats.coalesced, {**attributes, "scope": "process"})
            yield Observation(stats.remote_coalesced, {**attributes, "scope": "fleet"})

    def _layer(self, attr: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for attributes, stats in self._layers():
                yield Observation(getattr(stats, attr), attributes)

        return observe

    def _l1_entries(self, options: CallbackOptions) -> Iterable[Observation]:
        for cache, snapshot in self._stats():
            yield Observation(snapshot.l1_entries, {"namespace": cache.namespace})

    def _breaker(self, options: CallbackOptions) -> Iterable[Observation]:
        for cache, snapshot in self._stats():
            for state in BREAKER_STATES:
                value = 1 if snapshot.breaker_state == state else 0
                yield Observation(value, {"namespace": cache.namespace, "state": state})

    def _subscriber(self, options: CallbackOptions) -> Iterable[Observation]:
        for cache, snapshot in self._stats():
            value = 1 if snapshot.subscriber_connected else 0
            yield Observation(value, {"namespace": cache.namespace})


def instrument(
    cache: ToolCache,
    *,
    meter: Meter | None = None,
    meter_provider: MeterProvider | None = None,
) -> ToolCacheInstruments:
    """Observe ``cache``'s counters on ``meter`` (default: the global MeterProvider's)."""
    return ToolCacheInstruments(cache, meter=meter, meter_provider=meter_provider)
