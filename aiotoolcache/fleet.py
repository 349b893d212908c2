"""Fleet-wide statistics: every worker adds its counter deltas to one Redis hash.

Each worker's ``FleetReporter`` wakes every ``interval`` seconds (and once
more on close), takes a ``cache.stats()`` snapshot, and sends what changed
since its last successful flush in one pipelined batch: ``HINCRBY`` (integer
counters) and ``HINCRBYFLOAT`` (seconds, dollars) on ``{namespace}:fleet:stats``
under fields such as ``results:l1_hits``, plus a heartbeat key
``{namespace}:workers:{origin}`` that expires after about three intervals.
Nothing of this runs on the request path. Each batch is a MULTI/EXEC, so it
lands whole or not at all; a failed flush (Redis down, breaker open) keeps its
deltas for the next one, so no count is lost. The one case counted twice: a
flush that timed out (Redis stalled past the one-second budget) after Redis had
applied it is sent again with the next one.

``fleet_stats(cache)`` reads the hash and counts the live heartbeats. The
totals of a worker that died stay in the hash (up to its last flush); it
drops out of ``workers_alive`` once its heartbeat expires.

Housekeeping keys expire like cache entries: every flush renews the TTL of
the stats hash and of the worker set to the namespace's longest entry
lifetime (the largest ``ttl + stale_ttl`` of the cache's layers, at least
three flush intervals). While any worker lives they stay; a namespace that
nobody uses any more leaves nothing behind once its longest TTL has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.asyncio import Redis

from aiotoolcache.errors import BackendError, ConfigurationError
from aiotoolcache.stats import COUNTS, LayerStats

if TYPE_CHECKING:
    from aiotoolcache.breaker import CircuitBreaker
    from aiotoolcache.layers import LayerConfig
    from aiotoolcache.stats import CacheStats
    from aiotoolcache.stores.redis import AnyRedis

__all__ = [
    "COUNTER_FIELDS",
    "FLOAT_FIELDS",
    "FleetCache",
    "FleetLayerStats",
    "FleetReporter",
    "FleetStats",
    "ReportingCache",
    "WorkerInfo",
    "fleet_keys",
    "fleet_stats",
    "no_reporting_options",
    "reset_fleet_stats",
    "retention_seconds",
]

log = logging.getLogger("aiotoolcache.fleet")

DEFAULT_INTERVAL = 5.0

# Monotonic integer counters of LayerStats, summed with HINCRBY.
COUNTER_FIELDS: tuple[str, ...] = COUNTS
# Float totals, summed with HINCRBYFLOAT. saved_seconds is valued at each
# worker's current mean load time, so its delta can be negative; the fleet
# total is still exactly the sum of the workers' own figures.
FLOAT_FIELDS: tuple[str, ...] = ("load_seconds_total", "saved_seconds", "saved_cost")


class FleetCache(Protocol):
    """FleetCache is what reading a namespace's fleet totals needs of a cache (``ToolCache``
    has it): the namespace, its Redis client and the breaker every call goes through."""

    @property
    def namespace(self) -> str: ...
    @property
    def client(self) -> AnyRedis | None: ...
    @property
    def breaker(self) -> CircuitBreaker: ...


class _Configured(Protocol):
    @property
    def config(self) -> LayerConfig: ...


class _Origin(Protocol):
    @property
    def origin(self) -> str: ...


class ReportingCache(FleetCache, Protocol):
    """ReportingCache is what a worker's ``FleetReporter`` reads of its cache: also the
    bus origin that names the worker, the layers' lifetimes and the counters."""

    @property
    def bus(self) -> _Origin: ...
    @property
    def layers(self) -> Mapping[str, _Configured]: ...
    def stats(self) -> CacheStats: ...


def fleet_keys(namespace: str) -> tuple[str, str, str]:
    """Return ``(stats hash, worker set, heartbeat key prefix)`` of a namespace."""
    return f"{namespace}:fleet:stats", f"{namespace}:fleet:workers", f"{namespace}:workers:"


@dataclass(frozen=True, slots=True)
class FleetLayerStats:
    """FleetLayerStats is one layer's counters summed over every worker that ever reported."""

    layer: str
    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    loads: int = 0
    load_errors: int = 0
    coalesced: int = 0
    remote_coalesced: int = 0
    stale_served: int = 0
    early_refreshes: int = 0
    refresh_errors: int = 0
    lease_takeovers: int = 0
    corrupt: int = 0
    skipped_writes: int = 0
    dropped_writes: int = 0
    backend_errors: int = 0
    load_seconds_total: float = 0.0
    saved_seconds: float = 0.0
    saved_cost: float = 0.0

    @property
    def hits(self) -> int:
        return self.l1_hits + self.l2_hits

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def mean_load_seconds(self) -> float:
        return self.load_seconds_total / self.loads if self.loads else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "hits": self.hits,
            "hit_rate": self.hit_rate,
            "mean_load_seconds": self.mean_load_seconds,
        }


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """WorkerInfo is what a live worker's heartbeat says about it."""

    origin: str
    pid: int | None
    host: str | None
    interval: float | None
    last_flush: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FleetStats:
    """FleetStats is the fleet-wide view of one namespace: per-layer totals and live workers."""

    namespace: str
    layers: dict[str, FleetLayerStats]
    workers_alive: int
    workers: tuple[WorkerInfo, ...] = ()

    def __getitem__(self, layer: str) -> FleetLayerStats:
        return self.layers[layer]

    @property
    def saved_seconds(self) -> float:
        return sum(s.saved_seconds for s in self.layers.values())

    @property
    def saved_cost(self) -> float:
        return sum(s.saved_cost for s in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "workers_alive": self.workers_alive,
            "workers": [worker.to_dict() for worker in self.workers],
            "saved_seconds": self.saved_seconds,
            "saved_cost": self.saved_cost,
            "layers": {name: s.to_dict() for name, s in self.layers.items()},
        }


def retention_seconds(cache: ReportingCache, floor: float = 0.0) -> float:
    """Return how long a namespace's housekeeping keys outlive their last refresh.

    The longest time any entry of ``cache`` may stay in Redis (``ttl + stale_ttl``
    of its longest-lived layer), and never less than ``floor``.
    """
    lifetimes = [layer.config.ttl + layer.config.stale_ttl for layer in cache.layers.values()]
    return max([floor, *lifetimes])


def _layer_values(stats: LayerStats) -> dict[str, float]:
    values: dict[str, float] = {name: getattr(stats, name) for name in COUNTER_FIELDS}
    values.update({name: getattr(stats, name) for name in FLOAT_FIELDS})
    return values


def _client_of(cache: FleetCache) -> AnyRedis:
    if cache.client is None:
        raise ConfigurationError("fleet statistics need a shared Redis backend (redis://…)")
    return cache.client


class FleetReporter:
    """FleetReporter sends one worker's counter deltas to Redis every ``interval`` seconds.

    ``start()`` begins the background task (the first flush is immediate, so
    the worker shows up as alive at once); ``aclose()`` stops it, flushes
    what is left and removes the heartbeat. ``flush()`` may also be awaited
    directly. A cache without Redis has no fleet: the reporter does nothing.
    """

    def __init__(
        self,
        cache: ReportingCache,
        interval: float = DEFAULT_INTERVAL,
        *,
        heartbeat_ttl: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError(f"interval must be positive, got {interval!r}")
        self.cache = cache
        self.interval = interval
        self.heartbeat_ttl = 3 * interval if heartbeat_ttl is None else heartbeat_ttl
        self.origin = cache.bus.origin
        self.flushes = 0
        self.failed_flushes = 0
        self._stats_key, self._workers_key, prefix = fleet_keys(cache.namespace)
        self._heartbeat_key = prefix + self.origin
        self.retention = retention_seconds(cache, self.heartbeat_ttl)
        self._sent: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.cache.client is not None

    def start(self) -> None:
        """Start the periodic flushes (a no-op for a cache without Redis, or when running)."""
        if not self.enabled or self._task is not None or self._closed:
            return
        self._task = asyncio.create_task(self._run(), name="aiotoolcache-fleet-reporter")

    async def aclose(self) -> None:
        """Stop the periodic flushes, flush the last deltas and remove the heartbeat."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.enabled:
            await self.flush(final=True)

    async def _run(self) -> None:
        while True:
            await self.flush()
            await asyncio.sleep(self.interval)

    def pending(self) -> dict[str, float]:
        """Return the non-zero deltas not yet sent, by hash field (``layer:counter``)."""
        return self._snapshot()[0]

    def _snapshot(self) -> tuple[dict[str, float], dict[str, float]]:
        deltas: dict[str, float] = {}
        current: dict[str, float] = {}
        for name, layer in self.cache.stats().layers.items():
            for counter, value in _layer_values(layer).items():
                field = f"{name}:{counter}"
                current[field] = value
                delta = value - self._sent.get(field, 0)
                if delta:
                    deltas[field] = delta
        return deltas, current

    async def flush(self, *, final: bool = False) -> bool:
        """Send the deltas and the heartbeat in one batch; return True when Redis took them.

        With ``final`` the heartbeat is deleted instead of renewed: the worker leaves.
        """
        if not self.enabled:
            return False
        async with self._lock:
            deltas, current = self._snapshot()
            client = _client_of(self.cache)
            retention_ms = int(self.retention * 1000)
            heartbeat = orjson.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "interval": self.interval,
                    "last_flush": time.time(),
                }
            )

            async def send() -> None:
                # MULTI/EXEC on one Redis: the increments land all together or not at
                # all, so a retried flush never counts twice. (Cluster: per-slot batch.)
                pipe = client.pipeline(transaction=isinstance(client, Redis))
                for field, delta in deltas.items():
                    if field.rpartition(":")[2] in COUNTER_FIELDS:
                        pipe.hincrby(self._stats_key, field, int(delta))
                    else:
                        pipe.hincrbyfloat(self._stats_key, field, float(delta))
                if final:
                    pipe.delete(self._heartbeat_key)
                    pipe.srem(self._workers_key, self.origin)
                else:
                    pipe.set(self._heartbeat_key, heartbeat, px=int(self.heartbeat_ttl * 1000))
                    pipe.sadd(self._workers_key, self.origin)
                # Refreshed on every flush: kept while a worker lives, gone after the
                # namespace's longest TTL once none does.
                pipe.pexpire(self._workers_key, retention_ms)
                pipe.pexpire(self._stats_key, retention_ms)
                await pipe.execute()

            try:
                await self.cache.breaker.call(send, budget=max(1.0, self.cache.breaker.budget))
            except BackendError as exc:
                self.failed_flushes += 1
                log.debug("fleet stats flush failed, deltas kept for the next one: %s", exc)
                return False
            # Remember the values themselves, not running sums of deltas: no float drift.
            self._sent.update(current)
            self.flushes += 1
            return True


def _number(raw: bytes | str) -> float:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return float(text)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _worker_info(origin: str, raw: Any) -> WorkerInfo:
    data: Mapping[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        loaded = orjson.loads(raw)
        if isinstance(loaded, dict):
            data = loaded

    def pick(name: str, kind: type[Any]) -> Any:
        value = data.get(name)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return WorkerInfo(
        origin=origin,
        pid=pick("pid", int),
        host=pick("host", str),
        interval=pick("interval", float),
        last_flush=pick("last_flush", float),
    )


def parse_fleet_hash(raw: Mapping[Any, Any]) -> dict[str, FleetLayerStats]:
    """Return per-layer totals from the fields of a fleet stats hash (unknown fields ignored)."""
    known = {f.name for f in fields(FleetLayerStats)} - {"layer"}
    values: dict[str, dict[str, float]] = {}
    for raw_field, raw_value in raw.items():
        layer, _, counter = _text(raw_field).rpartition(":")
        if not layer or counter not in known:
            continue
        try:
            values.setdefault(layer, {})[counter] = _number(raw_value)
        except ValueError:
            continue
    layers: dict[str, FleetLayerStats] = {}
    for layer in sorted(values):
        counts = values[layer]
        totals: dict[str, Any] = {name: int(counts.get(name, 0)) for name in COUNTER_FIELDS}
        totals.update({name: counts.get(name, 0.0) for name in FLOAT_FIELDS})
        layers[layer] = FleetLayerStats(layer, **totals)
    return layers


async def fleet_stats(cache: FleetCache) -> FleetStats:
    """Return the fleet-wide totals of ``cache``'s namespace and the workers alive now.

    Raises BackendError when Redis cannot be read and ConfigurationError for a
    cache without Redis. Workers whose heartbeat expired are pruned from the
    worker set on the way.
    """
    client = _client_of(cache)
    stats_key, workers_key, prefix = fleet_keys(cache.namespace)

    async def read() -> tuple[dict[Any, Any], list[str], list[Any]]:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(stats_key)
        pipe.smembers(workers_key)
        raw, members = await pipe.execute()
        origins = sorted(_text(member) for member in members)
        beats: list[Any] = []
        if origins:
            pipe = client.pipeline(transaction=False)
            for origin in origins:
                pipe.get(prefix + origin)
            beats = list(await pipe.execute())
        return dict(raw), origins, beats

    raw, origins, beats = await cache.breaker.call(read, budget=max(2.0, cache.breaker.budget))
    alive = tuple(
        _worker_info(origin, beat)
        for origin, beat in zip(origins, beats, strict=True)
        if beat is not None
    )
    dead = [origin for origin, beat in zip(origins, beats, strict=True) if beat is None]
    if dead:
        with contextlib.suppress(BackendError):
            await cache.breaker.call(lambda: client.srem(workers_key, *dead))
    return FleetStats(
        namespace=cache.namespace,
        layers=parse_fleet_hash(raw),
        workers_alive=len(alive),
        workers=alive,
    )


def no_reporting_options() -> dict[str, Any]:
    """Return the ToolCache options that keep a cache out of fleet reporting.

    For tools that are not workers (the command line, the demo's private
    namespace).
    """
    return {"fleet_interval": None}


async def reset_fleet_stats(cache: FleetCache) -> None:
    """Delete the namespace's fleet totals (live workers keep reporting new deltas)."""
    client = _client_of(cache)
    stats_key, _, _ = fleet_keys(cache.namespace)
    await cache.breaker.call(lambda: client.delete(stats_key))
