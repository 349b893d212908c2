"""A cache layer: one kind of cached work with its own TTLs, over the shared L1 and L2.

The layer is the edge of every read and write: it names the key, serves an
L1 hit in its own frame, and resolves once per call what steers the call (a
tape, a directive, a cache not started yet). The rest of a read is the read
path's (``reads``: L1 → L2 → in-process single-flight → fleet-wide lease →
loader → L2 fill → L1 fill, through ``loading``); what both do to an entry
(name, seal, open, keep in L1) is ``entries``'. Backend trouble is a miss or
a dropped write (fail-open) unless the cache is strict.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aiotoolcache import control
from aiotoolcache.codec import Codec, Envelope
from aiotoolcache.coherence import Coherence
from aiotoolcache.entries import MISSING, LayerEntries
from aiotoolcache.errors import CachedLoaderError, NotCached
from aiotoolcache.keys import KeyRef
from aiotoolcache.layers import LayerConfig
from aiotoolcache.loaders import Loader, ShouldCache
from aiotoolcache.loading import LoadCoordinator
from aiotoolcache.reads import DEAF, ReadPath
from aiotoolcache.stats import LayerCounters
from aiotoolcache.tier import SharedTier

if TYPE_CHECKING:
    from aiotoolcache.cassette import Cassette

__all__ = ["MISSING", "Layer", "Loader", "ShouldCache"]

T = TypeVar("T")
# Keys whose entry names a layer remembers (per generation set): hot keys repeat, and
# naming an entry (digest + key name) costs more than the L1 hit itself.
REF_MEMO_SIZE = 4096


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
        self.namespace = namespace
        self.strict = strict
        self.entries = LayerEntries(
            name,
            config,
            namespace=namespace,
            coherence=coherence,
            tier=tier,
            codec=codec,
            rng=rng,
            strict=strict,
        )
        self.counters: LayerCounters = self.entries.counters
        self._reads = ReadPath(self.entries, coherence=coherence, tier=tier, loads=loads)
        self._coherence = coherence
        self._tier = tier
        self._ready = ready
        self._refs: dict[Hashable, KeyRef] = {}  # see REF_MEMO_SIZE
        self._refs_version = -1  # the bus's generations version the memo was built under

    def __repr__(self) -> str:
        return f"<Layer {self.name} ttl={self.config.ttl}s>"

    @property
    def config(self) -> LayerConfig:
        return self.entries.config

    @config.setter
    def config(self, config: LayerConfig) -> None:
        self.entries.config = config

    # -- keys -------------------------------------------------------------------
    def ref(self, key: Any, partition: str | None = None, label: str | None = None) -> KeyRef:
        """Return the resolved entry of ``key`` under the current generations.

        Passing the returned KeyRef as the key of a later call skips hashing
        the key again (its partition and label are part of it already).
        """
        if type(key) is str and partition is None and label is None:
            if self._coherence.bus.version == self._refs_version:
                ref = self._refs.get(key)
                if ref is not None:
                    return ref
            return self.remembered_ref(key, lambda: key)
        return self.entries.name_of(key, partition, label)

    def remembered_ref(
        self,
        memo: Hashable,
        key: Callable[[], Any],
        partition: str | None = None,
        label: str | None = None,
    ) -> KeyRef:
        """``ref(key(), partition, label)``, remembered under ``memo`` while the generations
        stay the same.

        ``memo`` must tell apart every (key, partition, label) it stands for: equal memos,
        equal entries (a plain str key is its own memo; see ``keys.scalar_memo``).
        """
        version = self._coherence.bus.version
        if version != self._refs_version:
            self._refs.clear()  # named under older generations
            self._refs_version = version
        ref = self._refs.get(memo)
        if ref is None:
            if len(self._refs) >= REF_MEMO_SIZE:
                self._refs.clear()
            ref = self._refs[memo] = self.entries.name_of(key(), partition, label)
        return ref

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

    async def _start_up(self) -> bool:
        """Start the cache if it is not (raises CacheClosed after aclose); True once the
        generations are known, so cached data may be read and written."""
        await self._ready()
        return self._coherence.known

    # -- reads --------------------------------------------------------------------
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
            entry = coherence.l1_entry(ref.value_key) if self.entries.config.l1 else None
            if entry is not None and entry.plain:
                self.counters.l1_hits += 1
                if time.time() >= entry.quiet_until:
                    # Only then may it need a refresh (see maybe_refresh): no call otherwise.
                    self._reads.maybe_refresh(ref, entry.envelope, loader, ttl, tags, should_cache)
                hit: T = entry.value  # typed without a call: this is the hottest line
                return hit
            return await self._reads.read(ref, entry, loader, ttl, tags, should_cache)
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
        """``get_or_load`` off the plain path: a cassette, a directive, or not started yet.

        Each is resolved here, once per call, before the read path runs.
        """
        if self.cassette is not None:  # the tape answers, before L1 and L2: see cassette.py
            return await self.cassette.through(self, key, loader, partition)
        directive = control.DIRECTIVE.get()
        if directive is not None:
            return await self._directed_load(
                directive, key, loader, ttl, tags, partition, label, should_cache
            )
        coherence = self._coherence
        if not coherence.ready and not await self._start_up():
            # Keys embed generations not known yet: nothing cached may be served or stored.
            self.counters.misses += 1
            value, _ = await self.entries.run_loader(loader)
            return value
        ref = self.ref(key, partition, label)
        entry = coherence.l1_entry(ref.value_key) if self.entries.config.l1 else None
        return await self._reads.read(ref, entry, loader, ttl, tags, should_cache)

    async def _directed_load(
        self,
        directive: control.CacheDirective,
        key: Any,
        loader: Loader[T],
        ttl: float | None,
        tags: Iterable[str] | None,
        partition: str | None,
        label: str | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """``get_or_load`` under ``directive`` (see ``control`` for what each mode does)."""
        if directive.mode == "bypass":
            value, _ = await self.entries.run_loader(loader)
            return value
        if directive.reads:
            cached, envelope, from_l1 = await self.peek(key, partition, label)
            if envelope is not None and directive.usable(envelope, time.time()):
                if cached is not MISSING:
                    self._reads.count(cached, from_l1)
                    if isinstance(cached, CachedLoaderError):
                        raise cached
                    return cast(T, cached)
            if not directive.loads:
                raise NotCached(f"no usable entry in layer {self.name!r} (only-if-cached)")
            if envelope is None and directive.mode is None:
                # Nothing cached at all: the ordinary path, with its single-flight and lease.
                return await self._undirected(
                    key, loader, ttl, tags, partition, label, should_cache
                )
        self.counters.misses += 1
        value, _ = await self.entries.run_loader(loader)
        if directive.stores:
            if should_cache is None or should_cache(value):
                await self.set(key, value, ttl, tags=tags, partition=partition, label=label)
            else:
                self.counters.skipped_writes += 1
        return value

    async def _directed_get_many(
        self,
        directive: control.CacheDirective,
        keys: Sequence[Any],
        default: Any,
        partition: str | None,
        label: str | None,
    ) -> list[Any]:
        """``get_many`` under ``directive``: entries too old (or not to be read) are missing."""
        if not directive.reads:
            return [default] * len(keys)
        now = time.time()
        values: list[Any] = []
        for key in keys:
            cached, envelope, _ = await self.peek(key, partition, label)
            usable = envelope is not None and directive.usable(envelope, now)
            if not usable or cached is MISSING or isinstance(cached, CachedLoaderError):
                cached = default
            values.append(cached)
        return values

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
        """Return the cached value of ``key`` (stale values included), or ``default``.

        A negatively cached loader failure reads as ``default`` here.
        """
        coherence = self._coherence
        if not (coherence.ready and control.DIRECTIVE.get() is None):
            [value] = await self.get_many([key], default, partition=partition, label=label)
            return value
        ref = self.ref(key, partition, label)
        entry = coherence.l1_entry(ref.value_key) if self.entries.config.l1 else None
        if entry is not None and entry.plain:
            self.counters.l1_hits += 1
            return entry.value
        _, value, _, from_l1 = await self._reads.lookup(ref, entry)
        self._reads.count(value, from_l1)
        return self._readable(value, default)

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
            return await self._directed_get_many(directive, keys, default, partition, label)
        if not (self._coherence.ready or await self._start_up()):
            # Keys embed generations not known yet: nothing cached can be vouched for.
            self.counters.misses += len(keys)
            return [default] * len(keys)
        values = await self._reads.lookup_many([self.ref(key, partition, label) for key in keys])
        return [self._readable(value, default) for value in values]

    def _readable(self, value: Any, default: Any) -> Any:
        """What ``get`` returns for a looked-up value: ``default`` for none, a deaf bus or
        a cached failure."""
        if value is MISSING or value is DEAF or isinstance(value, CachedLoaderError):
            return default
        return self._reads.served(value)

    async def peek(
        self, key: Any, partition: str | None = None, label: str | None = None
    ) -> tuple[Any, Envelope | None, bool]:
        """Return ``(value, envelope, from_l1)`` of ``key``'s entry, ``(MISSING, None, False)``
        when there is none that may be served; never loads, refreshes or counts.

        The key is named only once the cache has started (a name built earlier
        may embed generations older than Redis's).
        """
        coherence = self._coherence
        if not (coherence.ready or await self._start_up()):
            return MISSING, None, False
        ref = self.ref(key, partition, label)
        entry = coherence.l1_entry(ref.value_key) if self.entries.config.l1 else None
        _, value, envelope, from_l1 = await self._reads.lookup(ref, entry)
        if value is DEAF:
            return MISSING, None, False
        if self.config.copy_on_read and value is not MISSING:
            value = copy.deepcopy(value)  # a directed read hands out copies too
        return value, envelope, from_l1

    # -- writes -------------------------------------------------------------------
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
            sealed = self.entries.seal(ref, value, ttl, seen, 0.0)
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
                value = self.entries.decode(ref, envelope)
                if value is not MISSING:
                    self.entries.keep_in_l1(ref, value, envelope, fill, len(data))
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
