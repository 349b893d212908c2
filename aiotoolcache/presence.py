"""Presence: whether the worker holding a lease is still alive, asked of Redis.

Each worker keeps one idle connection open to Redis for as long as it lives,
named with a random nonce (``CLIENT SETNAME``). Its ``CLIENT ID`` and that
name go into every lease marker the worker parks (see ``lease``). When the
process dies (SIGKILL, an OOM kill), its kernel closes the socket and Redis
drops the client at once; a waiter that has waited ``PROBE_EVERY`` asks
``CLIENT LIST ID`` whether the holder is still connected, and takes the lease
over when it is not. A slow but live holder is still connected: it keeps its
lease (renewed meanwhile) and its fill lands.

The name guards against a reused id (ids are per server: after a failover
another client may carry it). On a Cluster the marker names the node the
connection is on; a node that refuses connections (killed in a failover)
holds no live connection either. Whenever the answer is unsure (the server
refuses CLIENT LIST, as an ACL without ``@admin`` does; the question times
out), the holder counts as alive and the waiter falls back to the lease's
term, as without presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aiotoolcache.stores.redis import AnyRedis

__all__ = ["PROBE_EVERY", "Holder", "Presence"]

log = logging.getLogger("aiotoolcache.presence")

# How long a waiter waits for a fill before it asks whether the holder lives.
PROBE_EVERY = 0.2
# Waiters on many keys held by one worker share one answer for this long.
_ANSWER_KEEPS = 0.1
# The first connection of a worker: at most this long on the path of its first miss.
_FIRST_CONNECT_WAIT = 0.25
# Between reconnection attempts after the presence connection was lost.
_RECONNECT_EVERY = 0.5
_SEPARATOR = "~"


class Holder:
    """Holder is the presence a lease marker names: a client id and name, on a node."""

    __slots__ = ("client_id", "name", "node")

    def __init__(self, client_id: int, name: str, node: str) -> None:
        self.client_id = client_id
        self.name = name
        self.node = node  # "host:port" on a Cluster, else ""

    def key(self) -> tuple[int, str, str]:
        return (self.client_id, self.name, self.node)

    @classmethod
    def parse(cls, marker_token: str) -> Holder | None:
        """The presence in a marker's token (after its prefix), or None if it names none."""
        parts = marker_token.rstrip("+").split(_SEPARATOR)
        if len(parts) < 3 or not parts[1].isdigit():
            return None
        return cls(int(parts[1]), parts[2], parts[3] if len(parts) > 3 else "")


class Presence:
    """Presence keeps this worker's named connection and asks after other workers' ones."""

    def __init__(self, client: AnyRedis) -> None:
        self._client = client
        self._name = "atc-" + secrets.token_hex(8)
        self._suffix = ""  # "~id~name[~node]" while connected, else ""
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self.probing = True  # False once the server refused CLIENT LIST
        self._answers: dict[tuple[int, str, str], tuple[float, asyncio.Future[bool]]] = {}
        self._closed = False

    def start(self) -> None:
        """Open the named connection in the background (once), so a first miss finds it."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._hold())

    async def connected(self) -> bool:
        """Wait until the first connection attempt has ended; True when markers name us."""
        self.start()
        if not self._closed:
            await self._first.wait()
        return bool(self._suffix)

    async def token(self) -> str:
        """A new lease token naming this worker's presence (a bare one while not connected)."""
        self.start()
        if not self._first.is_set() and not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FIRST_CONNECT_WAIT):
                    await self._first.wait()
        return secrets.token_hex(12) + self._suffix

    async def alive(self, holder: Holder) -> bool:
        """False only when Redis says the holder's connection is gone; True when unsure."""
        if not self.probing:
            return True
        now = time.monotonic()
        key = holder.key()
        kept = self._answers.get(key)
        if kept is not None and now - kept[0] < _ANSWER_KEEPS:
            return await asyncio.shield(kept[1])
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._answers[key] = (now, answer)
        try:
            result = await self._ask(holder)
        except BaseException:
            answer.set_result(True)
            self._answers.pop(key, None)
            raise
        answer.set_result(result)
        if len(self._answers) > 1000:
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < _ANSWER_KEEPS}
        return result

    async def _ask(self, holder: Holder) -> bool:
        try:
            if isinstance(self._client, RedisCluster):
                host, _, port = holder.node.rpartition(":")
                node = self._client.get_node(host=host, port=int(port)) if port.isdigit() else None
                if node is None:
                    return False  # a node the cluster dropped: its connections are gone
                reply = await self._client.execute_command(
                    "CLIENT LIST", "ID", holder.client_id, target_nodes=node
                )
            else:
                reply = await self._client.execute_command("CLIENT LIST", "ID", holder.client_id)  # type: ignore[no-untyped-call, unused-ignore]
        except (NoPermissionError, ResponseError) as exc:
            # Refused by an ACL (or renamed away): waiters fall back to the lease's term.
            self.probing = False
            log.info("CLIENT LIST refused (%s): a dead loader's lease runs out its term", exc)
            return True
        except (RedisConnectionError, ConnectionRefusedError):
            # The holder's node is down (a failover): so is its connection. Taking over
            # is safe even if the holder lives: its fill then finds its marker gone.
            return False
        except (RedisError, OSError):
            return True  # a timeout, say: cannot tell
        # The name is a random nonce: found anywhere in the reply, it is that connection.
        return holder.name in repr(reply)

    async def _hold(self) -> None:
        """Keep the named connection open; reconnect when it is lost."""
        while not self._closed:
            try:
                connection = self._new_connection()
                self._connection = connection
                await connection.connect()
                await connection.send_command("CLIENT", "SETNAME", self._name)
                await connection.read_response()
                await connection.send_command("CLIENT", "ID")
                client_id = int(await connection.read_response())
                node = ""
                if isinstance(self._client, RedisCluster):
                    node = f"{connection.host}:{connection.port}"
                parts = ["", str(client_id), self._name] + ([node] if node else [])
                self._suffix = _SEPARATOR.join(parts)
                self._first.set()
                # Nothing is ever sent on this connection: a read ends only when it closes.
                while True:
                    with contextlib.suppress(RedisTimeoutError):
                        await connection.read_response(timeout=60.0, disconnect_on_error=False)
            except asyncio.CancelledError:
                raise
            except (NoPermissionError, ResponseError) as exc:
                # CLIENT SETNAME or CLIENT ID refused (an ACL): markers name no presence,
                # and a dead loader's lease runs out its term.
                log.info("presence unavailable (%s): leases of dead loaders run out", exc)
                self._closed = True
            except Exception as exc:  # a lost or refused connection: try again soon
                log.debug("presence connection lost: %r", exc)
            finally:
                self._suffix = ""
                self._first.set()  # the first miss never waits for a failing server
                self._drop_connection()
            if not self._closed:
                await asyncio.sleep(_RECONNECT_EVERY)

    def _new_connection(self) -> Any:
        if isinstance(self._client, RedisCluster):
            node = self._client.get_default_node()
            return node.connection_class(**node.connection_kwargs)
        return self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call, unused-ignore]

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection._close()

    def close_now(self) -> None:
        """Stop at once, without awaiting (the loop may be ending)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._drop_connection()

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_connection()
