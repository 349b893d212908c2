"""Generations in Redis: the namespace's hash of them, and how it is bumped, read and healed.

Layer, tag and namespace generations live in one Redis hash per namespace,
mirrored by each worker's bus (``GenerationsHash`` keeps the two in step).
Every generation a worker produces is a whole number of milliseconds or a
little more (a bump writes ``max(now in ms, the largest seen + 1)``), so all
of them stay far below 2^53 and Lua's doubles hold them exactly. A value in
the hash that no worker could have produced (not a decimal integer, or past
the bound bus messages get, see ``bus_messages.generation_bound``) was put
there by someone else or mangled: it is never adopted, and the next bump
writes over it.

A bump and its announcement are one script: it writes the new value and
PUBLISHes the signed message announcing it in the same call, so a lost
connection or timeout either lands both or neither (no bump that the other
workers would only find at their next check). The caller proposes the value
(it signs the message, which Redis cannot); when the hash already holds as
much, the script changes nothing and returns what it holds, and the caller
proposes again past it.

Generations are never reused. A bump writes ``max(stored + 1, local + 1,
now in ms)``, so even after Redis lost the hash (FLUSHALL, eviction, a
failover to an empty replica) a bump is larger than any value a worker has
seen. Workers merge what they load or hear by max. A worker that finds the
hash smaller than what it knew before reading it, or holding a value no
worker could have produced, has seen data loss: it writes its values back
and announces them (so every worker names keys alike), bumps the namespace
(every earlier entry becomes unreachable) and drops its L1.

The ``ns`` field is created by the first worker that finds it missing. A
hash without it was never written, or was lost (evicted, a failover to a
replica that never had it): a worker cannot tell which, so either way it
starts a new namespace generation, and no entry written before is reachable.

The hash expires after the longest entry TTL unless a worker keeps it alive.
Each worker reads the hash again every ``max_staleness`` while in use (every
few health intervals when idle), so a bump that landed but whose
announcement did not reach it (a refused PUBLISH) is still applied within
that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.bus_messages import Message, encode_message, generation_bound, now_ms
from aiotoolcache.errors import BackendError
from aiotoolcache.stores.redis import AnyRedis

__all__ = [
    "BUMP",
    "MERGE",
    "Bumped",
    "GenerationsHash",
    "GenerationsOwner",
    "StoredGenerations",
    "parse_bumped",
    "parse_stored",
]

# The bus's logger: data loss is reported with the bus's other warnings.
log = logging.getLogger("aiotoolcache.invalidation")

# Heartbeats between two checks that the generations hash is still whole, while idle.
_GENERATION_CHECKS = 5
# Proposals of a bump before giving up: each one fails only if another worker bumped
# the same field past it meanwhile.
_BUMP_ATTEMPTS = 8
# Digits of the largest value below 2^53: anything longer is not ours.
_MAX_DIGITS = 16

# KEYS: hash. ARGV: field, proposed value, bound, TTL in ms, channel, message, "1" to
# write only when the field is missing (or insane). The stored value is read as a
# decimal integer up to the bound; anything else counts as missing, and is reported.
# Returns {1 written / 0 not, the value now (a string), PUBLISH's receivers, 1 if insane}.
# HSET comes first: under a refused PUBLISH the value still lands (the others find it at
# their next generation check) rather than a bump announced that Redis does not hold.
BUMP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local stored = 0
local insane = 0
if raw then
  if #raw <= 16 and string.match(raw, '^%d+$') and tonumber(raw) <= tonumber(ARGV[3]) then
    stored = tonumber(raw)
  else
    insane = 1
  end
end
if ARGV[7] == '1' and raw and insane == 0 then return {0, raw, 0, 0} end
if stored >= tonumber(ARGV[2]) then return {0, raw, 0, insane} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local receivers = redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, ARGV[2], receivers, insane}
"""

# KEYS: hash. ARGV: TTL in ms, bound, then field, value pairs: each field becomes the
# max of the two (an insane stored value counts as missing).
MERGE = """
for i = 3, #ARGV, 2 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local keep = raw and #raw <= 16 and string.match(raw, '^%d+$')
    and tonumber(raw) <= tonumber(ARGV[2]) and tonumber(raw) >= tonumber(ARGV[i + 1])
  if not keep then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Bumped:
    """Bumped is the reply of the bump script.

    ``written``: our proposal is in the hash now. ``value``: what the field
    holds (None when it holds something insane). ``receivers``: connections
    PUBLISH reached (the writer's own subscriber included). ``insane``: the
    field held a value no worker could have produced (overwritten if written).
    """

    written: bool
    value: int | None
    receivers: int
    insane: bool


@dataclass(frozen=True, slots=True)
class StoredGenerations:
    """StoredGenerations is the generations hash as read: the sane fields, the insane ones."""

    values: dict[str, int]
    insane: list[str]


def _integer(raw: Any, bound: int) -> int | None:
    """``raw`` (bytes, str or int from Redis) as a generation up to ``bound``, else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw <= bound else None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit():
        return None
    if len(raw) > _MAX_DIGITS:
        return None
    value = int(raw)
    return value if value <= bound else None


def _name(raw: Any) -> str | None:
    if isinstance(raw, bytes):
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return None
    return raw if isinstance(raw, str) else None


def parse_stored(raw: Mapping[Any, Any], bound_of: Any) -> StoredGenerations:
    """The generations in an HGETALL reply; ``bound_of(field)`` is each field's bound.

    A field name that is not text is ignored (no worker reads it); a value
    that is not a decimal integer within its bound is reported as insane.
    """
    values: dict[str, int] = {}
    insane: list[str] = []
    for raw_name, raw_value in raw.items():
        name = _name(raw_name)
        if name is None:
            continue
        value = _integer(raw_value, bound_of(name))
        if value is None:
            insane.append(name)
        else:
            values[name] = value
    return StoredGenerations(values, insane)


def parse_bumped(reply: Any, bound: int) -> Bumped:
    """The bump script's reply as a Bumped; ValueError when it is not one."""
    if not isinstance(reply, list | tuple) or len(reply) != 4:
        raise ValueError(f"unexpected reply to a generation bump: {reply!r}")
    written, value, receivers, insane = reply
    return Bumped(
        written=int(written) == 1,
        value=_integer(value, bound),
        receivers=int(receivers),
        insane=int(insane) == 1,
    )


class GenerationsOwner(Protocol):
    """GenerationsOwner is the bus state the generations hash reads and writes (``RedisBus``
    has it): the mirrored generations, and how a message is applied here and sent."""

    origin: str
    mac_keys: tuple[bytes, ...]
    generations: dict[str, int]
    confirmed: dict[str, int]
    rejected: int

    @property
    def connected(self) -> bool: ...

    def apply(self, message: Message) -> None: ...

    async def publish(self, message: Message) -> None: ...


class GenerationsHash:
    """GenerationsHash keeps one namespace's generations hash and its owner's mirror of it.

    It bumps fields (written and announced in one script), merges the hash
    into the owner's generations, heals it after data loss, and says how often
    the owner, while subscribed, reads it again (``check_every``).
    """

    def __init__(
        self,
        owner: GenerationsOwner,
        client: AnyRedis,
        breaker: CircuitBreaker,
        *,
        key: str,
        channel: str,
        ttl_ms: int,
        health_interval: float,
        max_staleness: float,
    ) -> None:
        self._owner = owner
        self._client = client
        self._breaker = breaker
        self.key = key
        self._channel = channel  # where a bump is announced, by the script that writes it
        self.ttl_ms = ttl_ms
        self._health_interval = health_interval
        self._max_staleness = max_staleness
        self.known = False  # set once the hash was read: before that no key can be trusted
        self.data_losses = 0  # times the hash was found missing or behind
        self._bump_script = client.register_script(BUMP)
        self._merge_script = client.register_script(MERGE)
        # One reader of the hash at a time: two that found the same loss would each
        # bump the namespace.
        self._loading = asyncio.Lock()
        self._renewed_at = float("-inf")  # time.monotonic() of the hash's last PEXPIRE

    async def bump(self, field: str) -> int:
        """Bump ``field`` past every value seen here or held in Redis; write and announce it
        in one script (both land or neither). Returns the new value."""
        return await self._bump_field(field, only_if_missing=False)

    async def _bump_field(self, field: str, *, only_if_missing: bool) -> int:
        """Propose ``max(now, local + 1)`` until Redis takes it (``only_if_missing``: until
        the field holds a sane value, ours or another worker's); return the value held."""
        owner = self._owner
        keys = [self.key]
        for _ in range(_BUMP_ATTEMPTS):
            local = owner.generations.get(field, 0)
            value = max(now_ms(), local + 1)
            message: Message = {"o": owner.origin, "op": "gen", "f": field, "g": value}
            bound = generation_bound(local)
            args: list[str | int | bytes] = [
                field,
                value,
                bound,
                self.ttl_ms,
                self._channel,
                encode_message(message, owner.mac_keys),
                "1" if only_if_missing else "0",
            ]
            reply = await self._breaker.call(partial(self._bump_script, keys=keys, args=args))
            try:
                bumped = parse_bumped(reply, bound)
            except ValueError as exc:
                raise BackendError(str(exc)) from exc
            if bumped.insane:
                self._found_insane([field])
            if bumped.written:
                owner.apply(message)
                return value
            if bumped.value is not None:
                # Another worker got there first: adopt its value, then go past it.
                owner.apply({"o": owner.origin, "op": "gen", "f": field, "g": bumped.value})
                if only_if_missing:
                    return bumped.value
        raise BackendError(f"generation {field!r} kept moving: {_BUMP_ATTEMPTS} bumps refused")

    def _found_insane(self, fields: list[str]) -> None:
        """Count generations in Redis that no worker could have produced (tampering, or
        corruption): never adopted; the caller treats them as data loss."""
        self._owner.rejected += len(fields)
        log.warning(
            "generations in Redis hold values no worker could have written (%s): treated as lost",
            ", ".join(sorted(fields)[:5]),
        )

    async def load(self) -> None:
        """Merge the stored generations into the owner's (by max); heal the hash after data
        loss.

        Data loss is judged against what this worker knew Redis held before the
        read: a bump heard while the read was on its way is newer than the reply,
        not lost.
        """
        async with self._loading:
            await self._load()

    async def _load(self) -> None:
        owner = self._owner
        # What Redis was known to hold before the read: a bump heard while the read was
        # on its way is newer than the reply, and one applied here only ("u", waiting in
        # the outbox) never reached Redis; neither is a loss.
        held = dict(owner.confirmed)
        raw = await self._breaker.call(lambda: self._client.hgetall(self.key))
        stored = parse_stored(raw, lambda name: generation_bound(owner.generations.get(name, 0)))
        values = stored.values
        for name, value in values.items():
            if value > owner.generations.get(name, 0):
                # Applied as if heard: L1 entries, fills and flights it invalidates go.
                owner.apply({"o": owner.origin, "op": "gen", "f": name, "g": value})
        self._confirm(values)
        lost = [name for name, known in held.items() if values.get(name, 0) < known]
        if stored.insane:
            self._found_insane(stored.insane)
        if lost or stored.insane:
            await self._recover(lost, stored.insane)
        elif "ns" not in values:
            # Never written, or lost with every field: a new namespace generation either way.
            await self._bump_field("ns", only_if_missing=True)
        elif time.monotonic() - self._renewed_at >= _GENERATION_CHECKS * self._health_interval:
            ttl = self.ttl_ms
            await self._breaker.call(lambda: self._client.pexpire(self.key, ttl))
            self._renewed_at = time.monotonic()
        self.known = True

    async def _recover(self, lost: list[str], insane: list[str]) -> None:
        """Redis forgot bumps this worker heard of, or holds values no worker wrote: write
        ours back so new workers see them, and bump the namespace so no entry written
        before the loss is reachable (which drops this worker's L1 too)."""
        owner = self._owner
        generations = owner.generations
        self.data_losses += 1
        log.warning(
            "generations in Redis are missing or behind (%d fields): invalidating the namespace",
            len(lost) + len(insane),
        )
        if lost:
            bound = generation_bound(max(generations[field] for field in lost))
            args: list[str | int] = [self.ttl_ms, bound]
            for field in lost:
                args += [field, generations[field]]
            await self._breaker.call(lambda: self._merge_script(keys=[self.key], args=args))
            self._confirm({field: generations[field] for field in lost})
            # Announced, not only written back: the others may never have seen them (a
            # worker started after the loss, a bump that reached only this one), and would
            # name keys differently from this worker until their next check of the hash.
            for field in lost:
                await owner.publish({"op": "gen", "f": field, "g": generations[field]})
        for field in insane:
            if field != "ns":
                await self._bump_field(field, only_if_missing=False)  # written over
        await self._bump_field("ns", only_if_missing=False)

    def check_every(self, idle: bool) -> float:
        """Seconds between two reads of the hash (see ``RedisBus``): ``max_staleness`` while
        the cache is in use, a few health intervals while it is idle."""
        return _GENERATION_CHECKS * self._health_interval if idle else self._max_staleness

    def _confirm(self, stored: dict[str, int]) -> None:
        confirmed = self._owner.confirmed
        for name, value in stored.items():
            if value > confirmed.get(name, 0):
                confirmed[name] = value
