"""Health: is the shared tier reachable, how fast, and what is the cache falling back on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from aiotoolcache.breaker import BreakerState

if TYPE_CHECKING:
    from aiotoolcache.breaker import CircuitBreaker
    from aiotoolcache.stores.base import Store
    from aiotoolcache.stores.redis import AnyRedis

__all__ = ["Checked", "Health", "check_health"]


class _Subscriber(Protocol):
    @property
    def connected(self) -> bool: ...


class Checked(Protocol):
    """Checked is what a health check reads of a cache (``ToolCache`` has it)."""

    @property
    def client(self) -> AnyRedis | None: ...
    @property
    def store(self) -> Store: ...
    @property
    def fallback(self) -> Store | None: ...
    @property
    def breaker(self) -> CircuitBreaker: ...
    @property
    def bus(self) -> _Subscriber: ...


@dataclass(frozen=True, slots=True)
class Health:
    """Health is one check of a ToolCache's backend and background machinery."""

    backend: str  # "redis", or the store class in lower case: "memorystore", "filestore"
    reachable: bool
    latency_ms: float | None
    error: str | None
    breaker_state: str
    pool_in_use: int | None
    pool_max: int | None
    subscriber_connected: bool
    fallback_in_use: bool

    @property
    def ok(self) -> bool:
        return self.reachable and self.breaker_state == BreakerState.CLOSED.value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def check_health(cache: Checked) -> Health:
    """Ping the backend (bypassing the breaker; at most max(1 s, 4 budgets)) and report."""
    client = cache.client
    reachable, latency, error = True, None, None
    pool_in_use = pool_max = None
    if client is not None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(max(1.0, cache.breaker.budget * 4)):
                await client.ping()
            latency = (time.perf_counter() - started) * 1000
        except (RedisError, OSError, TimeoutError) as exc:
            reachable, error = False, f"{type(exc).__name__}: {exc}"
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool_max = getattr(pool, "max_connections", None)
            in_use = getattr(pool, "_in_use_connections", None)
            pool_in_use = len(in_use) if in_use is not None else None
    breaker = cache.breaker.state.value
    return Health(
        backend="redis" if client is not None else type(cache.store).__name__.lower(),
        reachable=reachable,
        latency_ms=latency,
        error=error,
        breaker_state=breaker,
        pool_in_use=pool_in_use,
        pool_max=pool_max,
        subscriber_connected=cache.bus.connected,
        fallback_in_use=cache.fallback is not None and cache.breaker.failing,
    )
