"""The chaos checker's distributed deployments: a Redis Cluster and a Sentinel group.

``ClusterRig`` is a local cluster of 3 primaries and 3 replicas, ``SentinelRig``
a primary, a replica and 3 sentinels (both from the test suite's
``cluster_servers``). The workers connect to them directly (no fault proxy);
the faults are the ones these deployments meet in production:

- ``primary_sigkill``: SIGKILL of a primary; its replica is promoted;
- ``cluster_failover``: ``CLUSTER FAILOVER`` on a replica (a manual, lossless
  switch), under load;
- ``slot_migration``: the slots of one primary that hold keys moved to another,
  key by key with ``MIGRATE``, under load (clients meet ``ASK`` then ``MOVED``);
- ``lagging_promotion``: the primary stops replicating (its replica's user is
  switched off, so the link drops and stays down) for 1 s of traffic, then it
  is SIGKILLed: the promoted replica lacks that second's writes and
  generation bumps, as an asynchronous failover loses them.

A phase's fault ends once the new primary serves (the cluster agrees on every
slot, or every sentinel names it), so ``heal s`` counts from the moment the
new primary is reachable. After the recovery window the killed server is
restarted and rejoins as a replica, outside the phase's window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.chaos_support import Fault
from tests.cluster_servers import (
    RedisClusterServers,
    RedisSentinelServers,
    command,
    info_section,
    is_alive,
    replica_synced,
    wait_until,
)
from tests.servers import RedisServer

__all__ = ["ClusterRig", "SentinelRig", "cluster_schedule", "sentinel_schedule"]

MIGRATED_SLOTS = 200  # slots holding keys
LAG_SECONDS = 1.0


@dataclass
class ClusterRig:
    """ClusterRig is a running 3 + 3 cluster and the servers a fault left dead."""

    cluster: RedisClusterServers
    killed: list[RedisServer] = field(default_factory=list)
    failover_at: float = 0.0  # when the new primary became reachable

    @property
    def url(self) -> str:
        return self.cluster.url

    def stop(self) -> None:
        self.cluster.stop()


@dataclass
class SentinelRig:
    """SentinelRig is a running primary, replica and 3 sentinels."""

    group: RedisSentinelServers
    killed: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.group.url

    def stop(self) -> None:
        self.group.stop()


def _in_thread(function: Callable[[], Any]) -> Awaitable[Any]:
    return asyncio.to_thread(function)


# -- cluster faults ---------------------------------------------------------------------
async def cluster_kill_primary(rig: ClusterRig) -> None:
    rig.killed.append(await _in_thread(lambda: rig.cluster.kill_primary(0)))


async def cluster_wait_failover(rig: ClusterRig) -> None:
    await _in_thread(lambda: rig.cluster.wait_failover(timeout=30))


async def cluster_rejoin(rig: ClusterRig) -> None:
    """Restart the killed servers (they rejoin as replicas); wait until all is in sync."""
    for server in rig.killed:
        await _in_thread(server.start)
    rig.killed.clear()
    await _in_thread(lambda: rig.cluster.wait_healthy(timeout=60))


async def cluster_manual_failover(rig: ClusterRig) -> None:
    def failover() -> None:
        primary = rig.cluster.primaries[1]
        replica = _replica_of(rig.cluster.replicas, primary)
        command(replica, "CLUSTER", "FAILOVER")
        wait_until(lambda: info_section(replica, "replication")["role"] == "master", 30, "FAILOVER")

    await _in_thread(failover)


async def cluster_migrate_slots(rig: ClusterRig) -> None:
    """Move the slots of primary 0 that hold keys to primary 1, one after another,
    key by key (a pause between slots keeps clients meeting ASK, then MOVED)."""

    def migrate() -> None:
        cluster = rig.cluster
        source, target = cluster.primaries[0], cluster.primaries[1]
        source_id, target_id = cluster.node_id(source), cluster.node_id(target)
        with source.client() as at_source, target.client() as at_target:
            slots = sorted(
                {int(at_source.cluster("KEYSLOT", key)) for key in at_source.scan_iter()}
            )
            others = [p.client() for p in cluster.primaries if p not in (source, target)]
            for slot in slots[:MIGRATED_SLOTS]:
                at_target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
                at_source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
                while keys := at_source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                    for key in keys:
                        at_source.migrate(target.host, target.port, key, 0, 5000)
                        time.sleep(0.005)
                for client in [at_target, at_source, *others]:  # replicas learn it from these
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            for client in others:
                client.close()
        wait_until(cluster.healthy, 30, "every node to agree on the moved slots")

    await _in_thread(migrate)


async def cluster_cut_replication(rig: ClusterRig) -> None:
    """Stop primary 2 from replicating; let 1 s of traffic go unreplicated; kill it."""
    primary = rig.cluster.primaries[2]
    replica = await _in_thread(lambda: _replica_of(rig.cluster.replicas, primary))
    await _in_thread(lambda: _cut_replication(primary, replica))
    await asyncio.sleep(LAG_SECONDS)
    primary.kill()
    rig.killed.append(primary)


def _cut_replication(primary: RedisServer, replica: RedisServer) -> None:
    """Leave ``replica`` unable to replicate from ``primary``, which goes on serving.

    The replica is made to replicate as a user of its own, and that user is then
    switched off on the primary: the link drops and every reconnection is refused.
    """
    command(primary, "ACL", "SETUSER", "replication", "on", ">chaos", "+@all", "~*", "&*")
    command(replica, "CONFIG", "SET", "masteruser", "replication")
    command(replica, "CONFIG", "SET", "masterauth", "chaos")
    command(replica, "CLIENT", "KILL", "TYPE", "master")
    wait_until(lambda: replica_synced(replica), 30, "the replica to resync as its own user")
    command(primary, "ACL", "SETUSER", "replication", "off")
    command(primary, "CLIENT", "KILL", "USER", "replication")


def _replica_of(replicas: list[RedisServer], primary: RedisServer) -> RedisServer:
    return next(
        r for r in replicas if info_section(r, "replication").get("master_port") == primary.port
    )


async def cluster_wait_lagging_failover(rig: ClusterRig) -> None:
    await _in_thread(lambda: rig.cluster.wait_failover(timeout=30))


def cluster_schedule(short: bool) -> tuple[float, float, float, list[Fault]]:
    faults = [
        Fault("primary_sigkill", cluster_kill_primary, 0, cluster_wait_failover, cluster_rejoin),
        Fault("cluster_failover", cluster_manual_failover, 0),
        Fault("slot_migration", cluster_migrate_slots, 0),
        Fault(
            "lagging_promotion",
            cluster_cut_replication,
            0,
            cluster_wait_lagging_failover,
            cluster_rejoin,
        ),
    ]
    if short:
        return 1.5, 0.5, 2.0, faults
    return 4.0, 1.0, 5.0, faults


# -- sentinel faults --------------------------------------------------------------------
async def sentinel_kill_primary(rig: SentinelRig) -> None:
    rig.killed.append(await _in_thread(rig.group.kill_primary))


async def sentinel_wait_failover(rig: SentinelRig) -> None:
    await _in_thread(lambda: rig.group.wait_failover(timeout=30))


async def sentinel_rejoin(rig: SentinelRig) -> None:
    """Restart the killed primary; the sentinels make it a replica of the new one."""
    for server in rig.killed:
        await _in_thread(server.start)
    rig.killed.clear()
    replica = rig.group.replica

    def rejoined() -> bool:
        return is_alive(replica) and replica_synced(replica)

    await _in_thread(lambda: wait_until(rejoined, 60, "the old primary to rejoin as a replica"))
    await _in_thread(lambda: wait_until(lambda: _sentinels_see(rig.group), 60, "the sentinels"))


def _sentinels_see(group: RedisSentinelServers) -> bool:
    """Every sentinel names the current primary and sees its replica up."""
    for sentinel in group.sentinels:
        if group.reported_primary_port(sentinel) != group.primary.port:
            return False
        replicas = command(sentinel, "SENTINEL", "REPLICAS", group.service_name)
        text = repr(replicas)
        if str(group.replica.port) not in text or "s_down" in text or "disconnected" in text:
            return False
    return True


async def sentinel_cut_replication(rig: SentinelRig) -> None:
    primary, replica = rig.group.primary, rig.group.replica
    await _in_thread(lambda: _cut_replication(primary, replica))
    await asyncio.sleep(LAG_SECONDS)
    primary.kill()
    rig.killed.append(primary)


def sentinel_schedule(short: bool) -> tuple[float, float, float, list[Fault]]:
    faults = [
        Fault("primary_sigkill", sentinel_kill_primary, 0, sentinel_wait_failover, sentinel_rejoin),
        Fault(
            "lagging_promotion",
            sentinel_cut_replication,
            0,
            sentinel_wait_failover,
            sentinel_rejoin,
        ),
    ]
    if short:
        return 1.5, 0.5, 2.0, faults
    return 4.0, 1.0, 5.0, faults


async def start_cluster() -> ClusterRig:
    cluster = RedisClusterServers(primaries=3, replicas_per_primary=1)
    await _in_thread(cluster.start)
    return ClusterRig(cluster)


async def start_sentinel() -> SentinelRig:
    group = RedisSentinelServers()
    await _in_thread(group.start)
    return SentinelRig(group)


def now() -> float:
    return time.monotonic()
