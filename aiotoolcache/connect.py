"""Redis clients for a cache URL: standalone, Cluster or Sentinel, each with one bounded pool.

Every client fails fast (sub-second socket timeouts derived from the cache's
time budget) and waits for a free connection instead of failing when a burst
exceeds the pool: ``BlockingConnectionPool`` for standalone and Sentinel, an
in-flight limit for Cluster, whose per-node pools would raise
``MaxConnectionsError`` at once. Retries use the asyncio ``Retry`` (the sync one
silently disables retries on asyncio clients) and retry once, quickly.

URLs::

    redis://[user:password@]host:port/db        rediss://…   unix:///path.sock
    redis+cluster://[user:password@]host:port[,host:port…]          rediss+cluster://…
    redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]
                                                               rediss+sentinel://…

Cluster URLs list startup nodes (any live one is enough; the rest of the
topology is discovered). Sentinel URLs list sentinels; the credentials are the
data nodes'; ``?sentinel_username=…&sentinel_password=…`` authenticate to the
sentinels themselves. The ``rediss+`` forms use TLS for every connection,
including the sentinels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterError, MaxConnectionsError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.stores.redis import AnyRedis
from aiotoolcache.urls import mask_url

__all__ = [
    "BlockingSentinelConnectionPool",
    "BoundedRedisCluster",
    "SentinelRedis",
    "client_for",
    "parse_server_list",
]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# Options that only mean something on a TLS connection.
_TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_cert_reqs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "ssl_ciphers",
    "ssl_min_version",
    "ssl_include_verify_flags",
    "ssl_exclude_verify_flags",
)
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1)


def pool_options(budget: float, options: dict[str, Any]) -> dict[str, Any]:
    """Connection options: a sub-second connect timeout derived from the cache's time budget.

    No per-command ``socket_timeout``: every command the cache sends is bounded
    by the breaker's budget (or its own timeout), and redis-py would pay for a
    task and two timers per command to enforce a second, looser bound.
    """
    return {
        "socket_timeout": None,  # explicit: redis-py's own default is 5 s
        "socket_connect_timeout": max(0.5, budget * 2),
        "retry": _retry(),
        **options,
    }


# -- URLs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerList:
    """ServerList is a multi-host URL taken apart: TLS or not, hosts, credentials, path."""

    tls: bool
    hosts: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    path: list[str] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    else:
        host, port_text = item, ""
    if not host:
        raise ConfigurationError(f"empty host in {mask_url(url)!r}")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigurationError(f"invalid port {port_text!r} in {mask_url(url)!r}") from None
    if not 0 < port < 65536:
        raise ConfigurationError(f"invalid port {port} in {mask_url(url)!r}")
    return unquote(host), port


def parse_server_list(url: str, default_port: int = DEFAULT_PORT) -> ServerList:
    """Take apart ``scheme://[user:password@]host:port[,host:port…][/path…][?query]``."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    items = [item.strip() for item in hostlist.split(",") if item.strip()]
    if not items:
        raise ConfigurationError(f"no host in {mask_url(url)!r}")
    return ServerList(
        tls=parts.scheme.lower().startswith("rediss"),
        hosts=[_host_port(item, default_port, url) for item in items],
        username=username,
        password=password,
        path=[unquote(segment) for segment in parts.path.split("/") if segment],
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )


def _tls_options(tls: bool, options: dict[str, Any]) -> dict[str, Any]:
    """Return connection options with TLS switched on (and verified) or TLS options dropped."""
    if not tls:
        return {key: value for key, value in options.items() if key not in _TLS_OPTIONS}
    return {"ssl": True, "ssl_cert_reqs": "required", **options}


def _no_query(servers: ServerList, url: str, allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(servers.query) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"unsupported URL option(s) {', '.join(unknown)} in {mask_url(url)!r}: "
            "pass connection options through redis_options"
        )


# -- Cluster ------------------------------------------------------------------------------


class BoundedRedisCluster(RedisCluster):
    """BoundedRedisCluster waits for a free slot instead of exhausting a node's connections.

    redis-py's async cluster nodes raise ``MaxConnectionsError`` at once when
    their pool is full; here at most ``max_commands`` commands and
    ``max_pipelines`` pipelines are in flight, and each uses at most one
    connection per node, so a node's pool (sized above their sum) never runs out.
    The time a caller waits is bounded by the cache's time budget.
    """

    def __init__(self, *args: Any, max_commands: int, max_pipelines: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_slots = asyncio.Semaphore(max_commands)
        self.pipeline_slots = asyncio.Semaphore(max_pipelines)

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        with _cluster_errors():
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.command_slots:
            with _cluster_errors():
                return await super().execute_command(*args, **kwargs)

    async def mget_nonatomic(  # type: ignore[override]
        self, keys: Any, *args: Any
    ) -> list[Any | None]:
        with _cluster_errors():
            return await super().mget_nonatomic(keys, *args)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if transaction or shard_hint:
            return super().pipeline(transaction, shard_hint)
        return _BoundedClusterPipeline(self, transaction)  # type: ignore[abstract]


class _BoundedClusterPipeline(ClusterPipeline):
    """A non-transactional cluster pipeline that runs inside its client's pipeline slots."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)  # only BoundedRedisCluster builds these
        async with client.pipeline_slots:
            with _cluster_errors():
                return await super().execute(raise_on_error, allow_redirections)


@contextlib.contextmanager
def _cluster_errors() -> Iterator[None]:
    """Raise redis-py's cluster exceptions that are not RedisErrors (no reachable node,
    slot not covered) as ClusterError, so they count as backend failures like the rest."""
    try:
        yield
    except RedisClusterException as exc:
        raise ClusterError(f"{type(exc).__name__}: {exc}") from exc


def _cluster_client(
    url: str, budget: float, max_connections: int, options: dict[str, Any]
) -> BoundedRedisCluster:
    servers = parse_server_list(url)
    _no_query(servers, url)
    if servers.path not in ([], ["0"]):
        raise ConfigurationError(f"Redis Cluster has only database 0: {mask_url(url)!r}")
    max_pipelines = max(2, max_connections // 4)
    kwargs = pool_options(budget, _tls_options(servers.tls, options))
    return BoundedRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in servers.hosts],
        username=servers.username,
        password=servers.password,
        max_commands=max_connections,
        max_pipelines=max_pipelines,
        # One connection per command or pipeline in flight, plus this client's subscriber.
        max_connections=max_connections + max_pipelines + 2,
        **kwargs,
    )


# -- Sentinel -----------------------------------------------------------------------------


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """BlockingSentinelConnectionPool follows the primary the sentinels name, and waits when full.

    redis-py's SentinelConnectionPool raises at once when every connection is in
    use; this one waits (up to ``timeout``) like BlockingConnectionPool.
    """


class SentinelRedis(Redis):
    """SentinelRedis retries a command once on a fresh connection after a connection error.

    A sentinel-managed connection that fails mid-command reconnects to the
    address it had (the old primary) when redis-py retries it; checking a
    connection out of the pool again asks the sentinels for the current primary.
    """

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        execute = super().execute_command
        try:
            return await execute(*args, **options)  # type: ignore[no-untyped-call]
        except MaxConnectionsError:
            raise
        except RedisConnectionError as exc:
            # Not when the pool had no free connection in time (a timeout, not a failure).
            if self.single_connection_client or isinstance(exc.__cause__, TimeoutError):
                raise
            return await execute(*args, **options)  # type: ignore[no-untyped-call]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the client, its pool and the connections to the sentinels."""
        await super().aclose(close_connection_pool)
        closes_pool = close_connection_pool or (
            close_connection_pool is None and self.auto_close_connection_pool
        )
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if closes_pool and isinstance(manager, Sentinel):
            await manager.aclose()


def _sentinel_client(
    url: str, budget: float, max_connections: int, options: dict[str, Any]
) -> Redis:
    servers = parse_server_list(url, DEFAULT_SENTINEL_PORT)
    _no_query(servers, url, _SENTINEL_QUERY)
    if not servers.path or len(servers.path) > 2:
        raise ConfigurationError(
            f"a Sentinel URL names the service: redis+sentinel://host:port,…/service[/db], "
            f"got {mask_url(url)!r}"
        )
    service = servers.path[0]
    try:
        db = int(servers.path[1]) if len(servers.path) == 2 else 0
    except ValueError:
        raise ConfigurationError(f"invalid database number in {mask_url(url)!r}") from None
    connection = pool_options(budget, _tls_options(servers.tls, options))
    # The sentinels get the same timeouts and TLS settings, not the data nodes' credentials.
    sentinel_kwargs = {
        key: value
        for key, value in connection.items()
        if key.startswith(("socket_", "ssl")) or key == "retry"
    }
    if "sentinel_username" in servers.query:
        sentinel_kwargs["username"] = servers.query["sentinel_username"]
    if "sentinel_password" in servers.query:
        sentinel_kwargs["password"] = servers.query["sentinel_password"]
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        servers.hosts, sentinel_kwargs=sentinel_kwargs
    )
    client: Redis = sentinel.master_for(
        service,
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=max_connections,
        timeout=max(budget, 0.05),
        username=servers.username,
        password=servers.password,
        db=db,
        **connection,
    )
    # master_for hands the pool to the client: closing the client closes the pool
    # and (SentinelRedis.aclose) the sentinel clients.
    return client


# -- entry point --------------------------------------------------------------------------


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
    if kind == "cluster":
        return _cluster_client(url, budget, max_connections, options)
    if kind == "sentinel":
        return _sentinel_client(url, budget, max_connections, options)
    raise ConfigurationError(f"{kind} URLs are not supported by this build: {mask_url(url)!r}")


def close_now(client: AnyRedis) -> None:
    """Close every connection of ``client`` at once, without awaiting (the loop is ending).

    Used when a cache was never closed and its event loop shuts down: the
    sockets are released instead of leaking (and warning) at exit.
    """
    pools: list[Any] = []
    if isinstance(client, RedisCluster):
        pools = [getattr(node, "connection_pool", None) for node in client.get_nodes()]
        connections = [c for node in client.get_nodes() for c in getattr(node, "_connections", [])]
    else:
        pools = [client.connection_pool]
        connections = []
    for pool in pools:
        if pool is None:
            continue
        with contextlib.suppress(Exception):
            connections += list(pool._get_free_connections())
            connections += list(pool._get_in_use_connections())
    for connection in connections:
        with contextlib.suppress(Exception):
            connection._close()


def tls_options(
    url: str,
    redis_options: Mapping[str, Any] | None,
    tls_ca_file: str | None,
    tls_verify: bool,
) -> dict[str, Any]:
    """The client options for TLS; refuse TLS settings on a URL that does not use TLS."""
    options = dict(redis_options or {})
    uses_tls = url.split("://", 1)[0].lower().startswith("rediss")
    if (tls_ca_file is not None or not tls_verify) and not uses_tls:
        raise ConfigurationError(
            "tls_ca_file/tls_verify apply to TLS URLs only (rediss://, rediss+cluster://, "
            "rediss+sentinel://)"
        )
    if tls_ca_file is not None:
        options["ssl_ca_certs"] = tls_ca_file
    if not tls_verify:
        # An explicit opt-out: certificates are verified unless asked not to.
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    return options
