"""The invalidation bus: one pub/sub channel per namespace keeps every worker's L1 consistent.

Messages (msgpack maps) say who sent them (``o``), what happened (``op``:
``del`` keys, ``gen`` bumped a generation, ``filled`` a leased load
finished, ``settle`` a write waits to settle, answered by an ``ack`` on the
writer's own channel; see ``settle``) and to what. A worker applies its own
messages locally when it sends them and ignores their echo. Group
invalidation is O(1): layer, tag and namespace generations live in one Redis
hash, mirrored here, and are folded into keys (layer, namespace) or checked
against each entry (tags).

Pub/sub loses what is published while a subscriber is away, so on every
disconnect and reconnect the bus tells its owner to flush L1, and reloads
the generations before it reports itself connected again.

The subscriber also proves that it hears, by pings on its own connection
answered in order (see ``hearing``): L1 is trusted only for a bounded time
after the last proof.

The generations hash itself is kept by ``generations.GenerationsHash``,
which the bus owns: bumps written and announced in one script, generations
never reused, data loss (a hash lost or behind) found and healed. The bus
reads it again every ``max_staleness`` while in use (every few health
intervals when idle), so a bump that landed unannounced (a refused PUBLISH)
is still applied within that time.

With a secret, every message carries a keyed MAC; a message that fails it is
dropped and counted, and so is a generation that jumps past a sane bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.client import PubSub

from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.bus import Bus
from aiotoolcache.bus_messages import Message, bus_keys, decode_message, encode_message, now_ms
from aiotoolcache.generations import GenerationsHash
from aiotoolcache.hearing import DEFAULT_MAX_STALENESS, Hearing
from aiotoolcache.settle import Settlement
from aiotoolcache.stores.redis import AnyRedis

__all__ = [
    "Message",
    "RedisBus",
    "bus_keys",
    "decode_message",
    "encode_message",
    "now_ms",
]

log = logging.getLogger("aiotoolcache.invalidation")


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
        max_staleness: float = DEFAULT_MAX_STALENESS,
        mac_keys: tuple[bytes, ...] = (),
        generations_ttl_ms: int = 8 * 24 * 3600 * 1000,
    ) -> None:
        super().__init__(handler, on_reset, mac_keys=mac_keys)
        self.client = client
        self.breaker = breaker
        self.channel = f"{namespace}:bus"
        self.health_interval = health_interval
        self.max_staleness = max_staleness
        # Proof of hearing: its pings, what their answers prove, the readers waiting for it.
        self.ears = Hearing(self, max_staleness=max_staleness, health_interval=health_interval)
        self.reconnects = 0
        self._attempts = 0  # subscriptions tried, successful or not
        self._live: PubSub | None = None  # the subscribed connection, while it is listened on
        self._pinger: asyncio.Task[None] | None = None  # sends the pings readers wait for
        self.generations_hash = GenerationsHash(
            self,
            client,
            breaker,
            key=f"{namespace}:generations",
            channel=self.channel,
            ttl_ms=generations_ttl_ms,
            health_interval=health_interval,
            max_staleness=max_staleness,
        )
        self._checker: asyncio.Task[None] | None = None  # reads the hash while subscribed
        # Writes settle on acknowledgements sent to this worker's own channel.
        self.ack_channel = self.ack_channel_of(self.origin)
        self.settlement = Settlement(
            self.origin,
            self._publish_marker,
            max_staleness=max_staleness,
            counted=self.counts_receivers,
        )
        self._acking: set[asyncio.Task[None]] = set()  # acknowledgements on their way
        self._connected = asyncio.Event()
        self._attempted = asyncio.Event()  # set once the first subscription attempt ended
        self._closing = False
        # Set when redis-py re-establishes the subscriber connection by itself (it
        # resubscribes silently; whatever was published in between is lost).
        self._reconnected_underneath = False
        self._task: asyncio.Task[None] | None = None

    # PUBLISH's receiver count covers every subscriber (not on a Cluster: see settle).
    counts_receivers = True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def known(self) -> bool:
        return self.generations_hash.known

    @property
    def data_losses(self) -> int:
        """Times the generations hash was found missing or behind."""
        return self.generations_hash.data_losses

    def ack_channel_of(self, origin: str) -> str:
        """The channel on which the worker ``origin`` hears acknowledgements of its writes."""
        return f"{self.channel}:{origin}"

    async def settle(self) -> bool:
        return await self.settlement.settle()

    async def _publish_marker(self, token: str) -> int:
        """Publish the settle marker ``token``; return how many subscribers received it."""
        data = encode_message({"o": self.origin, "op": "settle", "s": token}, self.mac_keys)
        return int(await self.breaker.call(lambda: self._send(data)))

    def _acknowledge(self, origin: str, token: Any) -> None:
        """Acknowledge another worker's settle marker (everything before it is applied)."""
        data = encode_message({"o": self.origin, "op": "ack", "s": token}, self.mac_keys)
        channel = self.ack_channel_of(origin)
        task = asyncio.create_task(self._send_ack(channel, data))
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)

    async def _send_ack(self, channel: str, data: bytes) -> None:
        try:
            await self.breaker.call(lambda: self._send(data, channel))
        except Exception as exc:  # the writer waits for the bound instead
            log.debug("acknowledgement not sent: %r", exc)

    def want_proof(self) -> float | None:
        if not self.ears.may_prove():
            return None
        self.note_use()  # a ping sent from now on proves what this read needs
        return self.ears.wanted

    async def proof(self, since: float) -> bool:
        return await self.ears.proof(since)

    def note_use(self) -> None:
        self.ears.note_use()
        # The subscriber may sleep for an idle interval: a ping sent now wakes it with its
        # answer, and it keeps the fast cadence from then on.
        self._ping_soon()

    def _ping_soon(self) -> None:
        """Have a ping sent now for the readers waiting for proof, not at the next wake-up.

        From a task of its own: redis-py disconnects a connection whose send was
        cancelled, and a reader may be cancelled at any time.
        """
        if self._pinger is None and self._live is not None:
            self._pinger = asyncio.create_task(self._ping_wanted(self._live))

    async def _ping_wanted(self, pubsub: PubSub) -> None:
        try:
            # Writing while the subscriber waits in get_message is safe: a pub/sub command
            # only writes (its answer comes to the subscriber's read), and on a live
            # connection redis-py writes without yielding to the loop in between.
            while self._live is pubsub and self.ears.ping_wanted():
                await self._ping(pubsub)
        except Exception as exc:  # the subscriber's own read finds the broken connection
            log.debug("ping for a waiting reader failed: %r", exc)
        finally:
            self._pinger = None

    async def _ping(self, pubsub: PubSub) -> None:
        """Send the next ping on ``pubsub``: numbered, and its time noted, just before sending."""
        await pubsub.ping(str(self.ears.sending()))

    async def start(self, wait: float = 2.0) -> None:
        """Start the subscriber; wait (at most ``wait``) for its first attempt to end.

        A refused connection ends it at once; a slow Redis gets ``wait``.
        """
        self._task = asyncio.create_task(self._run(), name="aiotoolcache-subscriber")
        self._checker = asyncio.create_task(self._check_generations(), name="aiotoolcache-gens")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._attempted.wait()

    def stop(self) -> None:
        self._closing = True
        self.ears.close()
        for task in (self._task, self._pinger, self._checker, *self._acking):
            if task is not None:
                task.cancel()
        super().stop()

    async def aclose(self) -> None:
        self._closing = True
        self.ears.close()
        for task in (*self._acking, self._checker, self._pinger, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await super().aclose()

    async def bump(self, field: str) -> int:
        """Bump ``field`` past every value seen here or held in Redis; write and announce it
        in one script (both land or neither). Returns the new value."""
        return await self.generations_hash.bump(field)

    async def publish(self, message: Message) -> None:
        message = {"o": self.origin, **message}
        self.apply(message)
        data = encode_message(message, self.mac_keys)
        await self.breaker.call(lambda: self._send(data))

    def _send(self, data: bytes, channel: str | None = None) -> Awaitable[Any]:
        """Send one encoded message on the bus channel, or on ``channel`` (Cluster: through a
        live node); the reply is PUBLISH's receiver count."""
        return self.client.publish(channel or self.channel, data)

    async def load_generations(self) -> None:
        """Merge the stored generations into ours (by max); heal the hash after data loss."""
        await self.generations_hash.load()

    async def _check_generations(self) -> None:
        """Read the hash again and again while subscribed: Redis may lose it without
        dropping the subscriber (FLUSHALL, eviction), and a bump may land unannounced
        (a refused PUBLISH)."""
        while not self._closing:
            idle = self.idle and not (self.busy is not None and self.busy())
            await asyncio.sleep(self.generations_hash.check_every(idle))
            if self.connected:
                try:
                    await self.load_generations()
                except Exception as exc:  # the subscriber finds a broken connection itself
                    log.debug("generation check failed: %r", exc)

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
                # Cancelled from outside: the event loop is shutting down with the cache
                # still open. Release its sockets now rather than leak them.
                self._closing = True
                self.ears.close()
                if self.on_abandon is not None:
                    self.on_abandon()
                raise
            except Exception as exc:  # any failure means messages may have been lost
                if self._closing:
                    return
                self._disconnected(exc)
                self._attempt_failed()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.25)  # healing within a second matters more
            finally:
                self._live = None  # no more pings on it, from the subscriber or for readers
                self.idle = False
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._connection_remade)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    def _attempt_failed(self) -> None:
        """A subscription attempt failed: a start waiting for the first attempt stops waiting."""
        self._attempted.set()

    def _new_pubsub(self) -> PubSub:
        """Return an unsubscribed pub/sub connection (Cluster: on the next node in turn)."""
        return self.client.pubsub()

    async def _subscribe(self, pubsub: PubSub) -> None:
        self._attempts += 1
        # What was published before the SUBSCRIBE reached Redis is lost, but L1 is empty
        # or flushed below and the generations are reloaded after it: proof up to here.
        subscribing_at = time.monotonic()
        async with asyncio.timeout(max(2.0, self.health_interval * 2)):
            await pubsub.subscribe(self.channel, self.ack_channel)
            assert pubsub.connection is not None
            self._reconnected_underneath = False
            pubsub.connection.register_connect_callback(self._connection_remade)
            confirmed = 0
            while confirmed < 2:  # the bus channel and this worker's acknowledgements
                reply = await pubsub.get_message(timeout=self.health_interval)
                if reply is not None and reply.get("type") == "subscribe":
                    confirmed += 1
            # Whatever was published before the subscription is lost: resync.
            await self.load_generations()
        if not self.reconnects and self._attempts > 1:
            log.info("cache backend answers: caching is on")
        if self.reconnects:
            # Only after a disconnect: L1 stayed empty until the first subscription, and
            # loads in flight then belong to this start, not to a lost past.
            self.reset()
            log.warning("invalidation subscriber reconnected; L1 flushed")
        self._connected.set()
        self._attempted.set()
        self.ears.subscribed(subscribing_at)

    async def _listen(self, pubsub: PubSub) -> None:
        ears = self.ears
        self._live = pubsub
        while not self._closing:
            now = time.monotonic()
            every = ears.cadence(now)
            if ears.ping_due(now, every):
                # t0 is taken before the send: whatever Redis published before it comes
                # ahead of the answer on this connection.
                await self._ping(pubsub)
            # Wake for what arrives, when the next ping is due, or when the oldest ping in
            # flight has waited long enough for a verdict. A reader waiting for proof does
            # not wake this loop: its ping is sent by _ping_soon.
            reply = await pubsub.get_message(timeout=ears.until_wake(every))
            if self._reconnected_underneath:
                raise ConnectionError("subscriber connection was re-established")
            if reply is not None:
                self._handle(reply)
                continue
            # Judged only with nothing left to read: a busy loop delays it, never fakes it.
            now = time.monotonic()
            waited = ears.waited(now)
            if waited > self.health_interval and await self._read_pending(pubsub):
                continue
            if waited > 2 * self.health_interval:
                raise ConnectionError("subscriber connection stopped answering")
            if waited > self.health_interval:
                ears.stall()

    async def _read_pending(self, pubsub: PubSub) -> bool:
        """Apply what reached the socket already; True if anything did.

        After the loop was blocked, the timer of a read can fire before the
        reply that arrived meanwhile is read: one loop iteration lets the
        selector take it in, so a verdict never ignores an answer that came.
        """
        await asyncio.sleep(0)
        reply = await pubsub.get_message(timeout=0)
        if reply is None:
            return False
        self._handle(reply)
        return True

    def _handle(self, reply: dict[str, Any]) -> None:
        kind = reply.get("type")
        if kind == "message":
            if _text(reply.get("channel")) == self.ack_channel:
                self._acknowledged(reply.get("data"))
            else:
                self._receive(reply.get("data"))
        elif kind == "pong":
            self.ears.answered(reply.get("data"))

    async def _connection_remade(self, _connection: Any) -> None:
        self._reconnected_underneath = True

    def _receive(self, data: Any) -> None:
        message = decode_message(data, self.mac_keys)
        if message is None:
            self.rejected += 1
            return
        origin = message.get("o")
        if message["op"] == "settle":
            # Read in order: every message before the marker is applied already.
            if origin == self.origin:
                self.settlement.acknowledged(message.get("s"))
            elif isinstance(origin, str) and 0 < len(origin) <= 64:
                self._acknowledge(origin, message.get("s"))
            return
        if origin == self.origin:
            return
        try:
            self.apply(message)
        except Exception:  # a bad message must never tear the subscription down
            log.exception("could not apply an invalidation message")

    def _acknowledged(self, data: Any) -> None:
        message = decode_message(data, self.mac_keys)
        if message is None or message["op"] != "ack":
            self.rejected += 1
            return
        self.settlement.acknowledged(message.get("s"))

    def _disconnected(self, exc: BaseException) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self.ears.lost()
        if was_connected:
            self.reconnects += 1
            log.warning("invalidation subscriber lost its connection (%s); L1 flushed", exc)
        self.reset()


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
