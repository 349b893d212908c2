"""The read path shared by every public read: L1, then L2, then (for a loading read) the load.

``Layer.get_or_load``, ``get``, ``get_many`` and ``peek`` (and through them
``call_tool``, ``@cached`` functions and every integration) name their keys,
try L1 in their own frame, and come here for the rest. What may be served
follows one rule everywhere: an L1 entry only while the bus has proven lately
that it hears (else once a proof comes), and an L2 value read after a lapse of
that proof only once a proof covering the read's start has come. The read
goes out alongside the ping that asks for that proof, so no reader waits for
its proof before reading (``Bus.want_proof``).

Data flows one way: this module calls the load path (``loading``), the
entries (``entries``: names, codec, L1) and the shared tier, never back up.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from aiotoolcache.codec import Envelope
from aiotoolcache.coherence import Coherence, L1Entry
from aiotoolcache.entries import MISSING, LayerEntries
from aiotoolcache.errors import CachedLoaderError
from aiotoolcache.freshness import Freshness, classify, quiet_until
from aiotoolcache.keys import KeyRef
from aiotoolcache.loaders import Loader, ShouldCache
from aiotoolcache.loading import LoadCoordinator
from aiotoolcache.tier import SharedTier

__all__ = ["DEAF", "ReadPath"]

T = TypeVar("T")


class _Deaf:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEAF"


DEAF = _Deaf()
"""What a lookup returns when nothing cached can be vouched for (the bus is deaf)."""


class ReadPath:
    """ReadPath serves one layer's reads from L1, L2 and, on a miss, its loader."""

    def __init__(
        self,
        entries: LayerEntries,
        *,
        coherence: Coherence,
        tier: SharedTier,
        loads: LoadCoordinator,
    ) -> None:
        self.entries = entries
        self._coherence = coherence
        self._tier = tier
        self._loads = loads

    # -- lookups (no loader) ------------------------------------------------------
    async def lookup(
        self, ref: KeyRef, entry: L1Entry | None, *, joins_loads: bool = False
    ) -> tuple[KeyRef, Any, Envelope | None, bool]:
        """Find what may be served for ``ref`` (its L1 ``entry`` looked up already).

        Returns ``(ref, value, envelope, from_l1)``, counting nothing: ``ref``
        renamed if the generations moved while it read; ``value`` MISSING when
        there is none, DEAF when nothing cached can be vouched for; ``envelope``
        the entry's (None for a value a load in this process put in L1 meanwhile).
        ``joins_loads``: a key being loaded in this process is not read from L2
        (the caller joins the load instead).
        """
        coherence = self._coherence
        entries = self.entries
        bus = coherence.bus
        l1 = entries.config.l1
        while True:
            since: float | None = None  # when set, what is read waits for proof of hearing
            version = 0
            if entry is None and not bus.hearing:
                if l1 and ref.value_key in coherence.l1:
                    # L1 holds it but may serve it only once proof of hearing comes.
                    if not await bus.regain():
                        return ref, DEAF, None, False
                    ref = entries.name_of(ref, None, None)  # the generations may have moved
                    # Every invalidation published before this read began has been applied
                    # now, so L1 may answer it (however long the loop takes to resume it).
                    entry = coherence.l1_entry(ref.value_key, vouched=True)
                else:
                    # Nothing in L1 to vouch for: read L2 while the proof is on its way (in a
                    # burst it is in before the reads' answers, so no reader waits for it).
                    since, version = bus.want_proof(), bus.version
                    if since is None:
                        return ref, DEAF, None, False
            if entry is not None:
                return ref, entry.value, entry.envelope, True
            value: Any = MISSING
            envelope = None
            if not (joins_loads and coherence.flight.in_flight(ref.value_key)):
                # Concurrent hits share one batched MGET; only a miss pays for a flight
                # task. After a lapse the read joins the next iteration's batch, which
                # goes out after the ping this read asked for.
                value, envelope = await self.fetch(ref, since=since)
            if since is not None:
                # Vouched for once everything published before the read began is applied,
                # if the generations did not move meanwhile; else the key may have moved too.
                if bus.proven_at < since and not await bus.proof(since):
                    return ref, DEAF, None, False
                if bus.version != version:
                    ref = entries.name_of(ref, None, None)
                    entry = coherence.l1_entry(ref.value_key) if l1 else None
                    continue
            if value is not MISSING:
                return ref, value, envelope, False
            # A load that finished during the read has filled L1 by now.
            entry = coherence.l1_entry(ref.value_key) if l1 else None
            if entry is None:
                return ref, MISSING, envelope, False
            return ref, entry.value, None, True

    async def lookup_many(self, refs: list[KeyRef]) -> list[Any]:
        """What may be served for each of ``refs`` (MISSING where none), L2 read in one batch.

        All DEAF when nothing cached can be vouched for. When the generations move
        while it reads after a lapse, the keys are renamed and read again.
        """
        coherence = self._coherence
        entries = self.entries
        bus = coherence.bus
        l1 = entries.config.l1
        while True:
            since: float | None = None
            version = 0
            vouched = False  # a proof came after this read began: L1 may answer regardless
            if not bus.hearing:
                if l1 and any(ref.value_key in coherence.l1 for ref in refs):
                    if not await bus.regain():
                        return self._deaf(refs)
                    refs = [entries.name_of(ref, None, None) for ref in refs]
                    vouched = True
                else:
                    since, version = bus.want_proof(), bus.version
                    if since is None:
                        return self._deaf(refs)
            results: list[Any] = []
            for ref in refs:
                entry = coherence.l1_entry(ref.value_key, vouched=vouched) if l1 else None
                if entry is not None:
                    entries.counters.l1_hits += 1
                results.append(MISSING if entry is None else entry.value)
            missing = [i for i, value in enumerate(results) if value is MISSING]
            if missing and not await self._read_into(results, missing, refs, since):
                return self._deaf(refs)
            if since is not None and bus.version != version:
                refs = [entries.name_of(ref, None, None) for ref in refs]
                continue
            return results

    def _deaf(self, refs: list[KeyRef]) -> list[Any]:
        """``lookup_many``'s answer when nothing cached can be vouched for: all misses."""
        self.entries.counters.misses += len(refs)
        return [DEAF] * len(refs)

    def count(self, value: Any, from_l1: bool) -> None:
        """Count what ``lookup`` found: an L1 or an L2 hit, or a miss (none, or deaf)."""
        counters = self.entries.counters
        if value is MISSING or value is DEAF:
            counters.misses += 1
        elif from_l1:
            counters.l1_hits += 1
        else:
            counters.l2_hits += 1

    async def _read_into(
        self, results: list[Any], missing: list[int], refs: list[KeyRef], since: float | None
    ) -> bool:
        """Fill ``results[i]`` for each missing index from L2 (left MISSING where absent).

        False when the read began after a lapse of proof and no proof covering it came.
        """
        coherence = self._coherence
        entries = self.entries
        bus = coherence.bus
        fills = [coherence.begin(refs[i]) for i in missing]
        try:
            envelopes = await entries.read_l2_many([refs[i] for i in missing])
            if since is not None and bus.proven_at < since and not await bus.proof(since):
                return False
            for i, fill, envelope in zip(missing, fills, envelopes, strict=True):
                value = MISSING if envelope is None else entries.decode(refs[i], envelope)
                if value is MISSING:
                    entries.counters.misses += 1
                    continue
                assert envelope is not None
                entries.counters.l2_hits += 1
                entries.keep_in_l1(refs[i], value, envelope, fill, vouched=since is not None)
                results[i] = value
            return True
        finally:
            for fill in fills:
                coherence.end(fill)

    async def fetch(
        self, ref: KeyRef, *, since: float | None = None
    ) -> tuple[Any, Envelope | None]:
        """Read ``ref`` from L2 and keep its value in L1 if coherence admits it.

        ``since``: the read began after a lapse of proof of hearing. It joins the next
        batch (see ``SharedTier.read_one``), and what it read enters L1 once a proof
        covering ``since`` has come, with its fill still open: an invalidation applied
        before that proof revokes it, one applied after finds the entry in L1. Which of
        the two connections answers first, the read's or the ping's, does not matter.

        Returns ``(value, envelope)``; ``(MISSING, None)`` when absent, and
        ``(MISSING, envelope)`` when the stored value does not decode.
        """
        coherence = self._coherence
        entries = self.entries
        fill = None
        if entries.config.l1:
            fill = coherence.begin(ref)
        else:  # nothing read is kept: no fill to revoke
            coherence.note_use()
        try:
            try:
                data = await self._tier.read_one(ref.value_key, batched=since is not None)
            except Exception as exc:
                data = await self._tier.read_failed(entries, ref.value_key, exc)
            envelope = None if data is None else entries.open_raw(ref, data)
            if envelope is None:
                return MISSING, None
            value = entries.decode(ref, envelope)
            if value is MISSING or fill is None:
                return value, envelope
            bus = coherence.bus
            if since is None:
                entries.keep_in_l1(ref, value, envelope, fill)
            elif bus.proven_at >= since or await bus.proof(since):
                entries.keep_in_l1(ref, value, envelope, fill, vouched=True)
            return value, envelope
        finally:
            if fill is not None:
                coherence.end(fill)

    def served(self, value: Any) -> Any:
        """What a caller gets for a cached value: a failure raised, a copy if asked for."""
        if isinstance(value, CachedLoaderError):
            raise value
        return copy.deepcopy(value) if self.entries.config.copy_on_read else value

    # -- loading reads ------------------------------------------------------------
    async def read(
        self,
        ref: KeyRef,
        entry: L1Entry | None,
        loader: Loader[T],
        ttl: float | None,
        tags: Iterable[str] | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """Serve ``ref`` from L1 (``entry``, looked up already), else L2, else its loader."""
        ref, value, envelope, from_l1 = await self.lookup(ref, entry, joins_loads=True)
        if value is DEAF:
            return cast(T, self.served(await self.load_deaf(ref, loader, ttl)))
        if value is not MISSING:
            self.count(value, from_l1)
            if envelope is not None:
                self.maybe_refresh(ref, envelope, loader, ttl, tags, should_cache)
            return cast(T, self.served(value))
        tag_list = sorted(set(tags)) if tags else None
        return await self._load_shared(ref, loader, ttl, tag_list, should_cache)

    async def _load_shared(
        self,
        ref: KeyRef,
        loader: Loader[T],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """Load ``ref`` once for every concurrent caller in this process (and, under its
        lease, once in the fleet)."""
        value, shared = await self._coherence.flight.do(
            ref.value_key, lambda: self._load(ref, loader, ttl, tags, should_cache)
        )
        if shared:
            self.entries.counters.coalesced += 1
        return cast(T, self.served(value))

    async def _load(
        self,
        ref: KeyRef,
        loader: Loader[T],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """Load ``ref`` under its lease; run once per key in this process (single-flight)."""
        coherence = self._coherence
        fill = coherence.begin(ref, tags)
        try:
            self.entries.counters.misses += 1
            result = await self._loads.load(
                self.entries, ref, fill, loader, ttl, should_cache, wait=True
            )
            return cast(T, result)
        finally:
            coherence.end(fill)

    async def load_deaf(self, ref: KeyRef, loader: Loader[T], ttl: float | None) -> Any:
        """Serve ``ref`` while the bus is deaf (disconnected, or its pings unanswered): from
        the fallback store if one is configured (availability over consistency, by
        choice), else from the loader, uncached.

        The generations may be behind while deaf, so L1 and L2 could both answer
        for an entry invalidated meanwhile; neither is read nor filled.
        """
        entries = self.entries
        [data] = await self._tier.read_fallback([ref.value_key])
        envelope = None if data is None else entries.open_raw(ref, data)
        if envelope is not None:
            value = entries.decode(ref, envelope)
            if value is not MISSING:
                entries.counters.l2_hits += 1
                return value
        entries.counters.misses += 1
        value, elapsed = await entries.run_loader(loader)
        if self._tier.fallback is not None:
            sealed = entries.seal(ref, value, ttl, None, elapsed)
            if sealed is not None:
                await self._tier.write_fallback(entries, [(ref, sealed[1], sealed[2])])
        return value

    def maybe_refresh(
        self,
        ref: KeyRef,
        envelope: Envelope,
        loader: Loader[Any],
        ttl: float | None,
        tags: Iterable[str] | None,
        should_cache: ShouldCache | None,
    ) -> None:
        """Start a background refresh of an entry being served if it is due for one."""
        config = self.entries.config
        now = time.time()
        if now < quiet_until(envelope.fresh_until, envelope.load_seconds, config.beta):
            return  # the common case, decided without a random draw
        state = classify(
            envelope.fresh_until,
            envelope.load_seconds,
            config.beta,
            now,
            self.entries.rng.random(),
        )
        if state is Freshness.FRESH:
            return
        counters = self.entries.counters
        if state is Freshness.STALE:
            counters.stale_served += 1
        tag_list = sorted(set(tags)) if tags else None
        if self._loads.start_refresh(
            self.entries, ref, envelope, loader, ttl, tag_list, should_cache
        ):
            if state is Freshness.REFRESH_EARLY:
                counters.early_refreshes += 1
