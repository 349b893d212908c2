"""A cache layer: one kind of cached work with its own TTLs, over the shared L1 and L2.

The read path (``get_or_load``): key digest → L1 → in-process single-flight →
L2 → fleet-wide lease → loader → L2 fill → L1 fill. Backend trouble is a miss
or a dropped write (fail-open) unless the cache is strict.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from aiotoolcache import control
from aiotoolcache.codec import Codec, CorruptValue, Envelope, ForeignSecret
from aiotoolcache.coherence import Coherence, L1Entry
from aiotoolcache.decorators import require_async_loader
from aiotoolcache.errors import (
    CachedLoaderError,
    UnserializableValue,
    ValueTooLarge,
)
from aiotoolcache.fills import Fill
from aiotoolcache.freshness import Freshness, classify, jittered, quiet_until
from aiotoolcache.keys import KeyRef, digest, generation_scope, sanitize_label
from aiotoolcache.layers import LayerConfig, value_limit
from aiotoolcache.lease import is_marker
from aiotoolcache.stats import LayerCounters
from aiotoolcache.tier import SharedTier

if TYPE_CHECKING:
    from aiotoolcache.cassette import Cassette
    from aiotoolcache.loading import LoadCoordinator

__all__ = ["Layer"]

T = TypeVar("T")
Loader = Callable[[], Awaitable[T]]
ShouldCache = Callable[[Any], bool]
log = logging.getLogger("aiotoolcache.cache")
# Labels repeat (tool names): sanitise each once.
_label = functools.lru_cache(maxsize=4096)(sanitize_label)
# Plain string keys whose entry names a layer remembers (per generation set): hot keys
# repeat, and naming an entry (digest + key name) costs more than the L1 hit itself.
REF_MEMO_SIZE = 4096


class _Missing:
    __slots__ = ()


MISSING: Final = _Missing()


class Layer:
    """Layer caches one kind of work (discovery, search, results…) under its own policy.

    Keys are any JSON-able value; ``partition`` (a tenant or auth principal)
    is folded into the key so partitions never see each other's entries;
    ``label`` is a short hint shown in the Redis key name (a tool name, never
    argument values) and must be the same for writes and reads of an entry.
    Values in L1 are shared between callers and must not be mutated (as with
    ``functools.lru_cache``); ``LayerConfig(copy_on_read=True)`` hands out copies.
    """

    def __init__(
        self,
        name: str,
        config: LayerConfig,
        *,
        namespace: str,
        coherence: Coherence,
        tier: SharedTier,
        loads: LoadCoordinator,
        codec: Codec,
        ready: Callable[[], Awaitable[None]],
        rng: random.Random,
        strict: bool = False,
        cassette: Cassette | None = None,
    ) -> None:
        self.name = name
        self.cassette = cassette  # record/replay: the tape answers, nothing is cached
        self.config = config
        self.counters = LayerCounters()
        self.namespace = namespace
        self.strict = strict
        self._coherence = coherence
        self._tier = tier
        self._loads = loads
        self._codec = codec
        self._ready = ready
        self._rng = rng
        self._layer_field = f"layer:{name}"
        self._refs: dict[str, KeyRef] = {}  # see REF_MEMO_SIZE
        self._refs_version = -1  # the bus's generations version the memo was built under

    def __repr__(self) -> str:
        return f"<Layer {self.name} ttl={self.config.ttl}s>"

    # -- keys -------------------------------------------------------------------
    def ref(self, key: Any, partition: str | None = None, label: str | None = None) -> KeyRef:
        """Return the resolved entry of ``key`` under the current generations.

        Passing the returned KeyRef as the key of a later call skips hashing
        the key again (its partition and label are part of it already).
        """
        if type(key) is str and partition is None and label is None:
            version = self._coherence.bus.version
            if version != self._refs_version:
                self._refs.clear()  # named under older generations
                self._refs_version = version
            ref = self._refs.get(key)
            if ref is None:
                if len(self._refs) >= REF_MEMO_SIZE:
                    self._refs.clear()
                ref = self._refs[key] = self._build_ref(key, None, None)
            return ref
        return self._build_ref(key, partition, label)

    def _build_ref(self, key: Any, partition: str | None, label: str | None) -> KeyRef:
        generation = self._coherence.bus.generation
        scope = generation_scope(generation("ns"), generation(self._layer_field))
        if isinstance(key, KeyRef):
            if key.generation == scope and key.layer == self.name:
                return key
            return KeyRef.build(self.namespace, self.name, scope, key.label, key.digest)
        return KeyRef.build(self.namespace, self.name, scope, _label(label), digest(key, partition))

    def _shadows(self, refs: Sequence[KeyRef]) -> list[KeyRef]:
        """The entries of ``refs`` under the generations Redis holds, when this worker's run
        ahead of them (see ``Coherence.names``): the other workers still read those, so a
        write or delete must reach them too."""
        names = self._coherence.names
        return [shadow for ref in refs for shadow in names(self.namespace, ref)[1:]]

    async def _writable(self) -> bool:
        """Start the cache if it is not; True once keys built now name the entries the other
        workers read (``Coherence.generations_current``), so a write or delete reaches them."""
        if not self._coherence.ready:
            await self._ready()
        return await self._coherence.generations_current()

    # -- public API -----------------------------------------------------------------
    async def get_or_load(
        self,
        key: Any,
        loader: Loader[T],
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        partition: str | None = None,
        label: str | None = None,
        should_cache: ShouldCache | None = None,
    ) -> T:
        """Return the cached value of ``key``, or run ``loader`` once (fleet-wide) and cache it.

        Concurrent misses of one key share one load; the loader's exception
        reaches every waiter and is not cached. When ``should_cache(value)``
        is False the value is returned but not stored. Backend failures never
        reach the caller unless the cache is strict. Inside ``cache_control``
        the directive decides what is read, loaded and stored.
        """
        coherence = self._coherence
        if coherence.ready and self.cassette is None and control.DIRECTIVE.get() is None:
            # The plain path: this layer's tiers answer. The L1 hit stays in this frame.
            ref = self.ref(key, partition, label)
            entry = coherence.l1_entry(ref.value_key) if self.config.l1 else None
            if entry is not None and entry.plain:
                self.counters.l1_hits += 1
                if time.time() >= entry.quiet_until:
                    # Only then may it need a refresh (see _maybe_refresh): no call otherwise.
                    self._maybe_refresh(ref, entry.envelope, loader, ttl, tags, should_cache)
                hit: T = entry.value  # typed without a call: this is the hottest line
                return hit
            return await self._read(
                ref, entry, key, loader, ttl, tags, partition, label, should_cache
            )
        return await self._get_or_load(key, loader, ttl, tags, partition, label, should_cache)

    async def _get_or_load(
        self,
        key: Any,
        loader: Loader[T],
        ttl: float | None,
        tags: Iterable[str] | None,
        partition: str | None,
        label: str | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """``get_or_load`` off the plain path: a cassette, a directive, or not started yet."""
        if self.cassette is not None:  # the tape answers, before L1 and L2: see cassette.py
            return await self.cassette.through(self, key, loader, partition)
        directive = control.DIRECTIVE.get()
        if directive is not None:
            tag_list = sorted(set(tags)) if tags else None
            return await control.directed_load(
                self,
                directive,
                key,
                loader,
                ttl,
                tag_list,
                partition,
                label,
                should_cache,
                lambda: self._undirected(key, loader, ttl, tags, partition, label, should_cache),
            )
        coherence = self._coherence
        if not coherence.ready and not await self._start_up():
            # Keys embed generations not known yet: nothing cached may be served or stored.
            self.counters.misses += 1
            value, _ = await self.run_loader(loader)
            return value
        ref = self.ref(key, partition, label)
        entry = coherence.l1_entry(ref.value_key) if self.config.l1 else None
        return await self._read(ref, entry, key, loader, ttl, tags, partition, label, should_cache)

    async def _read(
        self,
        ref: KeyRef,
        entry: L1Entry | None,
        key: Any,
        loader: Loader[T],
        ttl: float | None,
        tags: Iterable[str] | None,
        partition: str | None,
        label: str | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """Serve ``ref`` from L1 (``entry``, looked up already), else L2, else its loader."""
        coherence = self._coherence
        bus = coherence.bus
        since: float | None = None  # when set, what is read waits for proof of hearing
        version = 0
        if entry is None and not bus.hearing:
            if self.config.l1 and ref.value_key in coherence.l1:
                # L1 holds it but may serve it only once proof of hearing comes: wait for one.
                if not await bus.regain():
                    return cast(T, self._served(await self._load_deaf(ref, loader, ttl)))
                ref = self.ref(ref)  # the generations may have moved while it waited
                # Every invalidation published before this read began has been applied
                # now, so L1 may answer it (however long the loop takes to resume it).
                entry = coherence.l1_entry(ref.value_key, vouched=True)
            else:
                # Nothing in L1 to vouch for: read L2 while the proof is on its way (in a
                # burst it is in before the reads' answers, so no reader waits for it).
                since, version = bus.want_proof(), bus.version
                if since is None:  # deaf: nothing cached can be vouched for
                    return cast(T, self._served(await self._load_deaf(ref, loader, ttl)))
        if entry is not None:
            self.counters.l1_hits += 1
            self._maybe_refresh(ref, entry.envelope, loader, ttl, tags, should_cache)
            return cast(T, self._served(entry.value))
        value: Any = MISSING
        envelope = None
        if not coherence.flight.in_flight(ref.value_key):
            # Concurrent hits share one batched MGET; only a miss pays for a flight task.
            # After a lapse the read joins the next iteration's batch, which goes out
            # after the ping this read asked for: nothing of it is in flight while the
            # loop may still be busy with the spell that let the proof lapse.
            value, envelope = await self._fetch(ref, since=since)
        if since is not None:
            # Vouched for once everything published before the read began is applied,
            # if the generations did not move meanwhile; else the key may have moved too.
            if bus.proven_at < since and not await bus.proof(since):
                return cast(T, self._served(await self._load_deaf(ref, loader, ttl)))
            if bus.version != version:
                return await self._get_or_load(
                    key, loader, ttl, tags, partition, label, should_cache
                )
        if value is MISSING:  # a load that finished during the read has filled L1 by now
            value, envelope = self._filled_meanwhile(ref), None
        tag_list = sorted(set(tags)) if tags else None
        if value is not MISSING:
            return cast(T, self._hit(ref, value, envelope, loader, ttl, tag_list, should_cache))
        return await self._load_shared(ref, loader, ttl, tag_list, should_cache)

    def _hit(
        self,
        ref: KeyRef,
        value: Any,
        envelope: Envelope | None,
        loader: Loader[Any],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> Any:
        """Serve ``value`` read from L2 (``envelope`` None: L1 filled by a load meanwhile)."""
        if envelope is not None:
            self.counters.l2_hits += 1
            self._maybe_refresh(ref, envelope, loader, ttl, tags, should_cache)
        return self._served(value)

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
            self.counters.coalesced += 1
        return cast(T, self._served(value))

    async def _undirected(
        self,
        key: Any,
        loader: Loader[T],
        ttl: float | None,
        tags: Iterable[str] | None,
        partition: str | None,
        label: str | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """``get_or_load`` as if no directive were in force (a directed lookup's plain path)."""
        with control.undirected():
            return await self.get_or_load(
                key,
                loader,
                ttl,
                tags=tags,
                partition=partition,
                label=label,
                should_cache=should_cache,
            )

    async def get(
        self,
        key: Any,
        default: Any = None,
        *,
        partition: str | None = None,
        label: str | None = None,
    ) -> Any:
        """Return the cached value of ``key`` (stale values included), or ``default``."""
        [value] = await self.get_many([key], default, partition=partition, label=label)
        return value

    async def get_many(
        self,
        keys: Sequence[Any],
        default: Any = None,
        *,
        partition: str | None = None,
        label: str | None = None,
    ) -> list[Any]:
        """Return the cached value of each key (``default`` where missing), in key order.

        A negatively cached loader failure reads as ``default`` here.
        """
        directive = control.current_directive()
        if directive is not None:
            return await control.directed_get_many(self, directive, keys, default, partition, label)
        coherence = self._coherence
        if not (coherence.ready or await self._start_up()) or not (
            coherence.bus.hearing or await coherence.bus.regain()
        ):
            # Generations unknown, or deaf: nothing cached can be vouched for.
            self.counters.misses += len(keys)
            return [default] * len(keys)
        refs = [self.ref(key, partition, label) for key in keys]
        results: list[Any] = []
        for ref in refs:
            entry = self._l1_entry(ref)
            results.append(MISSING if entry is None else entry.value)
        missing = [i for i, value in enumerate(results) if value is MISSING]
        if missing:
            await self._read_into(results, missing, refs)
        return [
            default if value is MISSING or isinstance(value, CachedLoaderError) else value
            for value in results
        ]

    async def _read_into(self, results: list[Any], missing: list[int], refs: list[KeyRef]) -> None:
        """Fill ``results[i]`` for each missing index from L2 (left MISSING where absent)."""
        coherence = self._coherence
        fills = [coherence.begin(refs[i]) for i in missing]
        try:
            envelopes = await self._read_l2_many([refs[i] for i in missing])
            for i, fill, envelope in zip(missing, fills, envelopes, strict=True):
                value = MISSING if envelope is None else self.decode(refs[i], envelope)
                if value is MISSING:
                    self.counters.misses += 1
                    continue
                assert envelope is not None
                self.counters.l2_hits += 1
                self.keep_in_l1(refs[i], value, envelope, fill)
                results[i] = value
        finally:
            for fill in fills:
                coherence.end(fill)

    async def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        partition: str | None = None,
        label: str | None = None,
        settle: bool | None = None,
    ) -> None:
        """Store ``value`` for ``key`` in every tier; other workers drop their L1 copies.

        ``settle=True``: return only once no worker serves the value it replaced
        (default: the cache's ``settle_writes``).
        """
        await self.set_many(
            [(key, value)], ttl, tags=tags, partition=partition, label=label, settle=settle
        )

    async def set_many(
        self,
        items: Iterable[tuple[Any, Any]],
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        partition: str | None = None,
        label: str | None = None,
        settle: bool | None = None,
    ) -> None:
        """Store each ``(key, value)``; values that cannot be encoded are skipped and counted.

        A delete of a key that lands while its write is in flight wins in this
        worker's L1, as it may have in Redis. When the keys cannot be named under
        current generations (Redis unreachable at start, or the subscriber deaf and
        the generations unreadable), the write is queued as a delete of those
        entries, and raises BackendError in strict mode. ``settle`` as for ``set``.
        """
        items = list(items)
        directive = control.current_directive()
        if directive is not None and not directive.stores:
            return  # bypass or no-store
        coherence = self._coherence
        if not await self._writable():
            # Keys built now could name entries other workers never read: their old values
            # are dropped once the names are known (the new ones are not written then, as
            # they might overwrite a newer write).
            refs = [self.ref(key, partition, label) for key, _ in items]
            await self._tier.defer(self, refs)
            return
        seen = coherence.tag_generations(sorted(set(tags)) if tags else None)
        entries: list[tuple[KeyRef, Envelope, bytes, int]] = []
        for key, value in items:
            ref = self.ref(key, partition, label)
            sealed = self.seal(ref, value, ttl, seen, 0.0)
            if sealed is not None:
                entries.append((ref, *sealed))
        if not entries:
            return
        # A write supersedes any load in flight for the same keys.
        coherence.fills.revoke_keys(ref.value_key for ref, *_ in entries)
        fills = [coherence.begin(ref) for ref, *_ in entries]
        try:
            await self._tier.write(self, [(ref, data, ttl_ms) for ref, _, data, ttl_ms in entries])
            for fill, (ref, envelope, data, _) in zip(fills, entries, strict=True):
                value = self.decode(ref, envelope)
                if value is not MISSING:
                    self.keep_in_l1(ref, value, envelope, fill, len(data))
        finally:
            for fill in fills:
                coherence.end(fill)
        shadows = self._shadows([ref for ref, *_ in entries])
        if shadows:
            await self._tier.delete(self, shadows)  # the old value the others still read
        if coherence.settles(settle):
            await coherence.bus.settle()

    async def delete(
        self,
        key: Any,
        *,
        partition: str | None = None,
        label: str | None = None,
        settle: bool | None = None,
    ) -> None:
        """Remove ``key`` from L2 and from every worker's L1, and revoke loads in flight.

        The key is named under generations proven current (or read from Redis):
        when neither can be had, the delete waits in the outbox until its key can
        be named, and raises BackendError in strict mode. ``settle=True``: return
        only once no worker serves the deleted value (default: the cache's
        ``settle_writes``).
        """
        writable = await self._writable()
        ref = self.ref(key, partition, label)
        if not writable:
            await self._tier.defer(self, [ref])
            return
        await self._tier.delete(self, self._coherence.names(self.namespace, ref))
        if self._coherence.settles(settle):
            await self._coherence.bus.settle()

    async def _start_up(self) -> bool:
        """Start the cache if it is not (raises CacheClosed after aclose); True once the
        generations are known, so cached data may be read and written."""
        await self._ready()
        return self._coherence.known

    async def peek(
        self, key: Any, partition: str | None = None, label: str | None = None
    ) -> tuple[Any, Envelope | None, bool]:
        """Return ``(value, envelope, from_l1)`` of ``key``'s entry, ``(MISSING, None, False)``
        when there is none that may be served; never loads, refreshes or counts.

        The key is named only once the cache has started and proof of hearing is
        in: a name built earlier may embed generations older than Redis's.
        """
        coherence = self._coherence
        if not (coherence.ready or await self._start_up()):
            return MISSING, None, False
        if not (coherence.bus.hearing or await coherence.bus.regain()):
            return MISSING, None, False
        ref = self.ref(key, partition, label)
        entry = coherence.l1_entry(ref.value_key, vouched=True) if self.config.l1 else None
        if entry is not None:
            return entry.value, entry.envelope, True
        value, envelope = await self._fetch(ref)
        return value, envelope, False

    # -- L1 -----------------------------------------------------------------------
    def _l1_entry(self, ref: KeyRef) -> L1Entry | None:
        """Return the L1 entry of ``ref`` that may be served now (counted as a hit), or None."""
        if not self.config.l1:
            return None
        entry = self._coherence.l1_entry(ref.value_key)
        if entry is not None:
            self.counters.l1_hits += 1
        return entry

    def _filled_meanwhile(self, ref: KeyRef) -> Any:
        """The value a load that finished during an L2 read put in L1, or MISSING."""
        entry = self._l1_entry(ref)
        return MISSING if entry is None else entry.value

    def _served(self, value: Any) -> Any:
        """What a caller gets for a cached value: a failure raised, a copy if asked for."""
        if isinstance(value, CachedLoaderError):
            raise value
        return copy.deepcopy(value) if self.config.copy_on_read else value

    def keep_in_l1(
        self,
        ref: KeyRef,
        value: Any,
        envelope: Envelope,
        fill: Fill | None,
        size: int | None = None,
        *,
        vouched: bool = False,
    ) -> None:
        """Keep the decoded ``value`` in L1 if coherence admits it (internal: used by loads).

        ``vouched``: a proof of hearing covering the fill's start has come (see ``_fetch``).
        """
        if not self.config.l1:
            return
        hard_left = envelope.fresh_until + self.config.stale_ttl - time.time()
        lifetime = min(self.config.l1_ttl, hard_left)
        if lifetime <= 0:
            return
        if size is None:
            size = len(envelope.payload)
        meta = Envelope(  # the payload is not kept: L1 holds the decoded value
            envelope.created_at,
            envelope.fresh_until,
            envelope.load_seconds,
            envelope.tag_generations,
            b"",
            envelope.hard_until,
            envelope.negative,
        )
        plain = not self.config.copy_on_read and not isinstance(value, CachedLoaderError)
        quiet = quiet_until(envelope.fresh_until, envelope.load_seconds, self.config.beta)
        entry = L1Entry(
            value, meta, time.monotonic() + lifetime, self.name, size + 200, plain, quiet
        )
        self._coherence.keep(ref.value_key, entry, fill, vouched=vouched)

    # -- L2 -----------------------------------------------------------------------
    async def read_l2(self, ref: KeyRef) -> Envelope | None:
        """Return the valid envelope of ``ref`` in L2, or None (internal: used by loads)."""
        return (await self._read_l2_many([ref]))[0]

    async def _read_l2_many(self, refs: Sequence[KeyRef]) -> list[Envelope | None]:
        raw = await self._tier.read(self, [ref.value_key for ref in refs])
        return [
            None if data is None else self.open_raw(ref, data)
            for ref, data in zip(refs, raw, strict=True)
        ]

    def open_raw(self, ref: KeyRef, data: bytes) -> Envelope | None:
        """Return the envelope in stored bytes if it is sound and current, else None.

        A lease marker (see ``lease``) is a plain miss, and so is an entry whose
        delete waits in the outbox (every L2 read passes here, a lease request's
        reply included). Corrupt bytes are counted
        and deleted in the background: between a read and keeping its value in
        L1 there must be no await (an invalidation could slip in unseen).
        """
        if is_marker(data):
            return None  # a lease: another worker is loading this entry
        if self._tier.pending_delete(ref):
            return None  # this worker deleted it; Redis has not taken the delete yet
        try:
            envelope = self._codec.open(ref.value_key, data, max_bytes=value_limit(self.config))
        except ForeignSecret as exc:
            # Another secret signed it: a miss, left in place (a rotation is under way).
            self.counters.corrupt += 1
            self._codec.warn_foreign(ref.value_key, exc)
            return None
        except CorruptValue as exc:
            log.debug("corrupt value under %s: %s", ref.value_key, exc)
            self.counters.corrupt += 1
            self._tier.discard([ref.value_key])
            return None
        # Not current: a tag it carries was invalidated after it was written.
        return envelope if self._coherence.current(envelope) else None

    def decode(self, ref: KeyRef, envelope: Envelope) -> Any:
        """Return the value in ``envelope``, or MISSING (counted) if it does not decode."""
        try:
            return self._codec.decode(envelope, allow_errors=self.config.negative_ttl is not None)
        except CorruptValue:
            self.counters.corrupt += 1
            return MISSING

    def seal(
        self,
        ref: KeyRef,
        value: Any,
        ttl: float | None,
        tag_generations: dict[str, int] | None,
        load_seconds: float,
    ) -> tuple[Envelope, bytes, int] | None:
        """Encode ``value``; return None (counted, or raised when strict) if it cannot be stored.

        The entry carries ``tag_generations``: those seen when its load began.
        """
        try:
            payload = self._codec.encode_value(value)
            # Never above what the codec reads back: such an entry would only be a miss.
            limit = min(value_limit(self.config), self._codec.max_decoded_bytes)
            if len(payload) > limit:
                raise ValueTooLarge(f"{len(payload)} bytes exceed max_value_bytes={limit}")
        except (UnserializableValue, ValueTooLarge) as exc:
            self.counters.skipped_writes += 1
            self._codec.warn_unstorable(self.name, exc)
            if self.strict:
                raise
            return None
        fresh = jittered(self.config.ttl if ttl is None else ttl, self.config.jitter, self._rng)
        now = time.time()
        envelope = Envelope(
            now,
            now + fresh,
            load_seconds,
            tag_generations,
            payload,
            hard_until=now + fresh + self.config.stale_ttl,
            negative=isinstance(value, CachedLoaderError),
        )
        ttl_ms = int((fresh + self.config.stale_ttl) * 1000)
        return envelope, self._codec.seal(ref.value_key, envelope), ttl_ms

    # -- loading --------------------------------------------------------------------
    async def _fetch(
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
        fill = None
        if self.config.l1:
            fill = coherence.begin(ref)
        else:  # nothing read is kept: no fill to revoke
            coherence.note_use()
        try:
            try:
                data = await self._tier.read_one(ref.value_key, batched=since is not None)
            except Exception as exc:
                data = await self._tier.read_failed(self, ref.value_key, exc)
            envelope = None if data is None else self.open_raw(ref, data)
            if envelope is None:
                return MISSING, None
            value = self.decode(ref, envelope)
            if value is MISSING or fill is None:
                return value, envelope
            bus = coherence.bus
            if since is None:
                self.keep_in_l1(ref, value, envelope, fill)
            elif bus.proven_at >= since or await bus.proof(since):
                self.keep_in_l1(ref, value, envelope, fill, vouched=True)
            return value, envelope
        finally:
            if fill is not None:
                coherence.end(fill)

    async def _load_deaf(self, ref: KeyRef, loader: Loader[T], ttl: float | None) -> Any:
        """Serve ``ref`` while the bus is deaf (disconnected, or its pings unanswered): from
        the fallback store if one is configured (availability over consistency, by
        choice), else from the loader, uncached.

        The generations may be behind while deaf, so L1 and L2 could both answer
        for an entry invalidated meanwhile; neither is read nor filled.
        """
        [data] = await self._tier.read_fallback([ref.value_key])
        envelope = None if data is None else self.open_raw(ref, data)
        if envelope is not None:
            value = self.decode(ref, envelope)
            if value is not MISSING:
                self.counters.l2_hits += 1
                return value
        self.counters.misses += 1
        value, elapsed = await self.run_loader(loader)
        if self._tier.fallback is not None:
            sealed = self.seal(ref, value, ttl, None, elapsed)
            if sealed is not None:
                await self._tier.write_fallback(self, [(ref, sealed[1], sealed[2])])
        return value

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
            self.counters.misses += 1
            result = await self._loads.load(self, ref, fill, loader, ttl, should_cache, wait=True)
            return cast(T, result)
        finally:
            coherence.end(fill)

    def _maybe_refresh(
        self,
        ref: KeyRef,
        envelope: Envelope,
        loader: Loader[Any],
        ttl: float | None,
        tags: Iterable[str] | None,
        should_cache: ShouldCache | None,
    ) -> None:
        config = self.config
        now = time.time()
        if now < quiet_until(envelope.fresh_until, envelope.load_seconds, config.beta):
            return  # the common case, decided without a random draw
        state = classify(
            envelope.fresh_until, envelope.load_seconds, config.beta, now, self._rng.random()
        )
        if state is Freshness.FRESH:
            return
        if state is Freshness.STALE:
            self.counters.stale_served += 1
        tag_list = sorted(set(tags)) if tags else None
        if self._loads.start_refresh(self, ref, envelope, loader, ttl, tag_list, should_cache):
            if state is Freshness.REFRESH_EARLY:
                self.counters.early_refreshes += 1

    async def run_loader(self, loader: Loader[T]) -> tuple[T, float]:
        """Run ``loader``, counting it and measuring how long it took.

        A plain synchronous function is refused before it runs (TypeError).
        """
        require_async_loader(loader)
        started = time.perf_counter()
        try:
            value = await loader()
        except Exception:
            self.counters.load_errors += 1
            raise
        elapsed = time.perf_counter() - started
        self.counters.observe_load(elapsed)
        return value, elapsed
