"""Real Redis Cluster, Sentinel and TLS deployments for the test suite, on free loopback ports.

Every process is a `RedisServer` in its own temporary directory, so tests can kill
primaries and watch the real failover machinery without touching any other Redis on
the machine. Each deployment is a context manager: `with RedisClusterServers() as c:`
starts it and always tears every process down.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from tests.servers import RedisServer, require_redis_server

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
POLL_INTERVAL = 0.05

# Redis 7 waits 5 s by default before a diskless full sync, hoping more replicas
# join; that would dominate startup and failover times here.
FAST_SYNC_ARGS = ("--repl-diskless-sync-delay", "0")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it returns true; raise TimeoutError naming `what` otherwise.

    Connection errors count as "not yet": the processes polled here are starting,
    stopping or failing over. The last such error is chained for diagnosis.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            last_error = exc
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}") from last_error


def command(server: RedisServer, *args: str | int) -> Any:
    """Run one command on `server` and return the reply as the server sent it.

    The command name goes as separate tokens ("CLUSTER", "NODES") because redis-py
    keys its response callbacks on the joined name: the parsers here read the
    documented reply format rather than redis-py's version-dependent dicts.
    """
    with server.client() as client:
        return client.execute_command(*args)


def info_section(server: RedisServer, section: str) -> dict[str, Any]:
    """Return one INFO section of `server` as redis-py parses it (numbers become ints)."""
    with server.client() as client:
        return dict(client.info(section))


def free_ports(count: int) -> list[int]:
    """Return `count` distinct loopback TCP ports that nothing listens on right now.

    Unlike repeated `free_port()` calls, the ports cannot repeat: every socket stays
    bound until all are picked, so the kernel cannot hand one out twice.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_alive(server: RedisServer) -> bool:
    """Return whether the process of `server` is running (not killed or stopped)."""
    return server.process is not None and server.process.poll() is None


def stop_all(servers: Sequence[RedisServer]) -> None:
    """Stop every server, even when some fail to stop, then re-raise the first error."""
    errors: list[BaseException] = []
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:  # the others must still stop
            errors.append(exc)
    if errors:
        raise errors[0]


def replica_synced(replica: RedisServer) -> bool:
    """Return whether `replica` has a live link to its primary and finished its full sync."""
    fields = info_section(replica, "replication")
    return (
        fields.get("role") == "slave"
        and fields.get("master_link_status") == "up"
        and fields.get("master_sync_in_progress") == 0
    )


class _Deployment:
    """_Deployment is a group of servers that starts as a whole and always stops as a whole."""

    def all_servers(self) -> list[RedisServer]:
        raise NotImplementedError

    def start(self) -> Self:
        """Start every process and wait until the deployment is healthy, or stop them all."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process and delete every temporary directory; safe to call twice."""
        stop_all(self.all_servers())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class ClusterNodeView:
    """ClusterNodeView is one line of CLUSTER NODES as seen by some node, minus timings."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        node_id, address, flags, master, _ping, _pong, _epoch, _link, *slots = line.split()
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        return cls(
            node_id=node_id,
            port=port,
            # "myself" differs between observers; everything else must agree.
            flags=frozenset(flags.split(",")) - {"myself"},
            master_id=None if master == "-" else master,
            slots=tuple(slots),
        )

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def first_slot(self) -> int:
        return int(self.slots[0].split("-")[0]) if self.slots else CLUSTER_SLOTS


def cluster_view(server: RedisServer) -> frozenset[ClusterNodeView]:
    """Return the cluster topology as `server` currently sees it."""
    raw: bytes = command(server, "CLUSTER", "NODES")
    return frozenset(ClusterNodeView.parse(line) for line in raw.decode().splitlines() if line)


def cluster_state_ok(server: RedisServer) -> bool:
    """Return whether `server` reports cluster_state:ok with every slot served."""
    raw: bytes = command(server, "CLUSTER", "INFO")
    fields = dict(line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_slots_ok") == "16384"


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """Split the 16384 hash slots into `shards` contiguous, nearly equal ranges."""
    bounds = [i * CLUSTER_SLOTS // shards for i in range(shards + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(shards)]


class RedisClusterServers(_Deployment):
    """RedisClusterServers is a running Redis Cluster whose slots are all served once started.

    Node i < `primaries` starts as the primary of slot range i; the replicas follow,
    `replicas_per_primary` per primary in the same order. The node timeout is small
    and replica validity is unlimited, so killing a primary that has a replica always
    ends in an automatic failover within a few seconds, provided a majority of the
    primaries survive to vote (so at least 3 primaries).
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 0,
        node_timeout_ms: int = 1000,
    ) -> None:
        if primaries < 1 or replicas_per_primary < 0:
            raise ValueError("a cluster needs at least one primary and no negative replicas")
        self.node_timeout_ms = node_timeout_ms
        self.shard_count = primaries
        count = primaries * (1 + replicas_per_primary)
        ports = free_ports(2 * count)
        # An explicit bus port: the default port+10000 may be taken or exceed 65535.
        self.bus_ports = dict(zip(ports[:count], ports[count:], strict=True))
        self.nodes = [self._new_node(port) for port in ports[:count]]

    def _new_node(self, port: int) -> RedisServer:
        return RedisServer(
            port=port,
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--cluster-port",
                str(self.bus_ports[port]),
                # 0 = a replica may be promoted however long its link was down.
                "--cluster-replica-validity-factor",
                "0",
                *FAST_SYNC_ARGS,
            ],
        )

    def all_servers(self) -> list[RedisServer]:
        return list(self.nodes)

    # ---------------------------------------------------------------- startup

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        initial_primaries = self.nodes[: self.shard_count]
        for epoch, (node, (first, last)) in enumerate(
            zip(initial_primaries, slot_ranges(self.shard_count), strict=True), start=1
        ):
            # Distinct epochs up front skip the epoch-collision rounds after MEET.
            command(node, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
            command(node, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            command(self.nodes[0], "CLUSTER", "MEET", HOST, node.port, self.bus_ports[node.port])
        wait_until(self._all_nodes_known, 10, "every cluster node to know every other")
        self._attach_replicas()
        self.wait_healthy(timeout=15)

    def _all_nodes_known(self) -> bool:
        node_ids = {self.node_id(node) for node in self.nodes}
        for node in self.nodes:
            view = cluster_view(node)
            if {entry.node_id for entry in view} != node_ids or any(e.failed for e in view):
                return False
        return True

    def _attach_replicas(self) -> None:
        for index, replica in enumerate(self.nodes[self.shard_count :]):
            primary = self.nodes[index % self.shard_count]
            command(replica, "CLUSTER", "REPLICATE", self.node_id(primary))

    def node_id(self, node: RedisServer) -> str:
        """Return the cluster node id of `node` (stable for the life of its nodes.conf)."""
        raw: bytes = command(node, "CLUSTER", "MYID")
        return raw.decode()

    # ---------------------------------------------------------------- health

    def live_nodes(self) -> list[RedisServer]:
        """Return the nodes whose processes are running."""
        return [node for node in self.nodes if is_alive(node)]

    def healthy(self) -> bool:
        """Return whether every live node serves all slots and sees the same topology.

        The topology must also give every slot to a live process and every replica
        of a live primary must be in sync: right after a kill the survivors still
        report cluster_state:ok until the node timeout marks the primary failed.
        """
        live = self.live_nodes()
        if not all(cluster_state_ok(node) for node in live):
            return False
        views = {cluster_view(node) for node in live}
        if len(views) != 1:
            return False
        (view,) = views
        live_ports = {node.port for node in live}
        owners = [entry for entry in view if entry.slots]
        if any(entry.port not in live_ports or entry.failed for entry in owners):
            return False
        return all(replica_synced(self._by_port(entry.port)) for entry in self._live_replicas(view))

    def _live_replicas(self, view: frozenset[ClusterNodeView]) -> list[ClusterNodeView]:
        ids_of_live_primaries = {e.node_id for e in view if e.is_primary and not e.failed}
        return [
            entry
            for entry in view
            if not (entry.is_primary or entry.failed) and entry.master_id in ids_of_live_primaries
        ]

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Wait until `healthy()`; raise TimeoutError otherwise."""
        wait_until(self.healthy, timeout, "cluster_state:ok with agreed slots on every node")

    # ---------------------------------------------------------------- topology

    def _by_port(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def _current_view(self) -> frozenset[ClusterNodeView]:
        for node in self.live_nodes():
            try:
                return cluster_view(node)
            except redis.ConnectionError:
                continue  # killed between the liveness check and the query
        raise RuntimeError("no cluster node is running")

    @property
    def primaries(self) -> list[RedisServer]:
        """The nodes that own slots now, ordered by their first slot.

        So `primaries[i]` is the server of slot range i, before and after failovers
        (a killed primary stays listed until the cluster promotes its replica).
        """
        owners = sorted((e for e in self._current_view() if e.slots), key=lambda e: e.first_slot)
        return [self._by_port(entry.port) for entry in owners]

    @property
    def replicas(self) -> list[RedisServer]:
        """The running replicas now, ordered by the first slot of their primary."""
        view = self._current_view()
        first_slot = {e.node_id: e.first_slot for e in view}
        replicas = sorted(
            self._live_replicas(view), key=lambda e: (first_slot[e.master_id or ""], e.port)
        )
        return [self._by_port(entry.port) for entry in replicas]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node; clients skip the dead ones."""
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """`redis+cluster://host:port,host:port,...` listing every node."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.startup_nodes)

    # ---------------------------------------------------------------- outages

    def kill_primary(self, index: int = 0) -> RedisServer:
        """SIGKILL the current primary of slot range `index` and return it."""
        node = self.primaries[index]
        node.kill()
        return node

    def wait_failover(self, timeout: float = 15.0) -> list[RedisServer]:
        """Wait until replicas took over every killed primary's slots; return the primaries.

        Raises TimeoutError if a killed primary had no replica to promote.
        """
        wait_until(self.healthy, timeout, "replicas to be promoted for the killed primaries")
        return self.primaries


# --------------------------------------------------------------------------- sentinel


def _fields(reply: dict[bytes, bytes] | Sequence[bytes]) -> dict[str, str]:
    """Turn a SENTINEL field reply into a str-to-str mapping.

    redis-py 8 speaks RESP3 by default, where these replies are maps; under RESP2
    they are flat field/value arrays.
    """
    if isinstance(reply, dict):
        return {key.decode(): value.decode() for key, value in reply.items()}
    decoded = [item.decode() for item in reply]
    return dict(zip(decoded[::2], decoded[1::2], strict=True))


class SentinelServer(RedisServer):
    """SentinelServer is one redis-server in sentinel mode, with a config file of its own.

    Sentinel rewrites the file as it learns the topology, so a restart keeps what it
    knew, like a real sentinel.
    """

    def __init__(self, config_lines: Sequence[str], port: int | None = None) -> None:
        super().__init__(port=port)
        self.config_file = self.dir / "sentinel.conf"
        self.config_file.write_text("\n".join(config_lines) + "\n")

    def start(self) -> SentinelServer:
        # Sentinel mode needs the config file as the first argument, so the plain
        # server command line of RedisServer.start cannot be reused.
        args = [
            require_redis_server(),
            str(self.config_file),
            "--sentinel",
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self


class RedisSentinelServers(_Deployment):
    """RedisSentinelServers is a primary, one replica and a sentinel quorum that monitor them.

    Once started every sentinel knows the replica and every other sentinel, so killing
    the primary always ends in the replica's promotion within a few seconds.
    """

    def __init__(
        self,
        sentinels: int = 3,
        service_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        if sentinels < 1:
            raise ValueError("at least one sentinel is needed")
        self.service_name = service_name
        self.quorum = sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        primary_port, replica_port, *sentinel_ports = free_ports(2 + sentinels)
        self.servers = [
            RedisServer(port=primary_port, extra_args=FAST_SYNC_ARGS),
            RedisServer(
                port=replica_port,
                extra_args=[*FAST_SYNC_ARGS, "--replicaof", HOST, str(primary_port)],
            ),
        ]
        self._primary_port = primary_port
        self.sentinels = self._new_sentinels(sentinel_ports)

    def _new_sentinels(self, ports: list[int]) -> list[SentinelServer]:
        # Seeding each sentinel with its peers' ids saves the ~2 s hello round
        # in which sentinels otherwise discover one another.
        peers = [(port, secrets.token_hex(20)) for port in ports]
        return [
            SentinelServer(self._sentinel_config(peers, me), port)
            for me, (port, _id) in enumerate(peers)
        ]

    def _sentinel_config(self, peers: list[tuple[int, str]], me: int) -> list[str]:
        """Return the config of sentinel `me` of `peers` ((port, id) of every sentinel)."""
        name = self.service_name
        lines = [
            f"sentinel myid {peers[me][1]}",
            f"sentinel monitor {name} {HOST} {self.servers[0].port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
            f"sentinel known-replica {name} {HOST} {self.servers[1].port}",
        ]
        lines += [
            f"sentinel known-sentinel {name} {HOST} {port} {peer_id}"
            for index, (port, peer_id) in enumerate(peers)
            if index != me
        ]
        return lines

    def all_servers(self) -> list[RedisServer]:
        return [*self.sentinels, *self.servers]

    # ---------------------------------------------------------------- startup

    def _start(self) -> None:
        for server in [*self.servers, *self.sentinels]:
            server.start()
        wait_until(lambda: replica_synced(self.replica), 10, "the replica's initial sync")
        wait_until(self._sentinels_ready, 15, "every sentinel to see the replica and its peers")

    def _sentinels_ready(self) -> bool:
        return all(self._sentinel_ready(sentinel) for sentinel in self.sentinels)

    def _sentinel_ready(self, sentinel: SentinelServer) -> bool:
        name = self.service_name
        master = _fields(command(sentinel, "SENTINEL", "MASTER", name))
        replicas = [_fields(r) for r in command(sentinel, "SENTINEL", "REPLICAS", name)]
        peers = [_fields(s) for s in command(sentinel, "SENTINEL", "SENTINELS", name)]
        return (
            master["flags"] == "master"
            and int(master["num-other-sentinels"]) == len(self.sentinels) - 1
            and [r["flags"] for r in replicas] == ["slave"]
            and replicas[0]["master-link-status"] == "ok"
            and all(p["flags"] == "sentinel" for p in peers)
        )

    # ---------------------------------------------------------------- topology

    @property
    def primary(self) -> RedisServer:
        """The data server that the sentinels last agreed is the primary."""
        return next(s for s in self.servers if s.port == self._primary_port)

    @property
    def replica(self) -> RedisServer:
        """The other data server (after a failover: the killed former primary)."""
        return next(s for s in self.servers if s.port != self._primary_port)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every sentinel, as `redis.asyncio.sentinel.Sentinel` takes them."""
        return [(sentinel.host, sentinel.port) for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """`redis+sentinel://host:port,.../<service>/0` listing every sentinel."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    # ---------------------------------------------------------------- outages

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary and return it."""
        primary = self.primary
        primary.kill()
        return primary

    def reported_primary_port(self, sentinel: SentinelServer) -> int:
        """Return the primary's port as `sentinel` reports it."""
        _host, port = command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        return int(port)

    def wait_failover(self, timeout: float = 20.0) -> RedisServer:
        """Wait until every sentinel names the replica as primary and it acts as one; return it."""
        candidate = self.replica

        def promoted() -> bool:
            reported = {self.reported_primary_port(sentinel) for sentinel in self.sentinels}
            role = command(candidate, "ROLE")[0]
            return reported == {candidate.port} and role == b"master"

        wait_until(promoted, timeout, f"sentinels to promote the replica on port {candidate.port}")
        self._primary_port = candidate.port
        return candidate


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TLSFiles:
    """TLSFiles names a test CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """Write a fresh CA and a server key pair into `directory` and return their paths."""
    files = TLSFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _write_tls_files_with_openssl(files)
    else:
        _write_tls_files_with_cryptography(files)
    return files


def _write_tls_files_with_cryptography(files: TLSFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("aiotoolcache test CA"))
        .issuer_name(name("aiotoolcache test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_tls_files_with_openssl(files: TLSFiles) -> None:
    directory = files.ca_file.parent
    ca_key = directory / "ca.key"
    csr = directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:localhost,IP:{HOST}\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec_key,
        "-keyout",
        ca_key,
        "-out",
        files.ca_file,
        "-days",
        "1",
        "-subj",
        "/CN=aiotoolcache test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    _openssl(
        "req", "-new", *ec_key, "-keyout", files.key_file, "-out", csr, "-subj", "/CN=localhost"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        files.ca_file,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        extensions,
        "-out",
        files.cert_file,
    )


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


class TLSRedisServer(RedisServer):
    """TLSRedisServer is a redis-server that accepts only TLS, with a certificate from a test CA.

    Clients must verify the server against `ca_file`; the server asks clients for no
    certificate. `port` is the TLS port (the plain TCP port is off).
    """

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        super().__init__(port=port, extra_args=extra_args)
        self.tls = make_tls_files(self.dir)
        self.plain: RedisServer | None = None  # behind a TLS terminator, when one is needed
        # Later options win, so "--port 0" overrides the plain port RedisServer passes.
        self.extra_args += [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls.cert_file),
            "--tls-key-file",
            str(self.tls.key_file),
            "--tls-ca-cert-file",
            str(self.tls.ca_file),
            "--tls-auth-clients",
            "no",
        ]

    def start(self) -> TLSRedisServer:
        try:
            super().start()
        except RuntimeError as exc:
            if "TLS support" not in str(exc):
                raise
            self._start_behind_terminator()
        return self

    def _start_behind_terminator(self) -> None:
        """A server built without TLS (the bundled valkey-server): the same server on a
        private plain port, with a TLS terminator on ``port`` in front of it."""
        self.plain = RedisServer().start()
        root = Path(__file__).resolve().parents[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.tls_terminator", str(self.port), str(self.plain.port)]
            + [str(self.tls.cert_file), str(self.tls.key_file)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def stop(self) -> None:
        super().stop()
        if self.plain is not None:
            self.plain.stop()

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def url(self) -> str:
        return f"rediss://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous TLS client that trusts the test CA, for assertions."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=5,
            ssl=True,
            ssl_ca_certs=str(self.ca_file),
        )

    def __enter__(self) -> TLSRedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
