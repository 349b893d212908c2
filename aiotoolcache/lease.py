"""Leases: at most one worker in the fleet loads a missing key at a time.

A lease is ``SET lease token NX PX ms`` on a key that shares its value key's
hash tag. The holder fills the value with a script that first checks it
still holds the lease: a delete of the value also deletes the lease, so a
load that raced with an invalidation cannot write its now-old value
(memcache leases, Nishtala et al., NSDI 2013). Every script touches the keys
of one slot only.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.stores.redis import AnyRedis

__all__ = ["LeaseManager"]

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return redis.call('PTTL', KEYS[1])
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: value, lease. ARGV: data, px, channel, message. An unconditional write
# revokes any lease in flight, so an older load cannot overwrite it.
_WRITE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS: value, lease. ARGV: channel, message.
_DELETE = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""
# KEYS: value, lease. ARGV: token, data, px, channel, message.
_FILL = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""


class LeaseManager:
    """LeaseManager takes, extends, fills and releases leases through the breaker."""

    def __init__(self, client: AnyRedis, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._acquire = client.register_script(_ACQUIRE)
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
        return await self._run(self._acquire, [lease_key], [token, lease_ms])

    async def extend(self, lease_key: str, token: str, lease_ms: int) -> bool:
        return await self._run(self._extend, [lease_key], [token, lease_ms]) == 1

    async def release(self, lease_key: str, token: str) -> bool:
        return await self._run(self._release, [lease_key], [token]) == 1

    async def fill(
        self,
        value_key: str,
        lease_key: str,
        token: str,
        data: bytes,
        ttl_ms: int,
        channel: str,
        message: bytes,
    ) -> bool:
        """Write ``data`` and announce it, only if ``token`` still holds the lease."""
        args = [token, data, max(1, ttl_ms), channel, message]
        return await self._run(self._fill, [value_key, lease_key], args) == 1

    async def write_many(
        self, entries: list[tuple[str, str, bytes, int]], channel: str, message: bytes
    ) -> None:
        """Write ``(value_key, lease_key, data, ttl_ms)`` entries, revoking their leases."""

        async def run() -> Any:
            pipe = self._client.pipeline(transaction=False)
            for value_key, lease_key, data, ttl_ms in entries:
                args: list[bytes | str | int] = [data, max(1, ttl_ms), channel, message]
                await self._write(keys=[value_key, lease_key], args=args, client=pipe)  # type: ignore[arg-type]
            return await pipe.execute()

        await self._breaker.call(run)

    async def delete_many(self, pairs: list[tuple[str, str]], channel: str, message: bytes) -> None:
        """Delete values and their leases, and announce it, one slot per script call."""

        async def run() -> Any:
            pipe = self._client.pipeline(transaction=False)
            for value_key, lease_key in pairs:
                keys = [value_key, lease_key]
                await self._delete(keys=keys, args=[channel, message], client=pipe)  # type: ignore[arg-type]
            return await pipe.execute()

        await self._breaker.call(run)
