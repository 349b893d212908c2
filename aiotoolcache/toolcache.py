"""ToolCache: the layers of an agent's cache over one L1 and one shared L2.

Every layer shares the in-process L1, the L2 store (one Redis connection
pool), the circuit breaker and the one invalidation subscriber.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from redis.asyncio import Redis

from aiotoolcache import calls, fleet
from aiotoolcache.backend import Backend
from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.bus import Bus
from aiotoolcache.cache import Layer
from aiotoolcache.cassette import Cassette, options_from_url
from aiotoolcache.codec import Codec, ModelRegistry, parse_secrets
from aiotoolcache.coherence import Coherence, L1Entry
from aiotoolcache.decorators import CachedFunction, PartitionOf, cached_function
from aiotoolcache.embeddings import embed_texts
from aiotoolcache.errors import ConfigurationError
from aiotoolcache.fills import FillRegistry
from aiotoolcache.flight import SingleFlight
from aiotoolcache.health import Health, check_health
from aiotoolcache.hearing import DEFAULT_MAX_STALENESS
from aiotoolcache.layers import DEFAULT_LAYERS, LayerConfig
from aiotoolcache.loading import LoadCoordinator
from aiotoolcache.outbox import InvalidationOutbox
from aiotoolcache.policy import ToolPolicies, ToolPolicy
from aiotoolcache.server_info import ServerInfo
from aiotoolcache.settings import Settings
from aiotoolcache.stats import CacheStats
from aiotoolcache.stores.base import Store
from aiotoolcache.stores.memory import BoundedLRU
from aiotoolcache.stores.redis import AnyRedis
from aiotoolcache.tier import SharedTier

__all__ = ["ToolCache"]

# aclose() waits this long for background work and the pool, then closes at once.
CLOSE_WITHIN = 10.0

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
        # Created first: it owns L1, fills, flights and generations, and decides what
        # may be stored or served; everything below receives it.
        self.coherence = Coherence(l1_max_entries=l1_max_entries, l1_max_bytes=l1_max_bytes)
        # Tool writes settle before they return (None); True: every write; False: none.
        self.coherence.settle_writes = settle_writes
        layer_configs = {**DEFAULT_LAYERS, **(layers or {})}
        # The store, client, breaker, bus, outbox, leases, tier and loads every layer shares.
        self._backend = backend = Backend(
            self.url,
            client,
            namespace=self.namespace,
            coherence=self.coherence,
            layer_configs=layer_configs,
            mac_secrets=secrets,
            fallback=fallback,
            mirror_to_fallback=mirror_to_fallback,
            strict=strict,
            failure_threshold=failure_threshold,
            cooldown=cooldown,
            budget=budget,
            max_connections=max_connections,
            redis_options=redis_options,
            tls_ca_file=tls_ca_file,
            tls_verify=tls_verify,
            health_interval=health_interval,
            max_staleness=max_staleness,
            lease_ms=lease_ms,
            lease_wait=lease_wait,
        )
        self.breaker: CircuitBreaker = backend.breaker
        self.client: AnyRedis | None = backend.client
        self.bus_channel = backend.channel
        self.outbox: InvalidationOutbox | None = backend.outbox
        self.store: Store = backend.store
        self.fallback: Store | None = backend.fallback
        self.tier: SharedTier = backend.tier
        self.loads: LoadCoordinator = backend.loads
        self._layers: dict[str, Layer] = {}
        for name, config in layer_configs.items():
            self.add_layer(name, config)
        self.fleet_interval = fleet_interval
        self._fleet: fleet.FleetReporter | None = None
        self.coherence.on_start(self._start_fleet_reporter)

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
        await self._backend.start()

    @property
    def closing(self) -> bool:
        """True from the moment the cache begins to close: it serves no more calls."""
        return self._backend.closing

    @property
    def server(self) -> ServerInfo | None:
        """The server's flavour, version and fast paths, read once by ``start()``."""
        return self._backend.server

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

    async def aclose(self) -> None:
        """Finish background refreshes (bounded), stop the subscriber, release the pool
        and the encoding buffers.

        Never hangs: whatever has not finished after ``CLOSE_WITHIN`` seconds is
        abandoned and the connections are closed at once.
        """
        if self.closing:
            return
        try:
            await self._backend.aclose(self._fleet, within=CLOSE_WITHIN)
        finally:
            if self.cassette is not None:
                self.cassette.close()
            # The packers' buffers are native memory: freed now, not when the
            # cyclic collector reaches this cache.
            self.codec.release_buffers()

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
                ready=self._backend.start_lazily,
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
        await self._backend.start_lazily()
        fields = [f"tag:{tag}" for tag in tags or ()]
        if layer is not None:
            fields.append(f"layer:{self.layer(layer).name}")
        if layer is None and tags is None:
            fields = ["ns"]
        await self._backend.bump(fields, self._layers.get(layer or ""), settle)

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
        return await calls.call_tool(
            self,
            server_id,
            tool_name,
            arguments,
            loader,
            partition=partition,
            ttl=ttl,
            should_cache=should_cache,
            writes=writes,
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
