"""A layer's entries: how a key is named, how a value is sealed into stored bytes and
opened again, and how a decoded value enters L1.

The read path (``reads``) and the load path (``loading``) both work on entries
through this one object, so neither calls back into the layer above them.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from aiotoolcache.codec import Codec, CorruptValue, Envelope, ForeignSecret
from aiotoolcache.coherence import Coherence, L1Entry
from aiotoolcache.errors import CachedLoaderError, UnserializableValue, ValueTooLarge
from aiotoolcache.fills import Fill
from aiotoolcache.freshness import jittered, quiet_until
from aiotoolcache.keys import KeyRef, digest, generation_scope, sanitize_label
from aiotoolcache.layers import LayerConfig, value_limit
from aiotoolcache.lease import is_marker
from aiotoolcache.loaders import Loader, require_async_loader
from aiotoolcache.stats import LayerCounters
from aiotoolcache.tier import SharedTier

__all__ = ["MISSING", "LayerEntries"]

T = TypeVar("T")
log = logging.getLogger("aiotoolcache.cache")
# Labels repeat (tool names): sanitise each once.
_label = functools.lru_cache(maxsize=4096)(sanitize_label)


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""No usable cached value (absent, undecodable, or not to be served)."""


class LayerEntries:
    """LayerEntries names, seals, opens and keeps in L1 the entries of one layer."""

    def __init__(
        self,
        name: str,
        config: LayerConfig,
        *,
        namespace: str,
        coherence: Coherence,
        tier: SharedTier,
        codec: Codec,
        rng: random.Random,
        strict: bool,
    ) -> None:
        self.name = name
        self.config = config  # replaced when the layer's policy changes
        self.counters = LayerCounters()
        self.namespace = namespace
        self.strict = strict
        self._coherence = coherence
        self._tier = tier
        self._codec = codec
        self.rng = rng
        self._layer_field = f"layer:{name}"
        self._scope = ""
        self._scope_version = -1  # the bus's generations version _scope was built under

    # -- names --------------------------------------------------------------------
    def name_of(self, key: Any, partition: str | None, label: str | None) -> KeyRef:
        """The entry of ``key`` under the current generations (a KeyRef is renamed)."""
        bus = self._coherence.bus
        if bus.version != self._scope_version:
            self._scope = generation_scope(bus.generation("ns"), bus.generation(self._layer_field))
            self._scope_version = bus.version
        scope = self._scope
        if isinstance(key, KeyRef):
            if key.generation == scope and key.layer == self.name:
                return key
            return KeyRef.build(self.namespace, self.name, scope, key.label, key.digest)
        return KeyRef.build(self.namespace, self.name, scope, _label(label), digest(key, partition))

    # -- L1 -----------------------------------------------------------------------
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
        """Keep the decoded ``value`` in L1 if coherence admits it.

        ``vouched``: a proof of hearing covering the fill's start has come (see
        ``ReadPath.fetch``).
        """
        config = self.config
        if not config.l1:
            return
        hard_left = envelope.fresh_until + config.stale_ttl - time.time()
        lifetime = min(config.l1_ttl, hard_left)
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
        plain = not config.copy_on_read and not isinstance(value, CachedLoaderError)
        quiet = quiet_until(envelope.fresh_until, envelope.load_seconds, config.beta)
        entry = L1Entry(
            value, meta, time.monotonic() + lifetime, self.name, size + 200, plain, quiet
        )
        self._coherence.keep(ref.value_key, entry, fill, vouched=vouched)

    # -- L2 -----------------------------------------------------------------------
    async def read_l2(self, ref: KeyRef) -> Envelope | None:
        """Return the valid envelope of ``ref`` in L2, or None."""
        return (await self.read_l2_many([ref]))[0]

    async def read_l2_many(self, refs: Sequence[KeyRef]) -> list[Envelope | None]:
        raw = await self._tier.read(self, [ref.value_key for ref in refs])
        return [
            None if data is None else self.open_raw(ref, data)
            for ref, data in zip(refs, raw, strict=True)
        ]

    def open_raw(self, ref: KeyRef, data: bytes) -> Envelope | None:
        """Return the envelope in stored bytes if it is sound and current, else None.

        A lease marker (see ``lease``) is a plain miss, and so is an entry whose
        delete waits in the outbox (every L2 read passes here, a lease request's
        reply included). Corrupt bytes are counted and deleted in the background:
        between a read and keeping its value in L1 there must be no await (an
        invalidation could slip in unseen).
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
        config = self.config
        try:
            payload = self._codec.encode_value(value)
            # Never above what the codec reads back: such an entry would only be a miss.
            limit = min(value_limit(config), self._codec.max_decoded_bytes)
            if len(payload) > limit:
                raise ValueTooLarge(f"{len(payload)} bytes exceed max_value_bytes={limit}")
        except (UnserializableValue, ValueTooLarge) as exc:
            self.counters.skipped_writes += 1
            self._codec.warn_unstorable(self.name, exc)
            if self.strict:
                raise
            return None
        fresh = jittered(config.ttl if ttl is None else ttl, config.jitter, self.rng)
        now = time.time()
        envelope = Envelope(
            now,
            now + fresh,
            load_seconds,
            tag_generations,
            payload,
            hard_until=now + fresh + config.stale_ttl,
            negative=isinstance(value, CachedLoaderError),
        )
        ttl_ms = int((fresh + config.stale_ttl) * 1000)
        return envelope, self._codec.seal(ref.value_key, envelope), ttl_ms

    # -- loaders ------------------------------------------------------------------
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
