"""The invalidation bus: one pub/sub channel per namespace keeps every worker's L1 consistent.

Messages (msgpack maps) say who sent them (``o``), what happened (``op``:
``del`` keys, ``gen`` bumped a generation, ``filled`` a leased load
finished) and to what. A worker applies its own messages locally when it
sends them and ignores their echo. Group invalidation is O(1): layer, tag and
namespace generations live in one Redis hash, mirrored here, and are folded
into keys (layer, namespace) or checked against each entry (tags).

Pub/sub loses what is published while a subscriber is away, so on every
disconnect and reconnect the bus tells its owner to flush L1, and reloads
the generations before it reports itself connected again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from redis.asyncio.client import PubSub

from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.stores.redis import AnyRedis

__all__ = ["Bus", "RedisBus", "decode_message", "encode_message"]

log = logging.getLogger("aiotoolcache.invalidation")

Message = dict[str, Any]


def encode_message(message: Message) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def decode_message(data: Any) -> Message | None:
    """Return the message in ``data``, or None when it is not one of ours."""
    try:
        message = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        return None
    return message


class Bus:
    """Bus is the in-process bus of the embedded default: messages apply locally, at once.

    ``handler`` applies a message to the owner's L1; ``on_reset`` flushes it.
    """

    def __init__(self, handler: Callable[[Message], None], on_reset: Callable[[], None]) -> None:
        self.origin = uuid.uuid4().hex[:16]
        self.generations: dict[str, int] = {}
        self._handler = handler
        self._on_reset = on_reset
        self._filled: dict[str, set[asyncio.Future[None]]] = {}

    @property
    def connected(self) -> bool:
        return True

    async def start(self, wait: float = 2.0) -> None:
        return None

    async def aclose(self) -> None:
        self._wake_all()

    def generation(self, field: str) -> int:
        return self.generations.get(field, 0)

    async def bump(self, field: str) -> int:
        value = self.generations.get(field, 0) + 1
        self.apply({"o": self.origin, "op": "gen", "f": field, "g": value})
        return value

    def encode(self, message: Message) -> bytes:
        return encode_message({"o": self.origin, **message})

    async def publish(self, message: Message) -> None:
        """Apply ``message`` here, then (on Redis) send it to every other worker."""
        self.apply({"o": self.origin, **message})

    def apply(self, message: Message) -> None:
        op = message["op"]
        if op == "gen":
            field, value = message.get("f"), message.get("g")
            if isinstance(field, str) and isinstance(value, int):
                # Generations only grow; a late or duplicate message never undoes a bump.
                if value > self.generations.get(field, 0):
                    self.generations[field] = value
        elif op == "filled":
            for key in message.get("k") or ():
                self.wake(key)
        self._handler(message)

    # -- waiting for a leased load elsewhere ------------------------------------
    def filled_waiter(self, value_key: str) -> asyncio.Future[None]:
        """Return a future resolved when a ``filled`` message for ``value_key`` arrives."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._filled.setdefault(value_key, set()).add(future)
        return future

    def forget_waiter(self, value_key: str, future: asyncio.Future[None]) -> None:
        waiters = self._filled.get(value_key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._filled[value_key]

    def wake(self, value_key: Any) -> None:
        for future in self._filled.pop(value_key, ()) if isinstance(value_key, str) else ():
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for key in list(self._filled):
            self.wake(key)

    def reset(self) -> None:
        self._wake_all()
        self._on_reset()


class RedisBus(Bus):
    """RedisBus carries the messages over Redis pub/sub with one subscriber task per cache."""

    def __init__(
        self,
        client: AnyRedis,
        breaker: CircuitBreaker,
        namespace: str,
        handler: Callable[[Message], None],
        on_reset: Callable[[], None],
        *,
        health_interval: float = 1.0,
    ) -> None:
        super().__init__(handler, on_reset)
        self.client = client
        self.breaker = breaker
        self.channel = f"{namespace}:bus"
        self.generations_key = f"{namespace}:generations"
        self.health_interval = health_interval
        self.reconnects = 0
        self._connected = asyncio.Event()
        self._closing = False
        # Set when redis-py re-establishes the subscriber connection by itself (it
        # resubscribes silently; whatever was published in between is lost).
        self._reconnected_underneath = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, wait: float = 2.0) -> None:
        """Start the subscriber and wait (bounded) until it is subscribed."""
        self._task = asyncio.create_task(self._run(), name="aiotoolcache-subscriber")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._connected.wait()

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await super().aclose()

    async def bump(self, field: str) -> int:
        value = int(
            await self.breaker.call(lambda: self.client.hincrby(self.generations_key, field, 1))
        )
        await self.publish({"op": "gen", "f": field, "g": value})
        return value

    async def publish(self, message: Message) -> None:
        message = {"o": self.origin, **message}
        self.apply(message)
        data = encode_message(message)
        await self.breaker.call(lambda: self._send(data))

    def _send(self, data: bytes) -> Awaitable[Any]:
        """Send one encoded message on the channel (Cluster: through a live node)."""
        return self.client.publish(self.channel, data)

    async def load_generations(self) -> None:
        raw = await self.breaker.call(lambda: self.client.hgetall(self.generations_key))
        generations: dict[str, int] = {}
        for field, value in raw.items():
            with contextlib.suppress(ValueError):
                generations[field.decode() if isinstance(field, bytes) else field] = int(value)
        self.generations = generations

    # -- the subscriber --------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            pubsub = self._new_pubsub()
            try:
                await self._subscribe(pubsub)
                backoff = 0.05
                await self._listen(pubsub)
            except asyncio.CancelledError:
                if self._closing:
                    return
                raise
            except Exception as exc:  # any failure means messages may have been lost
                if self._closing:
                    return
                self._disconnected(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._connection_remade)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _new_pubsub(self) -> PubSub:
        """Return an unsubscribed pub/sub connection (Cluster: on the next node in turn)."""
        return self.client.pubsub()

    async def _subscribe(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(max(2.0, self.health_interval * 2)):
            await pubsub.subscribe(self.channel)
            assert pubsub.connection is not None
            self._reconnected_underneath = False
            pubsub.connection.register_connect_callback(self._connection_remade)
            while True:
                reply = await pubsub.get_message(timeout=self.health_interval)
                if reply is not None and reply.get("type") == "subscribe":
                    break
            # Whatever was published before the subscription is lost: resync.
            await self.load_generations()
        self.reset()
        if self.reconnects:
            log.warning("invalidation subscriber reconnected; L1 flushed")
        self._connected.set()

    async def _listen(self, pubsub: PubSub) -> None:
        last_seen = time.monotonic()
        pinged = False
        while not self._closing:
            reply = await pubsub.get_message(timeout=self.health_interval)
            if self._reconnected_underneath:
                raise ConnectionError("subscriber connection was re-established")
            now = time.monotonic()
            if reply is not None:
                last_seen, pinged = now, False
                if reply.get("type") == "message":
                    self._receive(reply.get("data"))
                continue
            if pinged and now - last_seen > 2 * self.health_interval:
                raise ConnectionError("subscriber connection stopped answering")
            if not pinged and now - last_seen >= self.health_interval:
                await pubsub.ping()
                pinged = True

    async def _connection_remade(self, _connection: Any) -> None:
        self._reconnected_underneath = True

    def _receive(self, data: Any) -> None:
        message = decode_message(data)
        if message is None or message.get("o") == self.origin:
            return
        try:
            self.apply(message)
        except Exception:  # a bad message must never tear the subscription down
            log.exception("could not apply an invalidation message")

    def _disconnected(self, exc: BaseException) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            self.reconnects += 1
            log.warning("invalidation subscriber lost its connection (%s); L1 flushed", exc)
        self.reset()
