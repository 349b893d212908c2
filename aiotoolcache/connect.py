"""Redis clients for a cache URL: one blocking connection pool with fast-fail timeouts.

``BlockingConnectionPool`` makes a burst of requests wait for a connection
instead of failing (the plain pool raises at once when exhausted), and the
asyncio ``Retry`` (the sync one silently disables retries on asyncio
clients) retries a dropped connection once, quickly.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.stores.redis import AnyRedis

__all__ = ["client_for"]


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1)


def pool_options(budget: float, options: dict[str, Any]) -> dict[str, Any]:
    """Connection options: sub-second timeouts derived from the cache's time budget."""
    return {
        "socket_timeout": max(0.5, budget * 2),
        "socket_connect_timeout": max(0.5, budget * 2),
        "retry": _retry(),
        **options,
    }


def client_for(
    url: str, kind: str, budget: float, max_connections: int, options: dict[str, Any]
) -> AnyRedis:
    """Return the one client (and pool) a ToolCache uses for ``url``."""
    if kind == "redis":
        tls_verify = options.pop("ssl_cert_reqs", "required")
        if url.startswith("rediss://"):
            options.setdefault("ssl_cert_reqs", tls_verify)
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=max(budget, 0.05),
            **pool_options(budget, options),
        )
        # from_pool hands the pool to the client, so closing the client closes the pool.
        return Redis.from_pool(pool)
    raise ConfigurationError(f"{kind} URLs are not supported by this build: {url!r}")
