"""Loads: one loader run in the whole fleet per missing key, and background refreshes.

On an L2 miss a worker takes the key's lease. The leaseholder loads, fills
L2 through a script that checks it still holds the lease, and announces
``filled`` on the bus. Workers that did not get the lease wait for that
message (not polling), then read L2; each wait is bounded by the lease's
remaining time, so when the holder dies its lease expires and one waiter
takes over, and by ``lease_wait`` overall, after which the waiter loads
itself. Long loads extend their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aiotoolcache.cache import MISSING
from aiotoolcache.codec import Envelope
from aiotoolcache.errors import BackendError, CachedLoaderError
from aiotoolcache.fills import Fill
from aiotoolcache.keys import KeyRef
from aiotoolcache.lease import LeaseManager

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer, ShouldCache
    from aiotoolcache.toolcache import ToolCache

__all__ = ["LoadCoordinator"]

T = TypeVar("T")
log = logging.getLogger("aiotoolcache.loading")


class LoadCoordinator:
    """LoadCoordinator runs loads under leases and keeps track of background refreshes."""

    def __init__(
        self,
        owner: ToolCache,
        leases: LeaseManager | None,
        *,
        lease_ms: int = 10_000,
        lease_wait: float = 30.0,
    ) -> None:
        self._owner = owner
        self.leases = leases
        self.lease_ms = lease_ms
        self.lease_wait = lease_wait
        # Keys with a background refresh started, added before its task first runs so a
        # burst of reads in one loop tick starts (and counts) one refresh, not one each.
        self._refreshing: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # -- foreground loads -------------------------------------------------------
    async def load(
        self,
        layer: Layer,
        ref: KeyRef,
        fill: Fill,
        loader: Callable[[], Awaitable[T]],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
        *,
        wait: bool,
        replaces: Envelope | None = None,
    ) -> T | None:
        """Load ``ref`` under its lease and cache the value; return it.

        With ``wait=False`` (background refresh) a lease held elsewhere means
        someone is already refreshing: return None without loading.
        """
        token: str | None = None
        # After a failed backend call, skip the lease and keep the value in L1 and
        # the fallback only, so a sick Redis costs a caller at most one time budget.
        degraded = self._owner.breaker.failing
        if self.leases is not None and not degraded:
            token, found = await self._acquire_or_wait(layer, ref, fill, wait)
            if found is not MISSING:
                return cast(T, found)
            if token is None and not wait:
                return None
            if (
                token is not None
                and replaces is not None
                and await self._refreshed_elsewhere(layer, ref, fill, replaces)
            ):
                await self._release(ref, token)
                return None
        renewal = self._start_renewal(ref, token)
        try:
            value, elapsed = await layer.run_loader(loader)
        except Exception as exc:
            negative_ttl = layer.config.negative_ttl
            if negative_ttl is not None and not isinstance(exc, CachedLoaderError):
                failure = CachedLoaderError(type(exc).__qualname__, str(exc))
                await self._store(layer, ref, fill, token, failure, negative_ttl, tags, 0.0)
            elif token is not None:
                await self._release(ref, token)  # waiters elsewhere retry at once
            raise
        except BaseException:
            if token is not None:
                # Cancelled: release without delaying the cancellation.
                self._in_background(self._release(ref, token))
            raise
        finally:
            if renewal is not None:
                renewal.cancel()
        if should_cache is not None and not should_cache(value):
            layer.counters.skipped_writes += 1
            if token is not None:
                await self._release(ref, token)
        else:
            # The fill script releases the lease itself.
            await self._store(
                layer,
                ref,
                fill,
                token,
                value,
                ttl,
                tags,
                elapsed,
                skip_backend=degraded,
                refresh=not wait,
            )
        return value

    async def _acquire_or_wait(
        self, layer: Layer, ref: KeyRef, fill: Fill, wait: bool
    ) -> tuple[str | None, Any]:
        """Return ``(token, MISSING)`` with the lease, ``(None, value)`` when filled elsewhere.

        ``(None, MISSING)`` means: load without a lease (backend failure, or
        waited ``lease_wait`` in vain), or, when not waiting, someone else loads.
        """
        assert self.leases is not None
        bus = self._owner.bus
        deadline = time.monotonic() + self.lease_wait
        waited = False
        while True:
            token = LeaseManager.new_token()
            try:
                holder_ms = await self.leases.acquire(ref.lease_key, token, self.lease_ms)
            except BackendError:
                layer.counters.backend_errors += 1
                return None, MISSING  # fail-open: load without a lease
            if holder_ms == -1:
                if waited:
                    layer.counters.lease_takeovers += 1
                return token, MISSING
            if not wait:
                return None, MISSING
            waited = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, MISSING  # waited long enough: load ourselves
            waiter = bus.filled_waiter(ref.value_key)
            try:
                # Checked after subscribing to the wake-up so a fill in between is not missed.
                envelope = await layer.read_l2(ref)
                if envelope is None:
                    timeout = min(remaining, max(holder_ms, 1) / 1000 + 0.01)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await waiter
                    envelope = await layer.read_l2(ref)
            finally:
                bus.forget_waiter(ref.value_key, waiter)
            if envelope is not None:
                value = layer.decode(ref, envelope)
                if value is not MISSING:
                    layer.counters.remote_coalesced += 1
                    layer.keep_in_l1(ref, envelope, fill)
                    return None, value

    async def _refreshed_elsewhere(
        self, layer: Layer, ref: KeyRef, fill: Fill, served: Envelope
    ) -> bool:
        """True when another worker refreshed ``ref`` just before this one took the lease."""
        envelope = await layer.read_l2(ref)
        if envelope is None or envelope.created_at <= served.created_at:
            return False
        layer.keep_in_l1(ref, envelope, fill)
        return True

    def _start_renewal(self, ref: KeyRef, token: str | None) -> asyncio.Task[None] | None:
        if token is None or self.leases is None:
            return None
        return asyncio.create_task(self._renew(ref, token))

    async def _renew(self, ref: KeyRef, token: str) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(BackendError):
                if not await self.leases.extend(ref.lease_key, token, self.lease_ms):
                    return  # revoked by a delete or write: nothing left to extend

    async def _release(self, ref: KeyRef, token: str) -> None:
        assert self.leases is not None
        with contextlib.suppress(BackendError):
            await self.leases.release(ref.lease_key, token)
        # Wake the waiters elsewhere now rather than at their timeout.
        with contextlib.suppress(BackendError):
            await self._owner.bus.publish({"op": "filled", "l": ref.layer, "k": [ref.value_key]})

    async def _store(
        self,
        layer: Layer,
        ref: KeyRef,
        fill: Fill,
        token: str | None,
        value: Any,
        ttl: float | None,
        tags: list[str] | None,
        elapsed: float,
        *,
        skip_backend: bool = False,
        refresh: bool = False,
    ) -> None:
        sealed = layer.seal(ref, value, ttl, tags, elapsed)
        if sealed is None or fill.revoked:
            if token is not None:
                self._in_background(self._release(ref, token))
            return
        envelope, data, ttl_ms = sealed
        tier = self._owner.tier
        stored = True
        if skip_backend:
            # The backend just failed: a write could cost a whole budget, so the
            # value goes to L1 and the local fallback only.
            layer.counters.dropped_writes += 1
            await tier.write_fallback(layer, [(ref, data, ttl_ms)])
        elif token is None:
            await tier.write(layer, [(ref, data, ttl_ms)], announce=False)
        else:
            stored = await tier.fill(layer, (ref, data, ttl_ms), token, always_announce=refresh)
            self._owner.bus.wake(ref.value_key)
        if stored:
            layer.keep_in_l1(ref, envelope, fill)

    # -- background refreshes -----------------------------------------------------
    def start_refresh(
        self,
        layer: Layer,
        ref: KeyRef,
        served: Envelope,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        tags: list[str] | None,
        should_cache: ShouldCache | None,
    ) -> bool:
        """Start one background refresh of ``ref`` unless one is already running."""
        if ref.value_key in self._refreshing or self._owner.closing:
            return False
        self._refreshing.add(ref.value_key)

        async def refresh() -> None:
            fill = self._owner.fills.begin(ref)
            try:
                await self.load(
                    layer, ref, fill, loader, ttl, tags, should_cache, wait=False, replaces=served
                )
            except Exception as exc:
                # stale-if-error: the value being served stays until its hard expiry.
                layer.counters.refresh_errors += 1
                log.debug("background refresh of %s failed: %r", ref.value_key, exc)
            finally:
                self._owner.fills.end(fill)
                self._refreshing.discard(ref.value_key)

        self._in_background(refresh())
        return True

    def _in_background(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self, grace: float = 5.0) -> None:
        """Let background work finish (bounded), then cancel what is left."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=grace)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
