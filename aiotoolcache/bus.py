"""The bus of the embedded default, and what every bus does: apply messages in process.

A bus carries invalidations between the workers of one namespace and keeps
the generations that key names embed. This in-process one applies every
message at once, so it always hears and always knows the generations; the
Redis bus (``invalidation``) adds pub/sub, proof of hearing, settling and the
generations hash on top of it. ``Coherence`` owns one and receives its
messages through ``handler``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiotoolcache.bus_messages import Message, encode_message, sane_generation

__all__ = ["Bus"]

_VERSIONS = itertools.count()  # see Bus.version


class Bus:
    """Bus is the in-process bus of the embedded default: messages apply locally, at once.

    ``handler`` applies a message to the owner's L1; ``on_reset`` flushes it.
    """

    def __init__(
        self,
        handler: Callable[[Message], None],
        on_reset: Callable[[], None],
        *,
        mac_keys: tuple[bytes, ...] = (),
    ) -> None:
        self.origin = uuid.uuid4().hex[:16]
        self.generations: dict[str, int] = {}
        # Changes with ``generations`` (never the same number twice, across buses too):
        # a key named under another version may name an invalidated entry.
        self.version = next(_VERSIONS)
        # The generations Redis is known to hold. ``generations`` runs ahead of them
        # after an invalidation that could not reach Redis yet (applied here at once,
        # marked ``"u"``): until it lands, the other workers still use these.
        self.confirmed: dict[str, int] = {}
        self.mac_keys = mac_keys
        self.rejected = 0  # messages dropped: unsigned, forged, or an insane generation
        self._handler = handler
        self._on_reset = on_reset
        self._filled: dict[str, set[asyncio.Future[None]]] = {}

    @property
    def connected(self) -> bool:
        return True

    @property
    def known(self) -> bool:
        """True once the generations are known (always, in process)."""
        return True

    # time.monotonic() from which this bus is deaf: +inf while subscribed, -inf after
    # a disconnect (a plain float, so the L1 hit path checks it without a call).
    deaf_after = float("inf")
    # time.monotonic() of the last L1 lookup that found an entry (set by the hot path with
    # one store) or of the last wait for proof: the subscriber pings fast while it is recent.
    used_at = float("-inf")
    # True while reads, loads or writes are in flight (they may fill L1 when they end).
    busy: Callable[[], bool] | None = None
    # True while proof of hearing is kept at the idle cadence only (see note_use).
    idle = False
    # Called when the event loop cancels the subscriber of a cache nobody closed.
    on_abandon: Callable[[], None] | None = None

    @property
    def hearing(self) -> bool:
        """True while every invalidation reaches this worker (always, in process)."""
        return time.monotonic() < self.deaf_after

    def note_use(self) -> None:
        """The cache is in use from now on: keep proof of hearing fresh (nothing in process)."""

    async def regain(self) -> bool:
        """Wait briefly for proof that every message published before this call was applied.

        True when it came (keys built from now on use current generations, so
        L2 may be read; L1 only while ``hearing``); False when the subscriber
        is disconnected or its pings go unanswered (nothing cached can be
        vouched for).
        """
        if self.hearing:
            return True
        since = self.want_proof()
        return since is not None and await self.proof(since)

    # time.monotonic() sent time of the last answered ping (see want_proof): in process,
    # every message is applied as it is sent.
    proven_at = float("inf")

    def want_proof(self) -> float | None:
        """Ask for a proof of hearing that covers a read beginning now; return the time it
        must be proven from (``proof``, ``proven_at``), or None when none can come (deaf).

        A reader may read L2 meanwhile: once ``proven_at`` reaches that time and the
        generations ``version`` is unchanged, what it read is vouched for.
        """
        self.note_use()
        return time.monotonic() if self.hearing else None

    async def proof(self, since: float) -> bool:
        """Wait until everything published before ``since`` has been applied; False when the
        subscriber is disconnected or stalled (nothing cached can be vouched for)."""
        return self.proven_at >= since

    async def start(self, wait: float = 2.0) -> None:
        return None

    async def settle(self) -> bool:
        """Wait until no worker can serve what this worker's writes so far replaced (see
        ``settle``); True when every worker acknowledged. In process: at once."""
        return True

    async def aclose(self) -> None:
        self._wake_all()

    def stop(self) -> None:
        """Stop at once, without waiting (closing gave up, or the loop is ending)."""
        self._wake_all()

    def generation(self, field: str) -> int:
        return self.generations.get(field, 0)

    async def bump(self, field: str) -> int:
        value = self.generations.get(field, 0) + 1
        self.apply({"o": self.origin, "op": "gen", "f": field, "g": value})
        return value

    def encode(self, message: Message) -> bytes:
        return encode_message({"o": self.origin, **message}, self.mac_keys)

    async def publish(self, message: Message) -> None:
        """Apply ``message`` here, then (on Redis) send it to every other worker."""
        self.apply({"o": self.origin, **message})

    def apply(self, message: Message) -> None:
        op = message["op"]
        if op == "gen":
            field, value = message.get("f"), message.get("g")
            local = self.generations.get(field, 0) if isinstance(field, str) else 0
            if not isinstance(field, str) or not isinstance(value, int):
                self.rejected += 1
                return
            if not sane_generation(value, local):
                self.rejected += 1
                return
            # Generations only grow; a late or duplicate message never undoes a bump.
            if value > local:
                self.generations[field] = value
                self.version = next(_VERSIONS)
            if not message.get("u") and value > self.confirmed.get(field, 0):
                self.confirmed[field] = value
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
