"""Prometheus metrics of ToolCaches: a custom ``prometheus_client`` collector.

Each scrape takes one ``cache.stats()`` snapshot per cache and reports it;
nothing is counted twice and nothing runs on the request path::

    from aiotoolcache.metrics.prometheus import register
    register(cache)                       # on prometheus_client.REGISTRY
    prometheus_client.start_http_server(9464)

Every series carries ``namespace`` (one collector serves several caches, one
per namespace) and, where it applies, ``layer``.

Load latency: the histogram ``aiotoolcache_load_seconds`` reports the exact
count and sum of load durations (so ``rate(_sum)/rate(_count)`` is the mean
load time). When ``LayerStats`` carries per-bucket counts
(``load_buckets``: cumulative ``(upper_bound, count)`` pairs) they become
the histogram's buckets; otherwise only the ``+Inf`` bucket is reported.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence

try:
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:
    raise ImportError(
        "aiotoolcache.metrics.prometheus needs prometheus_client: "
        "pip install 'aiotoolcache[prometheus]'"
    ) from exc

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.stats import LayerStats
from aiotoolcache.toolcache import ToolCache

__all__ = ["BREAKER_STATES", "ToolCacheCollector", "register"]

BREAKER_STATES = ("closed", "open", "half_open")

# (metric name without _total, LayerStats attribute, help text)
_LAYER_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("aiotoolcache_misses", "misses", "Lookups that found no usable value in L1 or L2."),
    ("aiotoolcache_loads", "loads", "Loader runs that succeeded."),
    ("aiotoolcache_load_errors", "load_errors", "Loader runs that raised."),
    ("aiotoolcache_stale_served", "stale_served", "Stale values served while refreshing."),
    ("aiotoolcache_early_refreshes", "early_refreshes", "Early (XFetch) refreshes started."),
    ("aiotoolcache_refresh_errors", "refresh_errors", "Background refreshes that failed."),
    ("aiotoolcache_lease_takeovers", "lease_takeovers", "Leases taken over from a dead loader."),
    ("aiotoolcache_corrupt", "corrupt", "Stored values that could not be decoded (dropped)."),
    ("aiotoolcache_skipped_writes", "skipped_writes", "Values returned but not cached."),
    ("aiotoolcache_dropped_writes", "dropped_writes", "Writes lost to backend trouble."),
    ("aiotoolcache_backend_errors", "backend_errors", "Backend calls that failed (fail-open)."),
)


def _bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _load_buckets(stats: LayerStats) -> list[tuple[str, float]]:
    raw: Sequence[tuple[float, int]] = getattr(stats, "load_buckets", None) or ()
    buckets = [(_bucket_label(b), float(count)) for b, count in raw if not math.isinf(b)]
    buckets.append(("+Inf", float(stats.loads)))
    return buckets


class ToolCacheCollector(Collector):
    """ToolCacheCollector reports the counters of one or more ToolCaches to Prometheus."""

    def __init__(self, caches: ToolCache | Iterable[ToolCache] = ()) -> None:
        self._caches: dict[str, ToolCache] = {}
        self._lock = threading.Lock()
        for cache in [caches] if isinstance(caches, ToolCache) else caches:
            self.add(cache)

    def add(self, cache: ToolCache) -> None:
        """Report ``cache`` too; its namespace must differ from those already reported."""
        with self._lock:
            known = self._caches.get(cache.namespace)
            if known is not None and known is not cache:
                raise ConfigurationError(
                    f"a cache with namespace {cache.namespace!r} is already reported"
                )
            self._caches[cache.namespace] = cache

    def remove(self, cache: ToolCache) -> None:
        with self._lock:
            if self._caches.get(cache.namespace) is cache:
                del self._caches[cache.namespace]

    def describe(self) -> Iterable[Metric]:
        # Names only (values are never read at registration): lets the registry
        # detect clashes without taking a snapshot.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            caches = list(self._caches.values())
        return list(self._families(caches))

    def _families(self, caches: Sequence[ToolCache] = ()) -> Iterator[Metric]:
        ns_layer = ["namespace", "layer"]
        hits = CounterMetricFamily(
            "aiotoolcache_hits",
            "Lookups served from the cache, by tier (l1: in-process, l2: Redis).",
            labels=[*ns_layer, "tier"],
        )
        counters = [
            (CounterMetricFamily(name, text, labels=ns_layer), attr)
            for name, attr, text in _LAYER_COUNTERS
        ]
        coalesced = CounterMetricFamily(
            "aiotoolcache_coalesced",
            "Lookups that shared another caller's load (scope process: same worker; "
            "fleet: a load in another worker).",
            labels=[*ns_layer, "scope"],
        )
        saved_seconds = CounterMetricFamily(
            "aiotoolcache_saved_seconds",
            "Loader time avoided: avoided loads times the layer's mean measured load time.",
            labels=ns_layer,
        )
        saved_cost = CounterMetricFamily(
            "aiotoolcache_saved_cost_dollars",
            "Dollars avoided: avoided loads times the layer's declared cost_per_load.",
            labels=ns_layer,
        )
        load_time = HistogramMetricFamily(
            "aiotoolcache_load_seconds",
            "Duration of successful loader runs.",
            labels=ns_layer,
        )
        l1_bytes = GaugeMetricFamily(
            "aiotoolcache_l1_bytes", "Payload bytes held in the in-process L1.", labels=ns_layer
        )
        l1_entries = GaugeMetricFamily(
            "aiotoolcache_l1_entries", "Entries held in the in-process L1.", labels=["namespace"]
        )
        breaker_state = GaugeMetricFamily(
            "aiotoolcache_breaker_state",
            "Circuit breaker state guarding Redis: 1 for the current state, 0 for the others.",
            labels=["namespace", "state"],
        )
        breaker_opened = CounterMetricFamily(
            "aiotoolcache_breaker_opened",
            "Times the circuit breaker opened.",
            labels=["namespace"],
        )
        breaker_refused = CounterMetricFamily(
            "aiotoolcache_breaker_refused",
            "Backend calls refused at once because the breaker was open.",
            labels=["namespace"],
        )
        backend_timeouts = CounterMetricFamily(
            "aiotoolcache_backend_timeouts",
            "Backend calls that exceeded the cache's time budget.",
            labels=["namespace"],
        )
        subscriber = GaugeMetricFamily(
            "aiotoolcache_subscriber_connected",
            "1 while the invalidation subscriber is connected.",
            labels=["namespace"],
        )
        for cache in caches:
            ns = cache.namespace
            snapshot = cache.stats()
            for name, stats in snapshot.layers.items():
                labels = [ns, name]
                hits.add_metric([*labels, "l1"], stats.l1_hits)
                hits.add_metric([*labels, "l2"], stats.l2_hits)
                for family, attr in counters:
                    family.add_metric(labels, getattr(stats, attr))
                coalesced.add_metric([*labels, "process"], stats.coalesced)
                coalesced.add_metric([*labels, "fleet"], stats.remote_coalesced)
                saved_seconds.add_metric(labels, stats.saved_seconds)
                saved_cost.add_metric(labels, stats.saved_cost)
                load_time.add_metric(labels, _load_buckets(stats), stats.load_seconds_total)
                l1_bytes.add_metric(labels, stats.l1_bytes)
            l1_entries.add_metric([ns], snapshot.l1_entries)
            breaker = cache.breaker.stats()
            for state in BREAKER_STATES:
                breaker_state.add_metric([ns, state], 1.0 if breaker.state == state else 0.0)
            breaker_opened.add_metric([ns], breaker.opened)
            breaker_refused.add_metric([ns], breaker.refused)
            backend_timeouts.add_metric([ns], breaker.timeouts)
            subscriber.add_metric([ns], 1.0 if snapshot.subscriber_connected else 0.0)
        yield hits
        yield from (family for family, _ in counters)
        yield coalesced
        yield saved_seconds
        yield saved_cost
        yield load_time
        yield l1_bytes
        yield l1_entries
        yield breaker_state
        yield breaker_opened
        yield breaker_refused
        yield backend_timeouts
        yield subscriber


def register(cache: ToolCache, registry: CollectorRegistry | None = None) -> ToolCacheCollector:
    """Register a collector for ``cache`` on ``registry`` (default: the global REGISTRY)."""
    collector = ToolCacheCollector(cache)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
