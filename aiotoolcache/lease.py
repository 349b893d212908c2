"""Leases: at most one worker in the fleet loads a missing key at a time.

A lease is ``SET lease token NX PX ms`` on a key that shares its value key's
hash tag. The holder fills the value with a script that first checks it
still holds the lease: a delete of the value also deletes the lease, so a
load that raced with an invalidation cannot write its now-old value
(memcache leases, Nishtala et al., NSDI 2013). Every script touches the keys
of one slot only, so every script runs unchanged on a Redis Cluster.

Batches of writes or deletes run as pipelines of script calls, in chunks that
run concurrently, and announce the whole batch with one PUBLISH once every
chunk has landed (a lone write or delete publishes from inside its script).
redis-py's cluster pipelines refuse EVALSHA, so on a Cluster the batch scripts
go as EVAL, routed per key slot and grouped per node by the pipeline.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from aiotoolcache.batching import Batcher
from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.stores.redis import AnyRedis

__all__ = ["LeaseManager"]

ItemT = TypeVar("ItemT")
ScriptCall = tuple[Any, list[str], list[Any]]  # a registered script, its keys, its arguments
# Script calls per pipeline: each chunk is one round trip (per node) within the time budget.
CHUNK = 256
# Chunks in flight per batch; each is timed from its start, not from when it was queued.
CONCURRENT_CHUNKS = 2

# A lease holds its token, plus "+" once another worker waits for it: only an
# awaited fill publishes "filled", so an uncontended load costs no PUBLISH.
# Run when a plain SET NX failed. Taking a lease one already holds succeeds, so a
# retried call is harmless.
_ACQUIRE_CONTENDED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local holder = redis.call('GET', KEYS[1])
if string.sub(holder, 1, #ARGV[1]) == ARGV[1] then return -1 end
if string.sub(holder, -1) ~= '+' then redis.call('APPEND', KEYS[1], '+') end
return redis.call('PTTL', KEYS[1])
"""
# KEYS: value, lease. ARGV: token, ms. Looks at the value first: a fill that landed
# since the caller's miss is returned instead of a lease ({filled, bytes}); else
# {-1} for a lease taken, or {holder's remaining ms} when another worker holds it.
_ACQUIRE_UNLESS_FILLED = """
local value = redis.call('GET', KEYS[1])
if value then return {-2, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1} end
local holder = redis.call('GET', KEYS[2])
if not holder or string.sub(holder, 1, #ARGV[1]) == ARGV[1] then return {-1} end
if string.sub(holder, -1) ~= '+' then redis.call('APPEND', KEYS[2], '+') end
return {redis.call('PTTL', KEYS[2])}
"""
_EXTEND = """
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lease. ARGV: token, channel, message. Wakes the waiters, if any.
_RELEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder or string.sub(holder, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if #holder > #ARGV[1] then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
"""
# KEYS: value, lease. ARGV: data, px, channel, message. An unconditional write
# revokes any lease in flight, so an older load cannot overwrite it. An empty
# channel: the caller announces the batch itself.
_WRITE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""
# KEYS: value, lease. ARGV: channel, message (empty channel: announced by the caller).
_DELETE = """
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return 1
"""
# KEYS: value, lease. ARGV: token, data, px, channel, message, always ("1": announce
# even unawaited, so workers holding a stale copy drop it).
_FILL = """
local holder = redis.call('GET', KEYS[2])
if not holder or string.sub(holder, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
if #holder > #ARGV[1] or ARGV[6] == '1' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""


class LeaseManager:
    """LeaseManager takes, extends, fills and releases leases through the breaker."""

    def __init__(self, client: AnyRedis, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        # Lease requests and fills made in the same loop tick share one pipelined
        # round trip (and one breaker slot): thousands of concurrent misses cost a
        # handful of round trips, not one each.
        self._calls: Batcher[ScriptCall, Any] = Batcher(self._run_batch, CHUNK)
        self._acquire_contended = client.register_script(_ACQUIRE_CONTENDED)
        self._acquire_unless_filled = client.register_script(_ACQUIRE_UNLESS_FILLED)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._fill = client.register_script(_FILL)
        self._write = client.register_script(_WRITE)
        self._delete = client.register_script(_DELETE)
        self._client = client

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(12)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> int:
        return int(await self._breaker.call(lambda: script(keys=keys, args=args)))

    async def acquire(self, lease_key: str, token: str, lease_ms: int) -> int:
        """Return -1 when the lease is taken, else the holder's remaining milliseconds."""
        client = self._client
        taken = await self._breaker.call(
            lambda: client.set(lease_key, token, nx=True, px=max(1, lease_ms))
        )
        if taken:
            return -1
        return await self._run(self._acquire_contended, [lease_key], [token, lease_ms])

    async def acquire_unless_filled(
        self, value_key: str, lease_key: str, token: str, lease_ms: int
    ) -> tuple[int, bytes | None]:
        """Return ``(-1, None)`` with the lease taken, ``(-2, data)`` when the value is
        there after all, else ``(holder's remaining ms, None)``."""
        call = (self._acquire_unless_filled, [value_key, lease_key], [token, max(1, lease_ms)])
        reply = await self._calls.call(call)
        if int(reply[0]) == -2:
            return -2, bytes(reply[1])
        return int(reply[0]), None

    async def extend(self, lease_key: str, token: str, lease_ms: int) -> bool:
        return await self._run(self._extend, [lease_key], [token, lease_ms]) == 1

    async def release(self, lease_key: str, token: str, channel: str, message: bytes) -> bool:
        """Delete the lease if ``token`` still holds it, announcing it to waiting workers."""
        return await self._run(self._release, [lease_key], [token, channel, message]) == 1

    async def fill(
        self,
        value_key: str,
        lease_key: str,
        token: str,
        data: bytes,
        ttl_ms: int,
        channel: str,
        message: bytes,
        always_announce: bool = False,
    ) -> bool:
        """Write ``data`` only if ``token`` still holds the lease; announce it when awaited.

        ``always_announce`` publishes even when no worker waits: a refresh
        replaces a value other workers may still hold stale in L1.
        """
        args = [token, data, max(1, ttl_ms), channel, message, "1" if always_announce else "0"]
        return int(await self._calls.call((self._fill, [value_key, lease_key], args))) == 1

    async def _run_batch(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls in one pipeline through the breaker; return their replies.

        Scripts go by SHA (EVAL on a Cluster, whose pipelines refuse EVALSHA);
        after a Redis restart forgot them, they are loaded again and the batch
        is sent once more. A script error fails the whole batch.
        """
        client = self._client

        async def run(reloaded: bool) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    if isinstance(client, RedisCluster):
                        pipe.eval(script.script, len(keys), *keys, *args)
                    else:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = list(await pipe.execute(raise_on_error=False))
            forgotten = any(isinstance(reply, NoScriptError) for reply in replies)
            if forgotten and not reloaded:
                return replies  # loaded below, then sent again
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply  # inside the breaker: counted, and made a BackendError
            return replies

        async def load_scripts() -> None:
            for script in {script.sha: script for script, _, _ in calls}.values():
                await client.script_load(script.script)

        replies = await self._breaker.call(lambda: run(False))
        if any(isinstance(reply, NoScriptError) for reply in replies):
            await self._breaker.call(load_scripts)
            replies = await self._breaker.call(lambda: run(True))
        return replies

    async def write_many(
        self, entries: list[tuple[str, str, bytes, int]], channel: str, message: bytes
    ) -> None:
        """Write ``(value_key, lease_key, data, ttl_ms)`` entries, revoking their leases.

        ``message`` announces the writes on ``channel`` once all of them landed.
        """
        if not entries:
            return
        # A lone write announces itself from its script; a batch once, at the end.
        inline = ("", b"") if len(entries) > 1 else (channel, message)
        await self._batched(
            entries,
            lambda entry: (
                self._write,
                [entry[0], entry[1]],
                [entry[2], max(1, entry[3]), *inline],
            ),
        )
        if len(entries) > 1:
            await self._publish(channel, message)

    async def delete_many(self, pairs: list[tuple[str, str]], channel: str, message: bytes) -> None:
        """Delete values and their leases, then announce it with ``message`` on ``channel``."""
        if not pairs:
            return
        inline = ("", b"") if len(pairs) > 1 else (channel, message)
        await self._batched(pairs, lambda pair: (self._delete, list(pair), list(inline)))
        if len(pairs) > 1:
            await self._publish(channel, message)

    # -- batches ----------------------------------------------------------------------
    async def _batched(
        self,
        items: Sequence[ItemT],
        call: Callable[[ItemT], ScriptCall],
    ) -> None:
        """Run one script call per item: pipelined chunks, concurrently, each within the budget.

        Every chunk is attempted; the first failure is raised afterwards (the
        scripts are idempotent, so a caller may simply send the batch again).
        """
        chunks = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
        slots = asyncio.Semaphore(CONCURRENT_CHUNKS)

        async def run(chunk: Sequence[ItemT]) -> Any:
            async with slots:
                return await self._run_batch([call(item) for item in chunk])

        results = await asyncio.gather(*(run(chunk) for chunk in chunks), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _publish(self, channel: str, message: bytes) -> None:
        if isinstance(self._client, RedisCluster):
            # PUBLISH reaches every node from any node; a random one avoids depending
            # on the one that owns the channel name's slot.
            cluster = self._client
            await self._breaker.call(
                lambda: cluster.execute_command(
                    "PUBLISH", channel, message, target_nodes=RedisCluster.RANDOM
                )
            )
        else:
            await self._breaker.call(lambda: self._client.publish(channel, message))
