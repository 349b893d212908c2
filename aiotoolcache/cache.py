"""A cache layer: one kind of cached work with its own TTLs, over the shared L1 and L2.

The read path (``get_or_load``): key digest → L1 → in-process single-flight →
L2 → fleet-wide lease → loader → L2 fill → L1 fill. Backend trouble is a miss
or a dropped write (fail-open) unless the cache is strict.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from aiotoolcache import control
from aiotoolcache.codec import CorruptValue, Envelope
from aiotoolcache.decorators import require_async_loader
from aiotoolcache.errors import (
    BackendError,
    CachedLoaderError,
    UnserializableValue,
    ValueTooLarge,
)
from aiotoolcache.fills import Fill
from aiotoolcache.freshness import Freshness, classify, jittered
from aiotoolcache.keys import KeyRef, digest, sanitize_label
from aiotoolcache.layers import LayerConfig
from aiotoolcache.stats import LayerCounters
from aiotoolcache.unstorable import UnstorableReport

if TYPE_CHECKING:
    from aiotoolcache.toolcache import ToolCache

__all__ = ["Layer"]

T = TypeVar("T")
Loader = Callable[[], Awaitable[T]]
ShouldCache = Callable[[Any], bool]
log = logging.getLogger("aiotoolcache.cache")


class _Missing:
    __slots__ = ()


MISSING: Final = _Missing()


class L1Entry:
    """L1Entry is one value kept in process, ready to decode without touching Redis."""

    __slots__ = ("envelope", "expires_at", "layer")

    def __init__(self, envelope: Envelope, expires_at: float, layer: str) -> None:
        self.envelope = envelope
        self.expires_at = expires_at  # time.monotonic() deadline: min(hard expiry, l1_ttl)
        self.layer = layer


class Layer:
    """Layer caches one kind of work (discovery, search, results…) under its own policy.

    Keys are any JSON-able value; ``partition`` (a tenant or auth principal)
    is folded into the key so partitions never see each other's entries;
    ``label`` is a short hint shown in the Redis key name (a tool name, never
    argument values) and must be the same for writes and reads of an entry.
    """

    def __init__(self, owner: ToolCache, name: str, config: LayerConfig) -> None:
        self.name = name
        self.config = config
        self.counters = LayerCounters()
        self._owner = owner
        self._layer_field = f"layer:{name}"
        self.unstorable = UnstorableReport()

    def __repr__(self) -> str:
        return f"<Layer {self.name} ttl={self.config.ttl}s>"

    # -- keys -------------------------------------------------------------------
    def ref(self, key: Any, partition: str | None = None, label: str | None = None) -> KeyRef:
        """Return the resolved entry of ``key`` under the current generations."""
        bus = self._owner.bus
        generation = f"g{bus.generation('ns')}.{bus.generation(self._layer_field)}"
        return KeyRef.build(
            self._owner.namespace,
            self.name,
            generation,
            sanitize_label(label),
            digest(key, partition),
        )

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
        require_async_loader(loader)
        tag_list = sorted(set(tags)) if tags else None
        # Policy hook: a cache_control directive, read once per call.
        directive = control.current_directive()
        if directive is not None:
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
                lambda: self._get_or_load(
                    key, loader, ttl, tag_list, partition, label, should_cache
                ),
            )
        return await self._get_or_load(key, loader, ttl, tag_list, partition, label, should_cache)

    async def _get_or_load(
        self,
        key: Any,
        loader: Loader[T],
        ttl: float | None,
        tag_list: list[str] | None,
        partition: str | None,
        label: str | None,
        should_cache: ShouldCache | None,
    ) -> T:
        ref = self.ref(key, partition, label)
        value = self._l1_value(ref, loader, ttl, tag_list, should_cache)
        if value is not MISSING:
            if isinstance(value, CachedLoaderError):
                raise value
            return cast(T, value)
        flight = self._owner.flight
        if not flight.in_flight(ref.value_key):
            # Concurrent hits share one batched MGET; only a miss pays for a flight task.
            value = await self._read_through(ref, loader, ttl, tag_list, should_cache)
            if value is MISSING:
                # A load that finished during the read has filled L1 by now.
                value = self._l1_value(ref, loader, ttl, tag_list, should_cache)
            if value is not MISSING:
                if isinstance(value, CachedLoaderError):
                    raise value
                return cast(T, value)
        value, shared = await flight.do(
            ref.value_key, lambda: self._load(ref, loader, ttl, tag_list, should_cache)
        )
        if shared:
            self.counters.coalesced += 1
        if isinstance(value, CachedLoaderError):
            raise value
        return cast(T, value)

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
        directive = control.current_directive()  # policy hook: cache_control
        if directive is not None:
            return await control.directed_get_many(self, directive, keys, default, partition, label)
        refs = [self.ref(key, partition, label) for key in keys]
        results: list[Any] = [self._l1_value(ref, None, None, None, None) for ref in refs]
        missing = [i for i, value in enumerate(results) if value is MISSING]
        if missing:
            await self._read_into(results, missing, refs, default)
        return [default if isinstance(v, CachedLoaderError) else v for v in results]

    async def _read_into(
        self, results: list[Any], missing: list[int], refs: list[KeyRef], default: Any
    ) -> None:
        """Fill ``results[i]`` for each missing index from L2 (``default`` where absent)."""
        fills = [self._owner.fills.begin(refs[i]) for i in missing]
        try:
            envelopes = await self._read_l2_many([refs[i] for i in missing])
            for i, fill, envelope in zip(missing, fills, envelopes, strict=True):
                value = MISSING if envelope is None else self.decode(refs[i], envelope)
                if value is MISSING:
                    self.counters.misses += 1
                    results[i] = default
                    continue
                assert envelope is not None
                self.counters.l2_hits += 1
                self.keep_in_l1(refs[i], envelope, fill)
                results[i] = value
        finally:
            for fill in fills:
                self._owner.fills.end(fill)

    async def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        partition: str | None = None,
        label: str | None = None,
    ) -> None:
        """Store ``value`` for ``key`` in every tier; other workers drop their L1 copies."""
        await self.set_many([(key, value)], ttl, tags=tags, partition=partition, label=label)

    async def set_many(
        self,
        items: Iterable[tuple[Any, Any]],
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        partition: str | None = None,
        label: str | None = None,
    ) -> None:
        """Store each ``(key, value)``; values that cannot be encoded are skipped and counted."""
        directive = control.current_directive()  # policy hook: cache_control
        if directive is not None and not directive.stores:
            return
        tag_list = sorted(set(tags)) if tags else None
        entries: list[tuple[KeyRef, Envelope, bytes, int]] = []
        for key, value in items:
            ref = self.ref(key, partition, label)
            sealed = self.seal(ref, value, ttl, tag_list, 0.0)
            if sealed is not None:
                entries.append((ref, *sealed))
        if not entries:
            return
        refs = [ref for ref, *_ in entries]
        # A write supersedes any load in flight for the same keys.
        self._owner.fills.revoke_keys(ref.value_key for ref in refs)
        await self._owner.tier.write(
            self, [(ref, data, ttl_ms) for ref, _, data, ttl_ms in entries]
        )
        for ref, envelope, _, _ in entries:
            self.keep_in_l1(ref, envelope, None)

    async def delete(
        self, key: Any, *, partition: str | None = None, label: str | None = None
    ) -> None:
        """Remove ``key`` from L2 and from every worker's L1, and revoke loads in flight."""
        await self._owner.tier.delete(self, [self.ref(key, partition, label)])

    async def peek(self, ref: KeyRef) -> tuple[Envelope | None, bool]:
        """Return ``(envelope, from_l1)`` of ``ref``'s entry; never loads or refreshes."""
        entry = self._owner.l1.get(ref.value_key) if self.config.l1 else None
        if (
            entry is not None
            and entry.expires_at > time.monotonic()
            and self._owner.tags_current(entry.envelope)
        ):
            return entry.envelope, True
        return await self.read_l2(ref), False

    # -- L1 -----------------------------------------------------------------------
    def _l1_value(
        self,
        ref: KeyRef,
        loader: Loader[Any] | None,
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> Any:
        if not self.config.l1:
            return MISSING
        l1 = self._owner.l1
        entry = l1.get(ref.value_key)
        if entry is None:
            return MISSING
        envelope = entry.envelope
        if entry.expires_at <= time.monotonic() or not self._owner.tags_current(envelope):
            l1.pop(ref.value_key)
            return MISSING
        value = self.decode(ref, envelope)
        if value is MISSING:
            l1.pop(ref.value_key)
            return MISSING
        self.counters.l1_hits += 1
        if loader is not None:
            self._maybe_refresh(ref, envelope, loader, ttl, tags, should_cache)
        return value

    def keep_in_l1(self, ref: KeyRef, envelope: Envelope, fill: Fill | None) -> None:
        """Put ``envelope`` in L1 unless the fill was revoked (internal: used by loads)."""
        if not self.config.l1 or (fill is not None and fill.revoked):
            return
        hard_left = envelope.fresh_until + self.config.stale_ttl - time.time()
        lifetime = min(self.config.l1_ttl, hard_left)
        if lifetime <= 0:
            return
        entry = L1Entry(envelope, time.monotonic() + lifetime, self.name)
        self._owner.l1.put(ref.value_key, entry, len(envelope.payload) + len(ref.value_key) + 200)

    # -- L2 -----------------------------------------------------------------------
    async def read_l2(self, ref: KeyRef) -> Envelope | None:
        """Return the valid envelope of ``ref`` in L2, or None (internal: used by loads)."""
        return (await self._read_l2_many([ref]))[0]

    async def _read_l2_many(self, refs: Sequence[KeyRef]) -> list[Envelope | None]:
        raw = await self._owner.tier.read(self, [ref.value_key for ref in refs])
        envelopes: list[Envelope | None] = []
        corrupt: list[KeyRef] = []
        for ref, data in zip(refs, raw, strict=True):
            envelope = None
            if data is not None:
                try:
                    envelope = self._owner.codec.open(ref.value_key, data)
                except CorruptValue as exc:
                    log.debug("corrupt value under %s: %s", ref.value_key, exc)
                    self.counters.corrupt += 1
                    corrupt.append(ref)
            if envelope is not None and not self._owner.tags_current(envelope):
                envelope = None  # a tag it carries was invalidated after it was written
            envelopes.append(envelope)
        if corrupt:
            with contextlib.suppress(BackendError):
                await self._owner.store.delete_many([ref.value_key for ref in corrupt])
        return envelopes

    def decode(self, ref: KeyRef, envelope: Envelope) -> Any:
        """Return the value in ``envelope``, or MISSING (counted) if it does not decode."""
        try:
            return self._owner.codec.decode_value(envelope.payload)
        except CorruptValue:
            self.counters.corrupt += 1
            return MISSING

    def seal(
        self,
        ref: KeyRef,
        value: Any,
        ttl: float | None,
        tags: list[str] | None,
        load_seconds: float,
    ) -> tuple[Envelope, bytes, int] | None:
        """Encode ``value``; return None (counted, or raised when strict) if it cannot be stored."""
        owner = self._owner
        try:
            payload = owner.codec.encode_value(value)
            if len(payload) > self.config.max_value_bytes:
                raise ValueTooLarge(
                    f"{len(payload)} bytes exceed max_value_bytes={self.config.max_value_bytes}"
                )
        except (UnserializableValue, ValueTooLarge) as exc:
            self.counters.skipped_writes += 1
            self.unstorable(self.name, value, exc, owner.codec)  # one WARNING per type
            if owner.strict:
                raise
            return None
        fresh = jittered(self.config.ttl if ttl is None else ttl, self.config.jitter, owner.rng)
        now = time.time()
        tag_generations = (
            {tag: owner.bus.generation(f"tag:{tag}") for tag in tags} if tags else None
        )
        envelope = Envelope(now, now + fresh, load_seconds, tag_generations, payload)
        ttl_ms = int((fresh + self.config.stale_ttl) * 1000)
        return envelope, owner.codec.seal(ref.value_key, envelope), ttl_ms

    # -- loading --------------------------------------------------------------------
    async def _read_through(
        self,
        ref: KeyRef,
        loader: Loader[Any],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> Any:
        """Return the value of ``ref`` in L2 (keeping it in L1), or MISSING."""
        fill = self._owner.fills.begin(ref)
        try:
            envelope = await self.read_l2(ref)
            value = MISSING if envelope is None else self.decode(ref, envelope)
            if value is not MISSING:
                assert envelope is not None
                self.counters.l2_hits += 1
                self.keep_in_l1(ref, envelope, fill)
                self._maybe_refresh(ref, envelope, loader, ttl, tags, should_cache)
            return value
        finally:
            self._owner.fills.end(fill)

    async def _load(
        self,
        ref: KeyRef,
        loader: Loader[T],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> T:
        """Load ``ref`` under its lease; run once per key in this process (single-flight)."""
        fill = self._owner.fills.begin(ref)
        try:
            self.counters.misses += 1
            result = await self._owner.loads.load(
                self, ref, fill, loader, ttl, tags, should_cache, wait=True
            )
            return cast(T, result)
        finally:
            self._owner.fills.end(fill)

    def _maybe_refresh(
        self,
        ref: KeyRef,
        envelope: Envelope,
        loader: Loader[Any],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> None:
        config = self.config
        now = time.time()
        if config.beta <= 0 and now < envelope.fresh_until:
            return  # the common case, decided without a random draw
        state = classify(
            envelope.fresh_until, envelope.load_seconds, config.beta, now, self._owner.rng.random()
        )
        if state is Freshness.FRESH:
            return
        if state is Freshness.STALE:
            self.counters.stale_served += 1
        loads = self._owner.loads
        if loads.start_refresh(self, ref, envelope, loader, ttl, tags, should_cache):
            if state is Freshness.REFRESH_EARLY:
                self.counters.early_refreshes += 1

    async def run_loader(self, loader: Loader[T]) -> tuple[T, float]:
        """Run ``loader``, counting it and measuring how long it took."""
        started = time.perf_counter()
        try:
            value = await loader()
        except Exception:
            self.counters.load_errors += 1
            raise
        elapsed = time.perf_counter() - started
        self.counters.observe_load(elapsed)
        return value, elapsed
