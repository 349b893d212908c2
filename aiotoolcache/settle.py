"""Settling a write: it returns once no worker can serve what it replaced.

A worker serves L1 only under a proof of hearing younger than
``max_staleness`` (see ``hearing``): it has applied every message published
before a ping it sent at most that long ago. So once ``max_staleness`` has
passed since a write's announcement was published, no worker serves a copy
from before it, from L1 or from L2 (its keys and tag generations are those
of the announcement), and no load that began before it can store its value
(the announcement revoked it). That bound is the guarantee; acknowledgements
make it cheap.

After the write (its announcement already in Redis), the writer publishes a
settle marker on the bus. PUBLISH answers how many subscribed connections
received it. Each worker's subscriber reads messages in order, so when it
reads the marker it has applied the write: it acknowledges on the writer's
own channel (``<bus channel>:<origin>``), through the shared pool. The
writer's subscriber counts its own marker as its acknowledgement. The write
returns at the last acknowledgement, or at ``max_staleness`` after the
marker's reply, whichever comes first: a frozen, deaf or dead worker (or a
foreign subscriber that never acknowledges) delays it by the bound at most.

On a Redis Cluster, PUBLISH counts only the receivers on the node that ran
it, and messages published on different nodes are not ordered with each
other: writes settle by the bound alone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Settlement"]

log = logging.getLogger("aiotoolcache.settle")


class _Waiting:
    """One write waiting to settle: acknowledgements counted against the receivers."""

    __slots__ = ("acks", "done", "needed")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.acks = 0
        self.needed: int | None = None  # unknown until the marker's reply (never, on a Cluster)

    def check(self) -> None:
        if self.needed is not None and self.acks >= self.needed and not self.done.done():
            self.done.set_result(None)


class Settlement:
    """Settlement tracks this worker's writes waiting to settle, and counts how each ended.

    ``publish_marker(token)`` publishes a settle marker and returns PUBLISH's
    receiver count; ``counted`` is False where that count cannot be relied on
    (a Cluster): writes then wait for the bound.
    """

    def __init__(
        self,
        origin: str,
        publish_marker: Callable[[str], Awaitable[int]],
        *,
        max_staleness: float,
        counted: bool = True,
    ) -> None:
        self._origin = origin
        self._publish_marker = publish_marker
        self._max_staleness = max_staleness
        self._counted = counted
        self._tokens = itertools.count()
        self._waiting: dict[str, _Waiting] = {}
        self.by_acks = 0  # writes settled by every receiver's acknowledgement
        self.by_bound = 0  # writes settled because max_staleness passed first

    async def settle(self) -> bool:
        """Return once every worker that received the marker acknowledged it, or once
        ``max_staleness`` passed since its reply; True when the acknowledgements came."""
        token = f"{self._origin}.{next(self._tokens)}"
        waiting = _Waiting(asyncio.get_running_loop().create_future())
        self._waiting[token] = waiting
        try:
            try:
                receivers = await self._publish_marker(token)
            except Exception as exc:
                # The write may have landed even so: the bound still holds for it.
                log.debug("settle marker not published (%r): waiting for the bound", exc)
                receivers = None
            if receivers is not None and self._counted:
                waiting.needed = receivers
                waiting.check()
            try:
                async with asyncio.timeout(self._max_staleness):
                    await asyncio.shield(waiting.done)
            except TimeoutError:
                self.by_bound += 1
                return False
            self.by_acks += 1
            return True
        finally:
            del self._waiting[token]

    def acknowledged(self, token: object) -> None:
        """A worker (this one included) acknowledged the marker ``token``."""
        waiting = self._waiting.get(token) if isinstance(token, str) else None
        if waiting is not None:
            waiting.acks += 1
            waiting.check()
