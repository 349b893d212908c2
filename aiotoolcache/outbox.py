"""Invalidations that could not reach Redis, sent again until they do.

A delete, an announced write or a generation bump that fails (Redis down, a
primary failing over, the breaker open) has already taken effect in this
worker, but L2 and the other workers never heard of it: they would serve the
old value until its TTL. The outbox keeps these invalidations and replays them
in the background, backing off while Redis keeps refusing, until Redis takes
them. Replays are idempotent (a key deleted twice, a generation bumped
twice), so a batch that partly landed is simply sent again.

A delete is kept as the entry (layer, label, digest), not as a key name: key
names embed the generations, which may be unknown when the delete is made (a
worker that starts while Redis refuses it) or move before it lands. A replay
names the entry under the generations current then, proven by hearing or read
from Redis (``Coherence.generations_current``), and also under those Redis
holds when this worker's run ahead of them (``Coherence.names``). It applies
the delete to this worker's L1 too: its own echo on the bus is ignored, and a
value loaded meanwhile may sit there.

Until a delete lands, this worker treats the entry as absent from L2
(``holds``, checked where every L2 read is opened: ``Layer.open_raw``), so it
never reads back what it invalidated, not even through the reply of a lease
request.

The outbox is bounded: past ``limit`` entries it gives up on single entries
and bumps the namespace generation instead, which invalidates everything,
everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable

from aiotoolcache.coherence import Coherence
from aiotoolcache.errors import BackendError
from aiotoolcache.keys import KeyRef
from aiotoolcache.lease import LeaseManager

__all__ = ["InvalidationOutbox"]

log = logging.getLogger("aiotoolcache.outbox")

# Keys announced per replayed batch.
_BATCH = 1000

Entry = tuple[str, str, str]  # layer, label, digest: an entry whatever its generations


def _entry(ref: KeyRef) -> Entry:
    return ref.layer, ref.label, ref.digest


class InvalidationOutbox:
    """InvalidationOutbox replays failed deletes and generation bumps until Redis takes them."""

    def __init__(
        self,
        leases: LeaseManager,
        coherence: Coherence,
        namespace: str,
        channel: str,
        *,
        limit: int = 100_000,
        min_delay: float = 0.05,
        max_delay: float = 0.25,
    ) -> None:
        self._leases = leases
        self._coherence = coherence
        self._namespace = namespace
        self._channel = channel
        self.limit = limit
        self.min_delay = min_delay
        self.max_delay = max_delay
        # entry -> (the entry as last named, sequence number of the latest failure)
        self._deletes: dict[Entry, tuple[KeyRef, int]] = {}
        self._bumps: dict[str, int] = {}  # generation field -> sequence number
        self._sequence = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.replayed = 0  # invalidations that reached Redis late
        self.overflows = 0  # times single keys gave way to a namespace bump

    @property
    def pending(self) -> int:
        """How many invalidations wait for Redis."""
        return len(self._deletes) + len(self._bumps)

    # -- what failed ---------------------------------------------------------------
    def delete(self, refs: Iterable[KeyRef]) -> None:
        """Remember that the entries of ``refs`` must be deleted (under whatever generations
        are current when Redis takes it)."""
        for ref in refs:
            self._deletes[_entry(ref)] = (ref, next(self._sequence))
        if len(self._deletes) > self.limit:
            self._overflow()
        self._wake()

    def holds(self, ref: KeyRef) -> bool:
        """True while a delete of ``ref``'s entry waits here: L2 must read it as absent."""
        return bool(self._deletes) and _entry(ref) in self._deletes

    def landed(self, refs: Iterable[KeyRef]) -> None:
        """A write or delete of the entries of ``refs`` reached Redis since they failed:
        what waits here for them is done."""
        if self._deletes:
            for ref in refs:
                self._deletes.pop(_entry(ref), None)

    def bump(self, field: str) -> None:
        """Remember that the generation ``field`` must be bumped (it was, locally)."""
        self._bumps[field] = next(self._sequence)
        self._wake()

    def _overflow(self) -> None:
        self.overflows += 1
        log.warning(
            "%d failed deletes pending: invalidating the whole namespace instead",
            len(self._deletes),
        )
        self._deletes.clear()
        bus = self._coherence.bus
        bus.apply({"o": bus.origin, "op": "gen", "f": "ns", "g": bus.generation("ns") + 1, "u": 1})
        self._bumps["ns"] = next(self._sequence)

    # -- replay ----------------------------------------------------------------------
    async def flush(self) -> bool:
        """Send everything pending once; True when nothing is left.

        Raises BackendError when Redis still refuses, or when the generations
        cannot be made current to name the entries (what failed stays pending).
        """
        coherence = self._coherence
        bus = coherence.bus
        for field, sequence in list(self._bumps.items()):
            await bus.bump(field)
            if self._bumps.get(field) == sequence:
                del self._bumps[field]
            self.replayed += 1
        if not self._deletes:
            return not self.pending
        if not await coherence.generations_current():
            raise BackendError("the generations are not known yet: deletes wait to be named")
        by_layer: dict[str, list[tuple[Entry, KeyRef, int]]] = {}
        for entry, (ref, sequence) in list(self._deletes.items()):
            by_layer.setdefault(ref.layer, []).append((entry, ref, sequence))
        for layer, entries in by_layer.items():
            for start in range(0, len(entries), _BATCH):
                batch = entries[start : start + _BATCH]
                # Named now, with no await before the delete is sent.
                names = [
                    name for _, ref, _ in batch for name in coherence.names(self._namespace, ref)
                ]
                keys = [name.value_key for name in names]
                message = bus.encode({"op": "del", "l": layer, "k": keys})
                pairs = [(name.value_key, name.lease_key) for name in names]
                await self._leases.delete_many(pairs, self._channel, message)
                # Its echo is ignored here as our own: drop what L1 (or a load) holds.
                coherence.apply({"o": bus.origin, "op": "del", "l": layer, "k": keys})
                for entry, _, sequence in batch:
                    # A failure recorded while this was in flight stays pending.
                    pending = self._deletes.get(entry)
                    if pending is not None and pending[1] == sequence:
                        del self._deletes[entry]
                self.replayed += len(batch)
        return not self.pending

    def _wake(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="aiotoolcache-outbox")

    async def _run(self) -> None:
        delay = self.min_delay
        try:
            while self.pending and not self._closing:
                await asyncio.sleep(delay)
                try:
                    if await self.flush():
                        log.info("pending invalidations reached Redis")
                    delay = self.min_delay
                except BackendError:
                    delay = min(delay * 2, self.max_delay)
                except Exception:  # keep replaying; a bug here must not lose invalidations
                    log.exception("replaying pending invalidations failed")
                    delay = self.max_delay
        finally:
            self._task = None

    async def aclose(self, grace: float = 1.0) -> None:
        """Try once more (bounded by ``grace``), then stop; report what is lost."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.pending:
            with contextlib.suppress(BackendError, TimeoutError):
                async with asyncio.timeout(grace):
                    await self.flush()
        if self.pending:
            log.warning(
                "closing with %d invalidations that never reached Redis; other workers "
                "may serve the old values until they expire",
                self.pending,
            )
