"""Generations in Redis: the scripts that bump and merge them, and the bound on what is read.

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

The ``ns`` field is created by the first worker that finds it missing. A
hash without it was never written, or was lost (evicted, a failover to a
replica that never had it): a worker cannot tell which, so either way it
starts a new namespace generation, and no entry written before is reachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BUMP", "MERGE", "Bumped", "StoredGenerations", "parse_bumped", "parse_stored"]

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
