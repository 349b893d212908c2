"""Coherence: the one place that decides what may enter L1 and L2, and what L1 may serve.

Every worker keeps an in-process L1 in front of the shared L2. Invalidations
(deletes, writes, generation bumps) reach the other workers over the bus, so
a value may only be trusted while three things hold, and this module is the
only place that checks them:

- the generations are known (loaded from Redis at least once), because every
  key embeds them: a key built before they are known may name an entry that
  was invalidated long ago;
- the bus hears: L1 is served only while the subscriber has proven, by a
  ping answered on its own connection, that it has applied every message
  published up to ``max_staleness`` ago (see ``hearing``). Past that,
  L1 is kept but not served; a read first waits for a fresh proof (which
  vouches for that read: L1, then L2, under current generations) and,
  when none comes, serves nothing cached at all (its generations may be behind);
- no invalidation of the entry arrived while its read or load was in flight
  (a revoked ``Fill`` is never stored).

``Coherence`` is created first and owns L1, the fill registry, the in-process
single-flight, the generations and their bus. Layers and the load
coordinator receive it; nothing below reaches back up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiotoolcache.bus import Bus
from aiotoolcache.codec import Envelope
from aiotoolcache.fills import Fill, FillRegistry
from aiotoolcache.flight import SingleFlight
from aiotoolcache.invalidation import Message, RedisBus
from aiotoolcache.keys import KeyRef, generation_scope
from aiotoolcache.stores.base import Store
from aiotoolcache.stores.memory import BoundedLRU

__all__ = ["Coherence", "L1Entry"]

log = logging.getLogger("aiotoolcache.coherence")


class L1Entry:
    """L1Entry is one decoded value kept in process, with the envelope it came in (no payload).

    The value is shared by every reader: a layer with ``copy_on_read`` hands
    out copies instead.
    """

    __slots__ = (
        "current_at",
        "envelope",
        "expires_at",
        "layer",
        "plain",
        "quiet_until",
        "size",
        "value",
    )

    def __init__(
        self,
        value: Any,
        envelope: Envelope,
        expires_at: float,
        layer: str,
        size: int,
        plain: bool = True,
        quiet_until: float = float("-inf"),
    ) -> None:
        self.value = value
        self.plain = plain  # served as is: no cached failure to raise, no copy to make
        self.envelope = envelope  # payload dropped: L1 never decodes the same bytes again
        self.expires_at = expires_at  # time.monotonic() deadline: min(hard expiry, l1_ttl)
        self.layer = layer
        self.size = size  # the encoded bytes it stands for, which L1's byte bound counts
        self.quiet_until = quiet_until  # time.time() before which no refresh is due (freshness)
        # The bus's generations version under which its tags were last found current:
        # generations change only with the version, so until then no tag is checked again.
        self.current_at = -1


class Coherence:
    """Coherence owns L1, fills, flights and generations, and the rule that admits values.

    ``bus`` is built by the caller with this object's ``apply`` and ``reset``
    as its handlers (see ``attach``).
    """

    def __init__(self, *, l1_max_entries: int, l1_max_bytes: int) -> None:
        self.l1: BoundedLRU[L1Entry] = BoundedLRU(l1_max_entries, l1_max_bytes)
        self.fills = FillRegistry()
        self.flight: SingleFlight[Any] = SingleFlight()
        self.bus: Bus = Bus(self.apply, self.reset)
        self.fallback: Store | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._start: asyncio.Task[None] | None = None
        self._on_start: list[Callable[[], None]] = []
        self.closed = False  # set once, by the owner's aclose
        # Started, generations known, not closed: the hot path's one check. Recomputed by
        # start() (which every caller runs while it is False), cleared by close.
        self.ready = False
        # Whether writes settle unless told (None: tool writes do, plain writes do not).
        self.settle_writes: bool | None = None

    def attach(
        self,
        bus_factory: Callable[[Callable[[Message], None], Callable[[], None]], Bus],
        fallback: Store | None,
    ) -> None:
        """Use the bus ``bus_factory(apply, reset)`` builds, and keep ``fallback`` coherent too."""
        self.bus = bus_factory(self.apply, self.reset)
        # Work in flight may fill L1 when it ends: the bus keeps proof of hearing fresh.
        self.bus.busy = self.fills.__bool__
        self.fallback = fallback

    # -- start-up --------------------------------------------------------------------
    def on_start(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once, when the bus first starts (explicitly or lazily)."""
        self._on_start.append(hook)

    @property
    def started(self) -> bool:
        return self._start is not None

    async def start(self, wait: float) -> None:
        """Start the bus (once) and wait at most ``wait`` seconds for it to know the generations.

        Concurrent callers share one start; a caller that stops waiting never
        cancels it.
        """
        if self._start is None:
            for hook in self._on_start:
                hook()
            self._start = asyncio.ensure_future(self.bus.start(wait=wait))
        if not self._start.done():
            await asyncio.wait([self._start], timeout=wait)
        self.ready = self._start.done() and self.bus.known and not self.closed

    # -- the rule --------------------------------------------------------------------
    @property
    def known(self) -> bool:
        """True once the generations are known: before that no key can be trusted."""
        return self.bus.known

    async def generations_current(self) -> bool:
        """True once keys built now name the entries the other workers read, so a write or
        delete reaches them: the generations are known and either proven current by hearing
        (waiting for a proof if need be, as a read does) or, when no proof can come (the
        subscriber is down or stalled), read from Redis now. False when neither can be had:
        what the write changes must then wait (see ``SharedTier.defer``).
        """
        bus = self.bus
        if not bus.known:
            return False
        if bus.hearing or await bus.regain():
            return True
        if not isinstance(bus, RedisBus):
            return False
        try:
            # A bump that lands after this read moves every reader to keys loaded after
            # it: the write under the generations read here still reaches what they read.
            await bus.load_generations()
        except Exception:
            return False
        return True

    def names(self, namespace: str, ref: KeyRef) -> list[KeyRef]:
        """Every name a write or delete of ``ref``'s entry must reach now, first the one
        under this worker's generations.

        While an invalidation of the layer or namespace waits in the outbox, this
        worker's generations run ahead of those Redis holds, which the other workers
        still use: the entry's name under those comes second.
        """
        bus = self.bus
        field = f"layer:{ref.layer}"
        names: list[KeyRef] = []
        for scope in (
            generation_scope(bus.generation("ns"), bus.generation(field)),
            generation_scope(bus.confirmed.get("ns", 0), bus.confirmed.get(field, 0)),
        ):
            if ref.generation == scope and not names:
                names.append(ref)
            elif not names or names[0].generation != scope:
                names.append(KeyRef.build(namespace, ref.layer, scope, ref.label, ref.digest))
        return names

    def admits(self, fill: Fill | None) -> bool:
        """May a value read or loaded under ``fill`` enter L2 (and, if L1 is trusted, L1)?

        Never before the generations are known, never after an invalidation
        revoked the fill.
        """
        return self.bus.known and (fill is None or not fill.revoked)

    def current(self, envelope: Envelope) -> bool:
        """True when no tag the entry carries was invalidated after it was written."""
        tags = envelope.tag_generations
        if not tags:
            return True
        generation = self.bus.generation
        return all(generation(f"tag:{tag}") == seen for tag, seen in tags.items())

    def tag_generations(self, tags: Iterable[str] | None) -> dict[str, int] | None:
        """The generations of ``tags`` now: what an entry written now carries."""
        return {tag: self.bus.generation(f"tag:{tag}") for tag in tags} if tags else None

    def begin(self, ref: KeyRef, tags: Iterable[str] | None = None) -> Fill:
        """Register a read or load of ``ref`` (with the tag generations seen as it starts)."""
        self.note_use()  # its value may enter L1 when it ends
        return self.fills.begin(ref, self.tag_generations(tags))

    def note_use(self) -> None:
        """The cache is in use: keep proof of hearing fresh (reads need it, L1 too)."""
        bus = self.bus
        if bus.idle:
            bus.note_use()  # the subscriber may sleep its idle interval: wake it
        else:
            bus.used_at = time.monotonic()  # one store, as an L1 hit makes

    def end(self, fill: Fill) -> None:
        self.fills.end(fill)

    def settles(self, asked: bool | None, *, tool_write: bool = False) -> bool:
        """Does a write settle before it returns? As asked; else as the cache's
        ``settle_writes`` says; else only a tool write does."""
        if asked is not None:
            return asked
        if self.settle_writes is not None:
            return self.settle_writes
        return tool_write

    # -- L1 --------------------------------------------------------------------------
    def l1_entry(self, value_key: str, vouched: bool = False) -> L1Entry | None:
        """Return the L1 entry of ``value_key`` if it may be served now, else None.

        ``vouched``: the caller has seen proof of hearing since its read began
        (``Bus.regain``), so the bus's current trust does not matter to it.
        """
        entry = self.l1.get(value_key)
        if entry is None:
            return None
        now = time.monotonic()
        self.bus.used_at = now  # L1 in use: the bus keeps proof of hearing fresh
        if now >= self.bus.deaf_after and not vouched:
            return None  # not proven to hear lately: kept, the next proof vouches for it again
        if entry.expires_at <= now:
            self.l1.pop(value_key)
            return None
        if entry.envelope.tag_generations and entry.current_at != self.bus.version:
            if not self.current(entry.envelope):
                self.l1.pop(value_key)
                return None
            entry.current_at = self.bus.version
        return entry

    def keep(
        self, value_key: str, entry: L1Entry, fill: Fill | None, *, vouched: bool = False
    ) -> None:
        """Put ``entry`` in L1 if the rule admits it and the bus has proven lately that it hears.

        ``vouched``: a proof covering the fill's start came after the read (however late
        the loop resumed it); any invalidation after that proof revokes the fill or finds
        the entry in L1.
        """
        if self.admits(fill) and (vouched or self.bus.hearing):
            self.l1.put(value_key, entry, entry.size)

    # -- invalidations ---------------------------------------------------------------
    def apply(self, message: Message) -> None:
        """Apply an invalidation (our own or another worker's) to L1, fills, flights, fallback."""
        op = message.get("op")
        if op == "del":
            keys = [key for key in message.get("k") or () if isinstance(key, str)]
            for key in keys:
                self.l1.pop(key)
                # Reads from now on must not join a load begun before the delete, and
                # waiters on the lease it revoked look again at once.
                self.flight.forget(key)
                self.bus.wake(key)
            self.fills.revoke_keys(keys)
            if message.get("o") != self.bus.origin:
                self._drop_from_fallback(keys)
        elif op == "gen":
            field = message.get("f")
            if field == "ns":
                self.reset()
            elif isinstance(field, str) and field.startswith("layer:"):
                name = field.removeprefix("layer:")
                self.l1.remove_if(lambda _key, entry: entry.layer == name)
                self.fills.revoke_layer(name)
            elif isinstance(field, str) and field.startswith("tag:"):
                tag = field.removeprefix("tag:")
                self.l1.remove_if(lambda _key, entry: tag in (entry.envelope.tag_generations or ()))
                for key in self.fills.revoke_tag(tag):
                    self.flight.forget(key)
        elif op == "filled" and message.get("o") != self.bus.origin:
            # Another worker stored a newer value (a refresh, say): a copy held here is
            # older, and serving it stale would start a second refresh of the same key.
            keys = [key for key in message.get("k") or () if isinstance(key, str)]
            for key in keys:
                self.l1.pop(key)
            self._drop_from_fallback(keys)

    def reset(self) -> None:
        """Forget everything L1 holds and everything in flight (messages may have been lost)."""
        self.l1.clear()
        self.fills.revoke_all()
        self.flight.forget_all()

    def _drop_from_fallback(self, keys: list[str]) -> None:
        # The fallback store is read while Redis fails: it must not keep what others
        # replaced or deleted meanwhile.
        if self.fallback is not None and keys:
            self.in_background(self.fallback.delete_many(keys))

    # -- background work -------------------------------------------------------------
    def in_background(self, awaitable: Awaitable[Any]) -> None:
        """Run ``awaitable`` as a tracked task; its failure is logged, never raised."""
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background cache work failed: %r", task.exception())

    def close(self) -> None:
        """Refuse all further use: nothing is served or stored from now on."""
        self.closed = True
        self.ready = False

    async def aclose(self) -> None:
        """Stop the bus and wait for background work (already bounded by the store budget)."""
        if self._start is not None and not self._start.done():
            self._start.cancel()
        await self.bus.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
