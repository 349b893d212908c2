"""The Lua scripts of leases (see ``lease``): each touches the keys of one slot only, so
every one runs unchanged on a Redis Cluster.
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE_CONTENDED",
    "ACQUIRE_IN_VALUE",
    "DELETE",
    "EXTEND",
    "FILL",
    "FILL_IN_VALUE",
    "RELEASE",
    "WRITE",
]

# A holder carries "+" once another worker waits for it: only an awaited fill
# publishes "filled", so an uncontended load costs no PUBLISH.
# KEYS: lease. ARGV: token, ms. Run when a plain SET NX of a refresh's lease failed.
# Taking a lease one already holds succeeds, so a retried call is harmless.
ACQUIRE_CONTENDED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local holder = redis.call('GET', KEYS[1])
if string.sub(holder, 1, #ARGV[1]) == ARGV[1] then return -1 end
if string.sub(holder, -1) ~= '+' then redis.call('APPEND', KEYS[1], '+') end
return redis.call('PTTL', KEYS[1])
"""
# KEYS: value. ARGV: marker, ms, SHA-1 of an unusable value or a dead holder's marker
# to take over ('' for none). Run when SET NX GET met another's marker, or to replace
# a value the caller cannot use. Returns {-1} with the lease taken, {-2, value} when
# a value is there, else {the holder's remaining ms, its marker} (the marker now says
# someone waits). A marker taken over from a dead holder had waiters: the new one
# says so too, so its fill wakes them.
ACQUIRE_IN_VALUE = """
local held = redis.call('GET', KEYS[1])
if not held or (ARGV[3] ~= '' and redis.sha1hex(held) == ARGV[3]) then
  local waited = held and string.byte(held, 1) == 0 and string.sub(held, -1) == '+'
  redis.call('SET', KEYS[1], waited and ARGV[1] .. '+' or ARGV[1], 'PX', ARGV[2])
  return {-1}
end
if string.byte(held, 1) ~= 0 then return {-2, held} end
if string.sub(held, 1, #ARGV[1]) == ARGV[1] then return {-1} end
if string.sub(held, -1) ~= '+' then
  redis.call('APPEND', KEYS[1], '+')
  held = held .. '+'
end
return {redis.call('PTTL', KEYS[1]), held}
"""
# KEYS: lease (or value). ARGV: holder, ms.
EXTEND = """
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lease (or value). ARGV: holder, channel, message. Wakes the waiters, if any.
RELEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder or string.sub(holder, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if #holder > #ARGV[1] then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
"""
# KEYS: value, lease. ARGV: data, px, channel, message. An unconditional write
# revokes any lease in flight (a marker by overwriting it, a refresh's by DEL),
# so an older load cannot overwrite it. An empty channel: the caller announces
# the batch itself.
WRITE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""
# KEYS: value, lease. ARGV: channel, message (empty channel: announced by the caller).
DELETE = """
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return 1
"""
# KEYS: value, lease. ARGV: token, data, px, channel, message, always ("1": announce
# even unawaited, so workers holding a stale copy drop it). A refresh's fill.
FILL = """
local holder = redis.call('GET', KEYS[2])
if not holder or string.sub(holder, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
if #holder > #ARGV[1] or ARGV[6] == '1' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""
# KEYS: value keys. ARGV: channel, then per key: marker, data, px, always, message.
# The fills of misses, many keys per call: each value is written only while the
# key still holds its marker (its own PX replaces the marker's short one).
# Returns 1 (filled) or 0 (revoked) per key.
FILL_IN_VALUE = """
local filled = {}
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 5
  local marker = ARGV[at]
  local held = redis.call('GET', key)
  if held and string.sub(held, 1, #marker) == marker then
    redis.call('SET', key, ARGV[at + 1], 'PX', ARGV[at + 2])
    if #held > #marker or ARGV[at + 3] == '1' then
      redis.call('PUBLISH', ARGV[1], ARGV[at + 4])
    end
    filled[i] = 1
  else
    filled[i] = 0
  end
end
return filled
"""
