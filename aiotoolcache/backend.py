"""The backend under a ToolCache's layers: what it is built from, and how it starts and closes.

From the URL (or client) a cache was given comes its store (Redis, a file
directory or memory), the Redis client when there is one, the circuit breaker
every call to it goes through, the bus that
carries invalidations (in process, pub/sub, or per shard on a Cluster), the
outbox that resends what Redis missed, the leases, the shared tier and the
loads. Every layer of the cache uses these same ones. ``start`` connects the
subscriber and names this worker; ``aclose`` closes everything within a
bound, ``close_now`` at once (the event loop is ending under an open cache).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from aiotoolcache import connect
from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.bus import Bus
from aiotoolcache.cluster_bus import ClusterBus
from aiotoolcache.errors import CacheClosed
from aiotoolcache.invalidation import RedisBus, bus_keys, now_ms
from aiotoolcache.lease import LeaseManager
from aiotoolcache.loading import LoadCoordinator
from aiotoolcache.outbox import InvalidationOutbox
from aiotoolcache.server_info import ServerInfo, read_server_info
from aiotoolcache.settings import parse_backend_url
from aiotoolcache.stores.file import FileStore
from aiotoolcache.stores.memory import MemoryStore
from aiotoolcache.stores.redis import AnyRedis, RedisStore
from aiotoolcache.tier import SharedTier
from aiotoolcache.urls import mask_url

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer
    from aiotoolcache.coherence import Coherence
    from aiotoolcache.fleet import FleetReporter
    from aiotoolcache.layers import LayerConfig
    from aiotoolcache.stores.base import Store

__all__ = ["LAZY_START_WAIT", "Backend"]

log = logging.getLogger("aiotoolcache")
# A lazily started cache's first calls wait this long at most for a slow Redis.
LAZY_START_WAIT = 1.0


class Backend:
    """Backend is the store, client, breaker, bus, outbox, leases, tier and loads of a ToolCache.

    ``coherence`` (L1, fills, flights, generations) comes built: the bus is
    attached to it here, once the URL says which.
    """

    def __init__(
        self,
        url: str | None,
        client: AnyRedis | None,
        *,
        namespace: str,
        coherence: Coherence,
        layer_configs: Mapping[str, LayerConfig],
        mac_secrets: Sequence[bytes],
        fallback: str | Store | None,
        mirror_to_fallback: bool,
        strict: bool,
        failure_threshold: int,
        cooldown: float,
        budget: float,
        max_connections: int,
        redis_options: Mapping[str, Any] | None,
        tls_ca_file: str | None,
        tls_verify: bool,
        health_interval: float,
        max_staleness: float,
        lease_ms: int,
        lease_wait: float,
    ) -> None:
        self.url = url
        self.coherence = coherence
        self.breaker = breaker = CircuitBreaker(
            failure_threshold=failure_threshold,
            cooldown=cooldown,
            budget=budget,
            translate=(RedisError, OSError),
            # Leave room in the pool for the subscriber and the fleet reporter.
            concurrency=max(1, max_connections - 2),
        )
        self.client: AnyRedis | None = client
        self.owns_client = client is None
        self.channel = f"{namespace}:bus"
        leases: LeaseManager | None = None
        self.outbox: InvalidationOutbox | None = None
        self.store: Store
        if client is None and url is not None:
            kind, location = parse_backend_url(url)
            if kind == "file":
                self.store = FileStore(location)
            elif kind == "memory":
                self.store = MemoryStore()
            else:
                self.client = connect.client_for(
                    url,
                    kind,
                    budget,
                    max_connections,
                    connect.tls_options(url, redis_options, tls_ca_file, tls_verify),
                )
        self.fallback: Store | None = (
            FileStore(parse_backend_url(fallback)[1]) if isinstance(fallback, str) else fallback
        )
        if self.client is not None:
            redis_client = self.client
            self.store = RedisStore(redis_client, breaker)
            leases = LeaseManager(redis_client, breaker)
            bus_class = ClusterBus if isinstance(redis_client, RedisCluster) else RedisBus
            longest = max(c.ttl + c.stale_ttl for c in layer_configs.values())
            coherence.attach(
                lambda apply, reset: bus_class(
                    redis_client,
                    breaker,
                    namespace,
                    apply,
                    reset,
                    health_interval=health_interval,
                    max_staleness=max_staleness,
                    mac_keys=bus_keys(mac_secrets),
                    generations_ttl_ms=int(longest * 1000),
                ),
                self.fallback,
            )
            self.outbox = InvalidationOutbox(leases, coherence, namespace, self.channel)
        else:
            if url is None:
                self.store = MemoryStore()
            coherence.attach(lambda apply, reset: Bus(apply, reset), self.fallback)
        self.tier = SharedTier(
            store=self.store,
            fallback=self.fallback,
            mirror=mirror_to_fallback,
            leases=leases,
            coherence=coherence,
            outbox=self.outbox,
            channel=self.channel,
            strict=strict,
        )
        self.loads = LoadCoordinator(
            coherence=coherence,
            tier=self.tier,
            breaker=breaker,
            leases=leases,
            lease_ms=lease_ms,
            lease_wait=lease_wait,
        )
        self.closing = False
        self._warned_unreachable = False
        # The server's flavour, version and fast paths, read once by start().
        self.server: ServerInfo | None = None
        coherence.bus.on_abandon = self.abandon

    # -- start ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the subscriber; wait (at most 2 s) until the generations are known."""
        self.check_open()
        await self.coherence.start(wait=2.0)
        self.warn_if_unknown(2.0)
        if self.loads.leases is not None and self.coherence.known:
            # Named before the first miss parks a lease (a Cluster client knows its nodes
            # once the generations were read).
            self.loads.leases.presence.start()
        await self._learn_server()

    async def start_lazily(self) -> None:
        """Start on a request's behalf: wait only for the first connection attempt to end."""
        # At once when Redis refuses, at most LAZY_START_WAIT when it is slow: a dead
        # Redis never delays a tool call for long and a live one is used.
        self.check_open()
        if not self.coherence.started and self.client is not None:
            log.warning(
                "ToolCache used without 'async with' or 'await cache.start()': started "
                "lazily; call 'await cache.aclose()' when done to release connections"
            )
        await self.coherence.start(wait=LAZY_START_WAIT)
        self.warn_if_unknown(LAZY_START_WAIT)
        await self._learn_server()

    async def _learn_server(self) -> None:
        """Read the server's flavour and version once it answers, and use its fast paths."""
        if self.client is None or self.server is not None or not self.coherence.known:
            return
        self.server = await read_server_info(self.client)
        if self.server is not None:
            log.info("cache backend: %s", self.server.describe())
        if self.loads.leases is not None:
            # Fills and releases go by one command where the server has one.
            self.loads.leases.use_server(self.server)

    def check_open(self) -> None:
        if self.closing:
            raise CacheClosed("this ToolCache was closed with aclose(); create a new one")

    def warn_if_unknown(self, waited: float) -> None:
        if not self.coherence.known and not self._warned_unreachable:
            self._warned_unreachable = True
            log.warning(
                "cache backend %s did not answer within %.2f s: tool calls run uncached "
                "until it does",
                mask_url(self.url or ""),
                waited,
            )

    # -- invalidation -----------------------------------------------------------------
    async def bump(self, fields: Sequence[str], layer: Layer | None, settle: bool | None) -> None:
        """Bump the generation ``fields`` in every worker; settle as ``settle`` says.

        A bump Redis does not take is resent by the outbox until it does, and
        applied to this worker at once; ``layer`` counts the backend error.
        """
        bus = self.coherence.bus
        landed = False
        for field in fields:
            try:
                await bus.bump(field)
                landed = True
            except Exception as exc:
                error = self.tier.backend_error(exc)
                if self.outbox is not None:  # sent again until Redis takes it
                    self.outbox.bump(field)
                # Keep this worker consistent even when the others cannot be told yet
                # ("u": not in Redis, so the others still use the generation before it).
                bumped = max(bus.generation(field) + 1, now_ms())
                bus.apply({"o": bus.origin, "op": "gen", "f": field, "g": bumped, "u": 1})
                self.tier.failed(layer, error)
        if landed and self.coherence.settles(settle):
            await bus.settle()

    # -- close ----------------------------------------------------------------------
    def abandon(self) -> None:
        """Close at once (no awaiting): the event loop ends while the cache is open."""
        if not self.closing:
            self.closing = True
            self.close_now()

    def close_now(self) -> None:
        self.coherence.close()
        if self.loads.leases is not None:
            self.loads.leases.close_now()
        self.coherence.bus.stop()
        if self.client is not None and self.owns_client:
            connect.close_now(self.client)

    async def aclose(self, reporter: FleetReporter | None, *, within: float) -> None:
        """Finish background refreshes, send ``reporter``'s last deltas, stop the subscriber,
        release the pool; whatever is not done after ``within`` seconds closes at once."""
        if self.closing:
            return
        self.closing = True
        self.coherence.close()
        try:
            async with asyncio.timeout(within):
                await self.loads.aclose()
                if reporter is not None:
                    await reporter.aclose()  # the last deltas, and the heartbeat removed
                if self.outbox is not None:
                    await self.outbox.aclose()
                await self.coherence.aclose()
                await self.tier.aclose()
                if self.client is not None and self.owns_client:
                    await self.client.aclose()
        except TimeoutError:
            log.warning("closing took over %.0f s: connections closed at once", within)
            self.close_now()
