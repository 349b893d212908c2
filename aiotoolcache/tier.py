"""The shared tier, fail-open: L2 reads, writes and deletes, with the local fallback store.

Backend trouble never reaches a caller unless the cache is strict: a failed
read is a miss (served from the fallback store when one is configured), a
failed write is dropped (kept in the fallback), and a failed delete or
announced write is queued in the outbox so other workers still hear of it.
Any other exception on the way to the backend (a misconfigured client, a bug
in a driver) is contained the same way: counted, logged, and the caller
still gets its value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Protocol

from aiotoolcache.coherence import Coherence
from aiotoolcache.errors import BackendError
from aiotoolcache.keys import KeyRef
from aiotoolcache.lease import Lease, LeaseManager
from aiotoolcache.outbox import InvalidationOutbox
from aiotoolcache.stats import LayerCounters
from aiotoolcache.stores.base import Store
from aiotoolcache.stores.redis import RedisStore

__all__ = ["CountedLayer", "Entry", "SharedTier"]

log = logging.getLogger("aiotoolcache")

Entry = tuple[KeyRef, bytes, int]  # an entry, its sealed bytes, its TTL in milliseconds


class CountedLayer(Protocol):
    """What the tier needs of a layer: its name (in bus messages) and its counters."""

    @property
    def name(self) -> str: ...

    @property
    def counters(self) -> LayerCounters: ...


class SharedTier:
    """SharedTier reads and writes L2 for every layer, turning backend errors into misses."""

    def __init__(
        self,
        *,
        store: Store,
        fallback: Store | None,
        mirror: bool,
        leases: LeaseManager | None,
        coherence: Coherence,
        outbox: InvalidationOutbox | None,
        channel: str,
        strict: bool,
    ) -> None:
        self.store = store
        self._redis = store if isinstance(store, RedisStore) else None
        self.fallback = fallback
        self.mirror = mirror and fallback is not None
        self.leases = leases
        self.coherence = coherence
        self.outbox = outbox
        self.channel = channel
        self.strict = strict
        self._last_drop_warning = float("-inf")
        self._last_unexpected = float("-inf")

    def failed(self, layer: CountedLayer | None, exc: BackendError) -> None:
        """Count a backend failure against ``layer`` (if any); re-raise it in strict mode."""
        if layer is not None:
            layer.counters.backend_errors += 1
        if self.strict:
            raise exc

    def backend_error(self, exc: Exception) -> BackendError:
        """``exc`` as a BackendError, so fail-open handles it like any backend failure.

        An exception the backend path should never raise (a misconfigured
        client, a driver bug) is logged, at most once a minute, and wrapped.
        """
        if isinstance(exc, BackendError):
            return exc
        now = time.monotonic()
        if now - self._last_unexpected >= 60.0:
            self._last_unexpected = now
            log.error("unexpected error on the cache backend path (contained): %r", exc)
        error = BackendError(f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    def _log_dropped_write(self, exc: Exception) -> None:
        # WARNING, but at most every 10 s: an outage must not log once per request.
        now = time.monotonic()
        if now - self._last_drop_warning >= 10.0:
            self._last_drop_warning = now
            log.warning("dropping cache writes while the backend fails: %s", exc)

    async def read(self, layer: CountedLayer, keys: Sequence[str]) -> list[bytes | None]:
        """Read L2 (or the fallback while L2 fails); a failure reads as misses."""
        try:
            return await self.store.get_many(keys)
        except Exception as exc:
            self.failed(layer, self.backend_error(exc))
        return await self.read_fallback(keys)

    def read_one(self, key: str, *, batched: bool = False) -> Awaitable[bytes | None]:
        """Read one key from L2, to await at once; a failure raises (see ``read_failed``).

        From Redis, a read joining a batch is the batch's own future: the hot
        path awaits it without a coroutine in between. ``batched`` makes even a
        lone read wait for the next loop iteration's batch.
        """
        if self._redis is not None:
            return self._redis.get(key, batched=batched)
        return self._first(key)

    async def _first(self, key: str) -> bytes | None:
        return (await self.store.get_many([key]))[0]

    async def read_failed(self, layer: CountedLayer, key: str, exc: Exception) -> bytes | None:
        """What a failed ``read_one`` reads as: the fallback's copy, or a miss."""
        self.failed(layer, self.backend_error(exc))
        return (await self.read_fallback([key]))[0]

    async def read_fallback(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read the fallback store (misses when there is none or it fails)."""
        if self.fallback is not None:
            try:
                return await self.fallback.get_many(keys)
            except OSError:
                pass
        return [None] * len(keys)

    async def write(self, layer: CountedLayer, entries: list[Entry], announce: bool = True) -> None:
        """Write to L2; with ``announce`` other workers drop their L1 copies and leases."""
        try:
            if announce and self.leases is not None:
                message = self.coherence.bus.encode(
                    {"op": "del", "l": layer.name, "k": [ref.value_key for ref, _, _ in entries]}
                )
                await self.leases.write_many(
                    [(ref.value_key, ref.lease_key, data, ttl_ms) for ref, data, ttl_ms in entries],
                    self.channel,
                    message,
                )
            else:
                await self.store.set_many(_raw(entries))
        except Exception as caught:
            exc = self.backend_error(caught)
            layer.counters.dropped_writes += 1
            self._log_dropped_write(exc)
            if announce and self.outbox is not None:  # the others must still drop old copies
                self.outbox.delete(ref for ref, _, _ in entries)
            await self.write_fallback(layer, entries)
            self.failed(layer, exc)  # last: strict mode raises only once the rest is done
            return
        if announce and self.outbox is not None:
            self.outbox.landed(ref for ref, _, _ in entries)
        if self.mirror:
            await self.write_fallback(layer, entries)

    async def fill(
        self, layer: CountedLayer, entry: Entry, lease: Lease, *, always_announce: bool = False
    ) -> bool | None:
        """Store a leased load's value: True when stored, False when its lease was revoked
        meanwhile, None when the backend failed (the value went to the fallback only)."""
        assert self.leases is not None
        ref, data, ttl_ms = entry
        message = self.coherence.bus.encode({"op": "filled", "l": ref.layer, "k": [ref.value_key]})
        try:
            filled = await self.leases.fill(
                ref.value_key,
                lease,
                data,
                ttl_ms,
                self.channel,
                message,
                always_announce=always_announce,
            )
        except Exception as exc:
            self.backend_error(exc)  # logged if unexpected
            layer.counters.dropped_writes += 1
            self._log_dropped_write(exc)
            await self.write_fallback(layer, [entry])
            return None
        if filled and self.mirror:
            await self.write_fallback(layer, [entry])
        return filled

    def discard(self, keys: list[str]) -> None:
        """Delete unusable entries (corrupt bytes) in the background, best effort."""
        self.coherence.in_background(self.store.delete_many(keys))

    async def write_fallback(self, layer: CountedLayer, entries: list[Entry]) -> None:
        """Keep ``entries`` in the fallback store, if there is one."""
        if self.fallback is None:
            return
        try:
            await self.fallback.set_many(_raw(entries))
        except OSError as exc:
            layer.counters.dropped_writes += 1
            log.debug("fallback write failed: %r", exc)

    async def delete(self, layer: CountedLayer, refs: Sequence[KeyRef]) -> None:
        """Delete entries here and in L2, revoke their leases and tell every worker."""
        keys = [ref.value_key for ref in refs]
        local = {"o": self.coherence.bus.origin, "op": "del", "l": layer.name, "k": keys}
        self.coherence.apply(local)
        error: BackendError | None = None
        try:
            if self.leases is not None:
                message = self.coherence.bus.encode({"op": "del", "l": layer.name, "k": keys})
                pairs = [(ref.value_key, ref.lease_key) for ref in refs]
                await self.leases.delete_many(pairs, self.channel, message)
            else:
                await self.store.delete_many(keys)
        except Exception as exc:
            error = self.backend_error(exc)
            if self.outbox is not None:  # sent again until Redis takes it
                self.outbox.delete(refs)
        else:
            if self.outbox is not None:
                self.outbox.landed(refs)
        # A read that began while the delete was on its way may have reached Redis
        # first and still hold the old value: revoke it too.
        self.coherence.apply(local)
        await self._delete_fallback(keys)
        if error is not None:
            self.failed(layer, error)  # last: strict mode raises once the rest is done

    async def defer(self, layer: CountedLayer, refs: Sequence[KeyRef]) -> None:
        """Invalidate entries whose key names cannot be trusted now (the generations are not
        known yet, or neither proven nor readable): applied here at once, and queued in the
        outbox, which names them under the generations current when Redis takes them.

        Nothing is sent under a name that may be wrong: a delete that landed on it
        would report success while the live entry stays. Strict mode raises.
        """
        keys = [ref.value_key for ref in refs]
        origin = self.coherence.bus.origin
        self.coherence.apply({"o": origin, "op": "del", "l": layer.name, "k": keys})
        if self.outbox is not None:
            self.outbox.delete(refs)
        await self._delete_fallback(keys)
        self.failed(layer, BackendError("keys cannot be named under current generations: queued"))

    def pending_delete(self, ref: KeyRef) -> bool:
        """True while a delete of ``ref``'s entry waits in the outbox: L2 must read it as absent."""
        return self.outbox is not None and self.outbox.holds(ref)

    async def _delete_fallback(self, keys: list[str]) -> None:
        if self.fallback is not None:
            try:
                await self.fallback.delete_many(keys)
            except OSError as exc:
                log.debug("fallback delete failed: %r", exc)

    async def aclose(self) -> None:
        await self.store.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()


def _raw(entries: list[Entry]) -> list[tuple[str, bytes, int]]:
    """The store's view of entries: key name, bytes, TTL in milliseconds."""
    return [(ref.value_key, data, ttl_ms) for ref, data, ttl_ms in entries]
