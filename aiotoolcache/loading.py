"""Loads: one loader run in the whole fleet per missing key, and background refreshes.

On an L2 miss a worker takes the key's lease by parking a marker in the
value key (``SET NX GET``): when that fails it gets what is there instead, so
a fill that landed since the miss is served, not loaded twice. The
leaseholder loads, fills L2 through a script that writes only while its
marker is still there, and announces ``filled`` on the bus when someone
waits (see ``lease``). Workers that did not get the lease wait for that
message (not polling), then read L2. A marker names its holder's presence
(see ``presence``): a waiter asks every ``PROBE_EVERY`` whether the holder is
still connected, and when its process died, one waiter takes its marker's
place at once. Each wait is bounded by the lease's remaining time (the
fallback when presence cannot be asked) and by ``lease_wait`` overall, after
which the waiter loads itself. A background refresh leaves the value it replaces in place and
takes the entry's separate lease key instead.

A lease never strands anyone: a failed load or fill, a cancelled caller, and
a lease reply lost on the way back all release it (only if it still holds
our token) and wake the waiters; a live load renews it.

Only a leased load writes L2. A load without the lease (the backend failed,
or the lease holder took longer than ``lease_wait``) keeps its value in L1
and the fallback store: a delete issued while it ran could not stop a plain
write, so it makes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.codec import Envelope
from aiotoolcache.coherence import Coherence
from aiotoolcache.entries import MISSING, LayerEntries
from aiotoolcache.errors import BackendError, CachedLoaderError
from aiotoolcache.fills import Fill
from aiotoolcache.keys import KeyRef
from aiotoolcache.lease import Lease, LeaseManager
from aiotoolcache.loaders import ShouldCache
from aiotoolcache.presence import PROBE_EVERY
from aiotoolcache.tier import SharedTier

__all__ = ["LoadCoordinator"]

T = TypeVar("T")
log = logging.getLogger("aiotoolcache.loading")


class LoadCoordinator:
    """LoadCoordinator runs loads under leases and keeps track of background refreshes."""

    def __init__(
        self,
        *,
        coherence: Coherence,
        tier: SharedTier,
        breaker: CircuitBreaker,
        leases: LeaseManager | None,
        lease_ms: int = 3_000,
        lease_wait: float = 30.0,
    ) -> None:
        self._coherence = coherence
        self._tier = tier
        self._breaker = breaker
        self.leases = leases
        self.lease_ms = lease_ms
        self.lease_wait = lease_wait
        self.closing = False
        # Keys with a background refresh started, added before its task first runs so a
        # burst of reads in one loop tick starts (and counts) one refresh, not one each.
        self._refreshing: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # -- foreground loads -------------------------------------------------------
    async def load(
        self,
        entries: LayerEntries,
        ref: KeyRef,
        fill: Fill,
        loader: Callable[[], Awaitable[T]],
        ttl: float | None,
        should_cache: ShouldCache | None,
        *,
        wait: bool,
        replaces: Envelope | None = None,
    ) -> T | None:
        """Load ``ref`` under its lease and cache the value; return it.

        With ``wait=False`` (background refresh) a lease held elsewhere means
        someone is already refreshing: return None without loading.
        """
        lease: Lease | None = None
        # After a failed backend call, skip the lease and keep the value in L1 and
        # the fallback only, so a sick Redis costs a caller at most one time budget.
        leased = self.leases is not None and not self._breaker.failing
        if leased:
            lease, found = await self._acquire_or_wait(entries, ref, fill, wait, replaces)
            if found is not MISSING:
                return cast(T, found)
            if lease is None and not wait:
                return None
        try:
            return await self._load_holding(
                entries, ref, fill, lease, loader, ttl, should_cache, wait, replaces
            )
        except BaseException as exc:
            # A failed load settled its lease on the way out (released, or the failure
            # stored). Cancelled anywhere past taking it (loading, filling, releasing): give
            # it back without delaying the caller; the release drops only our own marker, so
            # it is a no-op when a fill or a release landed first.
            if lease is not None and not isinstance(exc, Exception):
                self._in_background(self._release(ref, lease))
            raise

    async def _load_holding(
        self,
        entries: LayerEntries,
        ref: KeyRef,
        fill: Fill,
        lease: Lease | None,
        loader: Callable[[], Awaitable[T]],
        ttl: float | None,
        should_cache: ShouldCache | None,
        wait: bool,
        replaces: Envelope | None,
    ) -> T:
        """Run ``loader`` (renewing ``lease`` meanwhile), then fill or release; return its value."""
        renewal = self._start_renewal(lease)
        try:
            value, elapsed = await entries.run_loader(loader)
        except Exception as exc:
            negative_ttl = entries.config.negative_ttl
            # A failed refresh keeps serving the good value it replaces (stale-if-error).
            if negative_ttl is not None and replaces is None:
                if not isinstance(exc, CachedLoaderError):
                    failure = CachedLoaderError(type(exc).__qualname__, str(exc))
                    await self._store(entries, ref, fill, lease, failure, negative_ttl, 0.0)
                    raise
            if lease is not None:
                await self._release(ref, lease)  # waiters elsewhere retry at once
            raise
        finally:
            if renewal is not None:
                renewal.cancel()
        if should_cache is not None and not should_cache(value):
            entries.counters.skipped_writes += 1
            if lease is not None:
                await self._release(ref, lease)
        else:
            await self._store(entries, ref, fill, lease, value, ttl, elapsed, refresh=not wait)
        return value

    async def _acquire_or_wait(
        self, entries: LayerEntries, ref: KeyRef, fill: Fill, wait: bool, replaces: Envelope | None
    ) -> tuple[Lease | None, Any]:
        """Return ``(lease, MISSING)`` with the lease, ``(None, value)`` when filled elsewhere.

        ``(None, MISSING)`` means: load without a lease (backend failure, or
        waited ``lease_wait`` in vain), or, when not waiting, someone else loads.
        A miss parks its lease in the value key; a refresh, whose value is still
        served, takes the entry's separate lease key.
        """
        assert self.leases is not None
        deadline = time.monotonic() + self.lease_wait
        waited = False
        unusable: bytes | None = None  # a value found in place that this worker cannot serve
        while True:
            token = await self.leases.token()
            if replaces is None:
                lease = Lease.for_miss(ref.value_key, token)
            else:
                lease = Lease.for_refresh(ref.lease_key, token)
            try:
                holder_ms, data = await self.leases.acquire(
                    lease, self.lease_ms, replacing=unusable
                )
            except BackendError:
                entries.counters.backend_errors += 1
                # The lease may have landed with only its reply lost: give it back.
                self._in_background(self._release(ref, lease))
                return None, MISSING  # fail-open: load without a lease
            except BaseException:
                # Cancelled while the request was out: it may have landed all the same
                # (Redis ran it, the reply was still on its way), so give it back too.
                self._in_background(self._release(ref, lease))
                raise
            if holder_ms == -2 and data is not None:
                value = self._filled(entries, ref, fill, data)
                if value is not MISSING:
                    return None, value
                if time.monotonic() >= deadline:
                    return None, MISSING
                unusable = data  # corrupt, foreign or of invalidated tags: take its place
                continue
            if holder_ms == -1:
                if waited:
                    entries.counters.lease_takeovers += 1
                if replaces is not None:
                    try:
                        elsewhere = await self._refreshed_elsewhere(entries, ref, fill, replaces)
                    except BaseException:
                        self._in_background(self._release(ref, lease))  # held: give it back
                        raise
                    if elsewhere:
                        self._in_background(self._release(ref, lease))
                        return None, MISSING
                return lease, MISSING
            if not wait:
                return None, MISSING
            waited = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, MISSING  # waited long enough: load ourselves
            envelope, gone = await self._wait_for_holder(entries, ref, holder_ms, data, remaining)
            if envelope is not None:
                value = entries.decode(ref, envelope)
                if value is not MISSING:
                    entries.counters.remote_coalesced += 1
                    entries.keep_in_l1(ref, value, envelope, fill)
                    return None, value
            if gone:
                unusable = data  # the holder died: take its marker's place, if still there

    async def _wait_for_holder(
        self,
        entries: LayerEntries,
        ref: KeyRef,
        holder_ms: int,
        marker: bytes | None,
        remaining: float,
    ) -> tuple[Envelope | None, bool]:
        """Wait for the holder's fill, at most its lease's term; return what L2 then
        holds and whether the holder was found gone (its process died).

        A holder whose marker names its presence is asked after every
        ``PROBE_EVERY``, so a dead holder's lease is taken over at once, not
        when its term runs out; a slow but live one keeps it.
        """
        assert self.leases is not None
        bus = self._coherence.bus
        probing = marker is not None and self.leases.names_presence(marker)
        term_ends = time.monotonic() + min(remaining, max(holder_ms, 1) / 1000 + 0.01)
        waiter = bus.filled_waiter(ref.value_key)
        try:
            # Checked after subscribing to the wake-up so a fill in between is not missed.
            envelope = await entries.read_l2(ref)
            while envelope is None and not waiter.done():
                left = term_ends - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, PROBE_EVERY) if probing else left):
                        await asyncio.shield(waiter)
                if waiter.done():
                    break
                if probing and marker is not None and await self.leases.holder_gone(marker):
                    return await entries.read_l2(ref), True
            if envelope is None:
                envelope = await entries.read_l2(ref)
            return envelope, False
        finally:
            bus.forget_waiter(ref.value_key, waiter)

    def _filled(self, entries: LayerEntries, ref: KeyRef, fill: Fill, data: bytes) -> Any:
        """The value another worker filled just before our lease request, or MISSING."""
        envelope = entries.open_raw(ref, data)
        if envelope is None:
            return MISSING
        value = entries.decode(ref, envelope)
        if value is not MISSING:
            entries.counters.remote_coalesced += 1
            entries.keep_in_l1(ref, value, envelope, fill)
        return value

    async def _refreshed_elsewhere(
        self, entries: LayerEntries, ref: KeyRef, fill: Fill, served: Envelope
    ) -> bool:
        """True when another worker refreshed ``ref`` just before this one took the lease."""
        envelope = await entries.read_l2(ref)
        if envelope is None or envelope.created_at <= served.created_at:
            return False
        value = entries.decode(ref, envelope)
        if value is not MISSING:
            entries.keep_in_l1(ref, value, envelope, fill)
        return True

    def _start_renewal(self, lease: Lease | None) -> asyncio.Task[None] | None:
        if lease is None or self.leases is None:
            return None
        return asyncio.create_task(self._renew(lease))

    async def _renew(self, lease: Lease) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(BackendError):
                if not await self.leases.extend(lease, self.lease_ms):
                    return  # revoked by a delete or write: nothing left to extend

    async def _release(self, ref: KeyRef, lease: Lease) -> None:
        """Give the lease back if it is still ours, waking whoever waits for it."""
        assert self.leases is not None
        message = self._coherence.bus.encode({"op": "filled", "l": ref.layer, "k": [ref.value_key]})
        with contextlib.suppress(BackendError):
            await self.leases.release(lease, self._tier.channel, message)
        self._coherence.bus.wake(ref.value_key)

    async def _store(
        self,
        entries: LayerEntries,
        ref: KeyRef,
        fill: Fill,
        lease: Lease | None,
        value: Any,
        ttl: float | None,
        elapsed: float,
        *,
        refresh: bool = False,
    ) -> None:
        sealed = entries.seal(ref, value, ttl, fill.tag_generations, elapsed)
        if sealed is None or not self._coherence.admits(fill):
            if lease is not None:
                self._in_background(self._release(ref, lease))
            return
        envelope, data, ttl_ms = sealed
        entry = (ref, data, ttl_ms)
        if self.leases is None:
            # One process owns this store (memory, files): a delete revokes the fill at
            # once, so the check above is the fence.
            await self._tier.write(entries, [entry], announce=False)
            stored = True
        elif lease is None:
            # Unleased: the backend failed, or the holder is slow. A plain write could
            # overwrite a delete issued meanwhile, so L2 is left to the leaseholder.
            if self._breaker.failing:
                entries.counters.dropped_writes += 1
            await self._tier.write_fallback(entries, [entry])
            stored = True
        else:
            outcome = await self._tier.fill(entries, entry, lease, always_announce=refresh)
            if outcome is None:  # the backend failed: the fill may not have run
                self._in_background(self._release(ref, lease))
            self._coherence.bus.wake(ref.value_key)
            stored = outcome is not False
        if stored:
            decoded = entries.decode(ref, envelope)
            if decoded is not MISSING:
                entries.keep_in_l1(ref, decoded, envelope, fill, len(data))

    # -- background refreshes -----------------------------------------------------
    def start_refresh(
        self,
        entries: LayerEntries,
        ref: KeyRef,
        served: Envelope,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> bool:
        """Start one background refresh of ``ref`` unless one is already running."""
        if ref.value_key in self._refreshing or self.closing:
            return False
        self._refreshing.add(ref.value_key)
        coherence = self._coherence

        async def refresh() -> None:
            fill = coherence.begin(ref, tags)
            try:
                await self.load(
                    entries, ref, fill, loader, ttl, should_cache, wait=False, replaces=served
                )
            except Exception as exc:
                # stale-if-error: the value being served stays until its hard expiry.
                entries.counters.refresh_errors += 1
                log.debug("background refresh of %s failed: %r", ref.value_key, exc)
            finally:
                coherence.end(fill)
                self._refreshing.discard(ref.value_key)

        self._in_background(refresh())
        return True

    def _in_background(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self, grace: float = 5.0) -> None:
        """Let background work finish (bounded), then cancel what is left."""
        self.closing = True
        if self._background:
            await asyncio.wait(set(self._background), timeout=grace)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.leases is not None:
            await self.leases.aclose()
