"""The invalidation bus on a Redis Cluster: one subscriber on any node, moving on when it fails.

A plain PUBLISH on any node of a cluster reaches the subscribers of every node
(primaries and replicas), so one subscription anywhere hears every message.
redis-py's cluster pub/sub would always pick the node that owns the channel
name's slot, also while that node is down and failing over, and it borrows
the node's pooled connections, which redis-py drops wholesale on every
``CLUSTERDOWN`` reply during a failover. So the subscriber here opens its own
connection (same options: TLS, credentials, timeouts; no silent reconnects)
to one node at a time, taking the nodes in turn from a random start so
workers spread out, and after any failure simply tries the next one. Messages
published while it moves are lost, which the bus handles as for any
reconnection: L1 is flushed and the generations reloaded.

The bus publishes through the node it listens on (alive, as far as the
subscriber's health checks know), and otherwise lets redis-py route PUBLISH.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aiotoolcache.invalidation import RedisBus

__all__ = ["ClusterBus"]


class ClusterBus(RedisBus):
    """ClusterBus is the RedisBus of a Redis Cluster: it subscribes on one node at a time."""

    _turn = -1
    # PUBLISH counts the receivers of one node only: writes settle by the bound alone.
    counts_receivers = False
    node: ClusterNode | None = None  # the node the subscriber uses now

    @property
    def cluster(self) -> RedisCluster:
        assert isinstance(self.client, RedisCluster)
        return self.client

    def _candidates(self) -> list[ClusterNode]:
        cluster = self.cluster
        # Before the client learnt the topology, its startup nodes are all there is.
        nodes = cluster.get_nodes() or list(cluster.nodes_manager.startup_nodes.values())
        return sorted(nodes, key=lambda node: node.name)

    _failed_nodes = 0  # nodes tried in vain since the last successful subscription

    def _attempt_failed(self) -> None:
        # One dead node says nothing of the others: stop a waiting start only once
        # every node has been tried.
        self._failed_nodes += 1
        if self._failed_nodes >= len(self._candidates()):
            self._failed_nodes = 0
            super()._attempt_failed()

    def _new_pubsub(self) -> PubSub:
        nodes = self._candidates()
        if self._turn < 0:
            self._turn = random.randrange(len(nodes))
        else:
            self._turn += 1
        node = self.node = nodes[self._turn % len(nodes)]
        options = dict(node.connection_kwargs)
        # A failure must reach the bus (which flushes L1), not be retried away.
        options["retry"] = Retry(NoBackoff(), 0)
        pool = ConnectionPool(connection_class=node.connection_class, max_connections=1, **options)
        # The pool holds only the pub/sub connection, which PubSub.aclose disconnects.
        return PubSub(pool)

    def _send(self, data: bytes, channel: str | None = None) -> Awaitable[Any]:
        node = self.node if self.connected else None
        if node is not None:
            known = self.cluster.get_node(node_name=node.name)
            if known is not None:
                return self.cluster.execute_command(
                    "PUBLISH", channel or self.channel, data, target_nodes=known
                )
        return self.cluster.publish(channel or self.channel, data)
