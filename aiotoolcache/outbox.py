"""Invalidations that could not reach Redis, sent again until they do.

A delete, an announced write or a generation bump that fails (Redis down, a
primary failing over, the breaker open) has already taken effect in this
worker, but L2 and the other workers never heard of it: they would serve the
old value until its TTL. The outbox keeps these invalidations and replays them
in the background, backing off while Redis keeps refusing, until Redis takes
them. Until then this worker treats the keys it could not delete as absent
from L2 (``RedisStore.tombstones``), so it never reads back what it
invalidated. Replays are idempotent (a key deleted twice, a generation bumped
twice), so a batch that partly landed is simply sent again.

The outbox is bounded: past ``limit`` keys it gives up on single keys and bumps
the namespace generation instead, which invalidates everything, everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable

from aiotoolcache.errors import BackendError
from aiotoolcache.invalidation import Bus
from aiotoolcache.lease import LeaseManager
from aiotoolcache.stores.redis import RedisStore

__all__ = ["InvalidationOutbox"]

log = logging.getLogger("aiotoolcache.outbox")

# Keys announced per replayed batch.
_BATCH = 1000


class InvalidationOutbox:
    """InvalidationOutbox replays failed deletes and generation bumps until Redis takes them."""

    def __init__(
        self,
        leases: LeaseManager,
        bus: Bus,
        store: RedisStore,
        channel: str,
        *,
        limit: int = 100_000,
        min_delay: float = 0.05,
        max_delay: float = 0.25,
    ) -> None:
        self._leases = leases
        self._bus = bus
        self._store = store
        self._channel = channel
        self.limit = limit
        self.min_delay = min_delay
        self.max_delay = max_delay
        # value key -> (layer, lease key, sequence number of the latest failure)
        self._deletes: dict[str, tuple[str, str, int]] = {}
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
    def delete(self, layer: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Remember that ``(value_key, lease_key)`` pairs of ``layer`` must be deleted."""
        for value_key, lease_key in pairs:
            self._deletes[value_key] = (layer, lease_key, next(self._sequence))
            self._store.tombstones.add(value_key)
        if len(self._deletes) > self.limit:
            self._overflow()
        self._wake()

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
        self._store.tombstones.clear()
        bus = self._bus
        bus.apply({"o": bus.origin, "op": "gen", "f": "ns", "g": bus.generation("ns") + 1, "u": 1})
        self._bumps["ns"] = next(self._sequence)

    # -- replay ----------------------------------------------------------------------
    async def flush(self) -> bool:
        """Send everything pending once; True when nothing is left.

        Raises BackendError when Redis still refuses (what failed stays pending).
        """
        for field, sequence in list(self._bumps.items()):
            await self._bus.bump(field)
            if self._bumps.get(field) == sequence:
                del self._bumps[field]
            self.replayed += 1
        by_layer: dict[str, list[tuple[str, str, int]]] = {}
        for value_key, (layer, lease_key, sequence) in list(self._deletes.items()):
            by_layer.setdefault(layer, []).append((value_key, lease_key, sequence))
        for layer, entries in by_layer.items():
            for start in range(0, len(entries), _BATCH):
                batch = entries[start : start + _BATCH]
                keys = [value_key for value_key, _, _ in batch]
                message = self._bus.encode({"op": "del", "l": layer, "k": keys})
                pairs = [(value_key, lease_key) for value_key, lease_key, _ in batch]
                await self._leases.delete_many(pairs, self._channel, message)
                for value_key, _, sequence in batch:
                    # A failure recorded while this was in flight stays pending.
                    if self._deletes.get(value_key, (None, None, None))[2] == sequence:
                        del self._deletes[value_key]
                        self._store.tombstones.discard(value_key)
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
