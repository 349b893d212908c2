"""ToolCache: the layers of an agent's cache over one L1 and one shared L2.

Every layer shares the in-process L1, the L2 store (one Redis connection
pool), the circuit breaker and the one invalidation subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from aiotoolcache import calls, connect, fleet
from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.bus import Bus
from aiotoolcache.cache import Layer
from aiotoolcache.cassette import Cassette, options_from_url
from aiotoolcache.cluster_bus import ClusterBus
from aiotoolcache.codec import Codec, ModelRegistry, parse_secrets
from aiotoolcache.coherence import Coherence, L1Entry
from aiotoolcache.decorators import CachedFunction, PartitionOf, cached_function
from aiotoolcache.embeddings import embed_texts
from aiotoolcache.errors import CacheClosed, ConfigurationError
from aiotoolcache.fills import FillRegistry
from aiotoolcache.flight import SingleFlight
from aiotoolcache.health import Health, check_health
from aiotoolcache.hearing import DEFAULT_MAX_STALENESS
from aiotoolcache.invalidation import RedisBus, bus_keys, now_ms
from aiotoolcache.layers import DEFAULT_LAYERS, LayerConfig
from aiotoolcache.lease import LeaseManager
from aiotoolcache.loading import LoadCoordinator
from aiotoolcache.outbox import InvalidationOutbox
from aiotoolcache.policy import ToolPolicies, ToolPolicy
from aiotoolcache.server_info import ServerInfo, read_server_info
from aiotoolcache.settings import Settings, parse_backend_url
from aiotoolcache.stats import CacheStats
from aiotoolcache.stores.base import Store
from aiotoolcache.stores.file import FileStore
from aiotoolcache.stores.memory import BoundedLRU, MemoryStore
from aiotoolcache.stores.redis import AnyRedis, RedisStore
from aiotoolcache.tier import SharedTier
from aiotoolcache.urls import mask_url

__all__ = ["ToolCache"]

log = logging.getLogger("aiotoolcache")
# aclose() waits this long for background work and the pool, then closes at once.
CLOSE_WITHIN = 10.0
# A lazily started cache's first calls wait this long at most for a slow Redis.
LAZY_START_WAIT = 1.0

P = ParamSpec("P")
R = TypeVar("R")


class ToolCache:
    """ToolCache caches an agent's repeated work: discovery, tools, search, results, embeddings.

    ``ToolCache()`` is the embedded default (in-process memory, no server;
    ``AIOTOOLCACHE_URL`` overrides it). ``ToolCache.from_url("redis://…")``
    shares one Redis among many worker processes. Use ``async with cache:``
    (or ``await cache.aclose()``) so background tasks and the pool are
    released. No backend error reaches a caller unless ``strict=True``.
    Tool writes settle before they return (no worker serves a result from
    before them); ``settle_writes=True`` makes every write settle, ``False`` none.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        layers: Mapping[str, LayerConfig] | None = None,
        client: AnyRedis | None = None,
        strict: bool = False,
        fallback: str | Store | None = None,
        mirror_to_fallback: bool = False,
        l1_max_bytes: int = 64 * 2**20,
        l1_max_entries: int = 50_000,
        budget: float = 0.25,
        failure_threshold: int = 5,
        cooldown: float = 0.5,
        lease_ms: int = 3_000,
        lease_wait: float = 30.0,
        health_interval: float = 0.25,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        max_connections: int = 64,
        models: Iterable[type[Any]] = (),
        redis_options: Mapping[str, Any] | None = None,
        tls_ca_file: str | None = None,
        tls_verify: bool = True,
        seed: int | None = None,
        fleet_interval: float | None = fleet.DEFAULT_INTERVAL,
        cassette: str | os.PathLike[str] | Cassette | None = None,
        mode: str = "once",
        order: str = "any",
        redact: Iterable[str] = (),
        tool_policies: ToolPolicies
        | Mapping[str, ToolPolicy]
        | str
        | os.PathLike[str]
        | None = None,
        settle_writes: bool | None = None,
    ) -> None:
        if not max_staleness > 0:
            raise ConfigurationError(f"max_staleness must be above 0 s, got {max_staleness!r}")
        if cassette is not None and url is None and client is None:
            url = "memory://"  # a cassette run needs no backend, whatever the environment says
        settings = Settings.resolve(None if client is not None else url, namespace, secret)
        secrets = parse_secrets(settings.secret)  # the first signs, every one verifies
        self.namespace = settings.namespace
        self.url = settings.url
        self.strict = strict
        self.rng = random.Random(seed)
        self.policies = ToolPolicies.of(tool_policies)  # per-tool rules: keys, TTLs, writes
        self.codec = Codec(secret=settings.secret, registry=ModelRegistry())
        for model in models:
            self.codec.registry.register(model)
        self.cassette: Cassette | None = (
            cassette
            if isinstance(cassette, Cassette) or cassette is None
            else Cassette(cassette, mode=mode, order=order, redact=redact, codec=self.codec)
        )
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold,
            cooldown=cooldown,
            budget=budget,
            translate=(RedisError, OSError),
            # Leave room in the pool for the subscriber and the fleet reporter.
            concurrency=max(1, max_connections - 2),
        )
        # Created first: it owns L1, fills, flights and generations, and decides what
        # may be stored or served; everything below receives it.
        self.coherence = Coherence(l1_max_entries=l1_max_entries, l1_max_bytes=l1_max_bytes)
        # Tool writes settle before they return (None); True: every write; False: none.
        self.coherence.settle_writes = settle_writes
        self.client: AnyRedis | None = client
        self._owns_client = client is None
        self.bus_channel = f"{self.namespace}:bus"
        leases: LeaseManager | None = None
        self.outbox: InvalidationOutbox | None = None
        self.store: Store
        if client is None and self.url is not None:
            kind, location = parse_backend_url(self.url)
            if kind == "file":
                self.store = FileStore(location)
            elif kind == "memory":
                self.store = MemoryStore()
            else:
                self.client = connect.client_for(
                    self.url,
                    kind,
                    budget,
                    max_connections,
                    connect.tls_options(self.url, redis_options, tls_ca_file, tls_verify),
                )
        self.fallback: Store | None = (
            FileStore(parse_backend_url(fallback)[1]) if isinstance(fallback, str) else fallback
        )
        layer_configs = {**DEFAULT_LAYERS, **(layers or {})}
        if self.client is not None:
            redis_client = self.client
            self.store = RedisStore(redis_client, self.breaker)
            leases = LeaseManager(redis_client, self.breaker)
            bus_class = ClusterBus if isinstance(redis_client, RedisCluster) else RedisBus
            longest = max(c.ttl + c.stale_ttl for c in layer_configs.values())
            self.coherence.attach(
                lambda apply, reset: bus_class(
                    redis_client,
                    self.breaker,
                    self.namespace,
                    apply,
                    reset,
                    health_interval=health_interval,
                    max_staleness=max_staleness,
                    mac_keys=bus_keys(secrets),
                    generations_ttl_ms=int(longest * 1000),
                ),
                self.fallback,
            )
            self.outbox = InvalidationOutbox(
                leases, self.coherence, self.namespace, self.bus_channel
            )
        else:
            if self.url is None:
                self.store = MemoryStore()
            self.coherence.attach(lambda apply, reset: Bus(apply, reset), self.fallback)
        self.tier = SharedTier(
            store=self.store,
            fallback=self.fallback,
            mirror=mirror_to_fallback,
            leases=leases,
            coherence=self.coherence,
            outbox=self.outbox,
            channel=self.bus_channel,
            strict=strict,
        )
        self.loads = LoadCoordinator(
            coherence=self.coherence,
            tier=self.tier,
            breaker=self.breaker,
            leases=leases,
            lease_ms=lease_ms,
            lease_wait=lease_wait,
        )
        self._layers: dict[str, Layer] = {}
        for name, config in layer_configs.items():
            self.add_layer(name, config)
        self.closing = False
        self._warned_unreachable = False
        # The server's flavour, version and fast paths, read once by start().
        self.server: ServerInfo | None = None
        self.fleet_interval = fleet_interval
        self._fleet: fleet.FleetReporter | None = None
        self.coherence.on_start(self._start_fleet_reporter)
        self.coherence.bus.on_abandon = self._abandon

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ToolCache:
        """Return a ToolCache on ``url``: redis://, rediss://, unix://, file:///dir, memory://,
        redis+cluster://host:port,… or redis+sentinel://host:port,…/service[/db] (see connect),
        or cassette://path.jsonl?mode=… (record and replay, see cassette)."""
        if url.startswith("cassette:"):
            return cls(**{**options_from_url(url), **options})
        return cls(url, **options)

    # -- lifecycle ------------------------------------------------------------------
    @property
    def bus(self) -> Bus:
        """The invalidation bus (and mirror of the generations) every layer shares."""
        return self.coherence.bus

    @property
    def l1(self) -> BoundedLRU[L1Entry]:
        """The in-process L1 every layer shares."""
        return self.coherence.l1

    @property
    def fills(self) -> FillRegistry:
        return self.coherence.fills

    @property
    def flight(self) -> SingleFlight[Any]:
        return self.coherence.flight

    async def start(self) -> None:
        """Start the invalidation subscriber; wait (at most 2 s) until the generations are known.

        When Redis does not answer in time, one WARNING says so: until it does,
        calls run their loaders and nothing is cached.
        """
        self._check_open()
        await self.coherence.start(wait=2.0)
        self._warn_if_unknown(2.0)
        if self.loads.leases is not None and self.coherence.known:
            # Named before the first miss parks a lease (a Cluster client knows its nodes
            # once the generations were read).
            self.loads.leases.presence.start()
        if self.client is not None and self.server is None and self.coherence.known:
            self.server = await read_server_info(self.client)
            if self.server is not None:
                log.info("cache backend: %s", self.server.describe())
            if self.loads.leases is not None:
                # Fills and releases go by one command where the server has one.
                self.loads.leases.use_server(self.server)

    async def _start_lazily(self) -> None:
        # Started lazily by a request: wait for the first connection attempt to end
        # (at once when Redis refuses, at most LAZY_START_WAIT when it is slow), so
        # a dead Redis never delays a tool call for long and a live one is used.
        self._check_open()
        if not self.coherence.started and self.client is not None:
            log.warning(
                "ToolCache used without 'async with' or 'await cache.start()': started "
                "lazily; call 'await cache.aclose()' when done to release connections"
            )
        await self.coherence.start(wait=LAZY_START_WAIT)
        self._warn_if_unknown(LAZY_START_WAIT)

    def _check_open(self) -> None:
        if self.closing:
            raise CacheClosed("this ToolCache was closed with aclose(); create a new one")

    def _warn_if_unknown(self, waited: float) -> None:
        if not self.coherence.known and not self._warned_unreachable:
            self._warned_unreachable = True
            log.warning(
                "cache backend %s did not answer within %.2f s: tool calls run uncached "
                "until it does",
                mask_url(self.url or ""),
                waited,
            )

    async def __aenter__(self) -> ToolCache:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _abandon(self) -> None:
        """Close at once (no awaiting): the event loop ends while this cache is open."""
        if not self.closing:
            self.closing = True
            self._close_at_once()

    def _close_at_once(self) -> None:
        self.coherence.close()
        if self.loads.leases is not None:
            self.loads.leases.close_now()
        self.coherence.bus.stop()
        if self.client is not None and self._owns_client:
            connect.close_now(self.client)

    async def aclose(self) -> None:
        """Finish background refreshes (bounded), stop the subscriber, release the pool.

        Never hangs: whatever has not finished after ``CLOSE_WITHIN`` seconds is
        abandoned and the connections are closed at once.
        """
        if self.closing:
            return
        self.closing = True
        self.coherence.close()
        try:
            async with asyncio.timeout(CLOSE_WITHIN):
                await self.loads.aclose()
                if self._fleet is not None:
                    await self._fleet.aclose()  # the last deltas, and the heartbeat removed
                if self.outbox is not None:
                    await self.outbox.aclose()
                await self.coherence.aclose()
                await self.tier.aclose()
                if self.client is not None and self._owns_client:
                    await self.client.aclose()
        except TimeoutError:
            log.warning("closing took over %.0f s: connections closed at once", CLOSE_WITHIN)
            self._close_at_once()
        finally:
            if self.cassette is not None:
                self.cassette.close()

    # -- layers ---------------------------------------------------------------------
    def add_layer(self, name: str, config: LayerConfig) -> Layer:
        """Add (or replace the policy of) the layer ``name``."""
        if not name.isidentifier():
            raise ConfigurationError(f"layer names must be identifiers, got {name!r}")
        layer = self._layers.get(name)
        if layer is None:
            layer = self._layers[name] = Layer(
                name,
                config,
                namespace=self.namespace,
                coherence=self.coherence,
                tier=self.tier,
                loads=self.loads,
                codec=self.codec,
                ready=self._start_lazily,
                rng=self.rng,
                strict=self.strict,
                cassette=self.cassette,
            )
        else:
            layer.config = config
        return layer

    def layer(self, name: str) -> Layer:
        """Return the layer called ``name``; raise ConfigurationError if there is none."""
        try:
            return self._layers[name]
        except KeyError:
            known = ", ".join(sorted(self._layers))
            raise ConfigurationError(f"unknown layer {name!r} (layers: {known})") from None

    @property
    def layers(self) -> dict[str, Layer]:
        return dict(self._layers)

    @property
    def discovery(self) -> Layer:
        return self._layers["discovery"]

    @property
    def tools(self) -> Layer:
        return self._layers["tools"]

    @property
    def search(self) -> Layer:
        return self._layers["search"]

    @property
    def results(self) -> Layer:
        return self._layers["results"]

    @property
    def embeddings(self) -> Layer:
        return self._layers["embeddings"]

    # -- invalidation -------------------------------------------------------------------
    async def invalidate(
        self,
        layer: str | None = None,
        tags: Iterable[str] | None = None,
        *,
        settle: bool | None = None,
    ) -> None:
        """Drop a whole layer, every entry carrying one of ``tags``, or (no arguments) everything.

        O(1) per layer or tag: a generation is bumped, so old entries become
        unreachable in every worker and expire by TTL. ``settle=True``: return
        only once no worker serves what was dropped (default: ``settle_writes``).
        """
        await self._start_lazily()
        fields = [f"tag:{tag}" for tag in tags or ()]
        if layer is not None:
            fields.append(f"layer:{self.layer(layer).name}")
        if layer is None and tags is None:
            fields = ["ns"]
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
                self.tier.failed(self._layers.get(layer or ""), error)
        if landed and self.coherence.settles(settle):
            await bus.settle()

    async def invalidate_server(self, server_id: str, *, settle: bool | None = None) -> None:
        """Drop everything cached about one tool server: discovery, tools, search, results."""
        await self.invalidate(tags=[server_tag(server_id)], settle=settle)

    async def on_tools_list_changed(self, server_id: str) -> None:
        """Handle MCP ``notifications/tools/list_changed`` from ``server_id``."""
        await self.invalidate_server(server_id)

    # -- domain helpers ---------------------------------------------------------------------
    async def list_tools(
        self,
        server_id: str,
        loader: Callable[[], Awaitable[R]],
        *,
        partition: str | None = None,
        ttl: float | None = None,
    ) -> R:
        """Return the tool list of ``server_id`` from the discovery layer, loading it once."""
        return await self.discovery.get_or_load(
            ("list_tools", server_id),
            loader,
            ttl,
            tags=[server_tag(server_id)],
            partition=partition,
            label=server_id,
        )

    async def search_tools(
        self,
        query: str,
        loader: Callable[[], Awaitable[R]],
        *,
        catalog_version: str | None = None,
        top_k: int | None = None,
        servers: Iterable[str] = (),
        partition: str | None = None,
        ttl: float | None = None,
    ) -> R:
        """Return ranked tools for ``query``; the catalog version and top_k are part of the key.

        ``servers`` names the catalogs searched, so invalidating one drops the ranking.
        """
        server_list = sorted(set(servers))
        return await self.search.get_or_load(
            ("search_tools", query, catalog_version, top_k, server_list),
            loader,
            ttl,
            tags=[server_tag(server) for server in server_list],
            partition=partition,
            label="search",
        )

    def tool_policy(self, server_id: str, tool_name: str) -> ToolPolicy:
        """Return the ToolPolicy in force for ``tool_name`` on ``server_id`` (a default if none)."""
        return self.policies.resolve(server_id, tool_name)

    async def call_tool(
        self,
        server_id: str,
        tool_name: str,
        arguments: Any,
        loader: Callable[[], Awaitable[R]],
        *,
        partition: str | None = None,
        ttl: float | None = None,
        should_cache: Callable[[Any], bool] | None = None,
        writes: bool = False,
    ) -> R:
        """Return the result of a tool call from the results layer, running it once per key.

        The tool's policy (``tool_policy``) sets the key, TTL and what is
        stored. A write (``writes=True``, or a policy with ``invalidates``)
        always runs; once it ends (returned, raised or cancelled), the results
        it invalidates in its ``partition`` (every partition under
        ``invalidates_partitions="all"``) are dropped in every worker.
        """
        policy = self.tool_policy(server_id, tool_name)
        if writes or policy.invalidates:
            return await calls.run_write(self, server_id, policy, loader, partition=partition)
        if policy.cache is False:
            return await calls.run_uncached(loader)
        return await calls.read_through(
            self.results,
            self.policies,
            policy,
            self.codec,
            calls.policy_key("call_tool", server_id, tool_name, arguments, policy),
            server_id,
            tool_name,
            loader,
            partition=partition,
            ttl=ttl,
            should_cache=should_cache,
        )

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        loader: Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]],
        dimensions: int | None = None,
        partition: str | None = None,
    ) -> list[list[float]]:
        """Return one vector per text, in order; ``loader`` gets only the missing texts, once."""
        return await embed_texts(
            self.embeddings, texts, model, loader, dimensions=dimensions, partition=partition
        )

    @overload
    def cached(
        self,
        layer: str = "results",
        ttl: float | None = None,
        *,
        key_args: Sequence[str] | None = None,
        partition: PartitionOf | None = None,
        tags: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        run_sync: Literal[False] = False,
    ) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]: ...

    @overload
    def cached(
        self,
        layer: str = "results",
        ttl: float | None = None,
        *,
        key_args: Sequence[str] | None = None,
        partition: PartitionOf | None = None,
        tags: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        run_sync: Literal[True],
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...

    def cached(
        self,
        layer: str = "results",
        ttl: float | None = None,
        *,
        key_args: Sequence[str] | None = None,
        partition: PartitionOf | None = None,
        tags: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        run_sync: bool = False,
    ) -> Callable[[Callable[P, Any]], CachedFunction[P, Any]]:
        """Decorate a function so calls with equal arguments are served from ``layer``.

        See ``CachedFunction``: ``key_args`` picks the arguments of the key,
        ``partition(arguments)`` the partition; the result gains
        ``invalidate(...)`` and ``key(...)``. A synchronous function is refused
        (TypeError) unless ``run_sync=True`` runs it in a worker thread. A
        method is refused (ConfigurationError) unless ``key_args``,
        ``partition`` or ``ignore=("self",)`` says how its instance enters the key.
        """
        return cached_function(
            self.layer(layer),
            ttl,
            key_args=key_args,
            partition=partition,
            tags=tags,
            ignore=ignore,
            run_sync=run_sync,
        )

    # -- introspection ----------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Return a snapshot of every layer's counters and the cache-wide state."""
        l1_bytes: dict[str, int] = {}
        for entry in self.l1.values():
            l1_bytes[entry.layer] = l1_bytes.get(entry.layer, 0) + entry.size
        return CacheStats(
            layers={
                name: layer.counters.snapshot(
                    name, layer.config.cost_per_load, l1_bytes.get(name, 0)
                )
                for name, layer in self._layers.items()
            },
            breaker_state=self.breaker.state.value,
            l1_bytes=self.l1.bytes,
            l1_entries=len(self.l1),
            subscriber_connected=self.coherence.bus.connected,
        )

    def _start_fleet_reporter(self) -> None:
        if self.client is not None and self.fleet_interval and self._fleet is None:
            self._fleet = fleet.FleetReporter(self, self.fleet_interval)
            self._fleet.start()

    async def fleet_stats(self) -> fleet.FleetStats:
        """Return every worker's counters in this namespace, summed, and the workers alive."""
        return await fleet.fleet_stats(self)

    async def health(self) -> Health:
        """Return backend reachability and latency, breaker, pool, subscriber and fallback state."""
        return await check_health(self)

    def register_model(self, model: type[Any], name: str | None = None) -> None:
        """Allow instances of the pydantic ``model`` as cached values."""
        self.codec.registry.register(model, name)

    @property
    def redis(self) -> Redis | None:
        """The Redis client every layer shares (None for the embedded default)."""
        return self.client if isinstance(self.client, Redis) else None


def server_tag(server_id: str) -> str:
    """Return the tag every entry about ``server_id`` carries."""
    return f"server:{server_id}"
