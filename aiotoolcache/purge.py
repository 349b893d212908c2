"""Removing every key of a namespace from Redis: SCAN and UNLINK in batches, never KEYS.

``KEYS`` blocks Redis for as long as it walks the whole keyspace; ``SCAN``
walks it in small steps between other clients' commands, and ``UNLINK`` frees
the memory in a background thread. On Redis Cluster each key is unlinked on
its own node (a multi-key UNLINK must stay within one slot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

if TYPE_CHECKING:
    from aiotoolcache.stores.redis import AnyRedis

__all__ = ["DEFAULT_BATCH", "purge_namespace"]

DEFAULT_BATCH = 500


async def _unlink(client: AnyRedis, keys: list[Any]) -> int:
    if isinstance(client, Redis):
        removed: int = await client.unlink(*keys)
        return removed
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)  # type: ignore[no-untyped-call,unused-coroutine]
    return sum(int(count) for count in await pipe.execute())


async def purge_namespace(client: AnyRedis, namespace: str, batch: int = DEFAULT_BATCH) -> int:
    """Unlink every key under ``{namespace}:`` in batches of ``batch``; return how many went.

    Keys written while the scan runs may survive it (SCAN guarantees only the
    keys present for the whole scan); running it again removes them.
    """
    removed = 0
    pending: list[Any] = []
    async for key in client.scan_iter(match=f"{namespace}:*", count=batch):
        pending.append(key)
        if len(pending) >= batch:
            removed += await _unlink(client, pending)
            pending = []
    if pending:
        removed += await _unlink(client, pending)
    return removed
