"""Leases: at most one worker in the fleet loads a missing key at a time.

A miss's lease is a marker kept in the value key itself (memcache leases,
Nishtala et al., NSDI 2013): ``SET value marker NX PX ms GET`` takes it in one
command and, when it fails, returns what is there instead (a value filled
meanwhile, or another worker's marker). The holder fills the value with a
script that writes only while its marker is still there: a delete or a write
of the value removes the marker, so a load that raced with an invalidation
cannot write its now-old value. Markers start with a byte no envelope starts
with (see ``codec``), so readers tell them apart and read them as misses.
A marker's token names its holder's presence (see ``presence``), so a waiter
can ask Redis whether the holder still lives and take a dead one's place.

A refresh cannot park a marker in the value key (the value is still being
served), so its lease is a separate key sharing the value key's hash tag;
writes and deletes remove that key too, which revokes the refresh.

Where the server has them (see ``server_info``; chosen once, at start), a
miss's fill and a release that nobody waits for are one command each, not a
script: ``SET value data PX ms IFEQ marker`` (Valkey 8.1, Redis 8.4) and
``DELIFEQ key holder`` (Valkey 9.0) or ``DELEX key IFEQ holder`` (Redis 8.4).
Both compare the whole value, so they do nothing once a waiter has appended
"+" or the lease is gone; the script then runs for that key and wakes the
waiters or finds the lease revoked. A command the server refuses after all
(renamed, denied by an ACL) is dropped for the script.

Every script touches the keys of one slot only, so every script runs
unchanged on a Redis Cluster (the single commands are routed by their key).
Lease requests, renewals, releases and fills made in the same loop tick share
one pipeline; the scripted fills of a batch go as one script call (one per
key on a Cluster, whose keys may lie in any slot).
Batches of writes or deletes run as pipelines of script calls, in chunks that
run concurrently, and announce the whole batch with one PUBLISH once every
chunk has landed (a lone write or delete publishes from inside its script).
redis-py's cluster pipelines refuse EVALSHA, so on a Cluster the batch scripts
go as EVAL, routed per key slot and grouped per node by the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from aiotoolcache import lease_scripts as scripts
from aiotoolcache.batching import Batcher
from aiotoolcache.breaker import CircuitBreaker
from aiotoolcache.presence import Holder, Presence
from aiotoolcache.server_info import ServerInfo
from aiotoolcache.stores.redis import AnyRedis

__all__ = ["MARKER_PREFIX", "Lease", "LeaseManager", "is_marker"]

log = logging.getLogger("aiotoolcache.lease")

ItemT = TypeVar("ItemT")
ScriptCall = tuple[Any, list[str], list[Any]]  # a registered script, its keys, its arguments
# Script calls per pipeline: each chunk is one round trip (per node) within the time budget.
CHUNK = 256
# Chunks in flight per batch; each is timed from its start, not from when it was queued.
CONCURRENT_CHUNKS = 2
# Values per merged fill script: a script runs atomically, so a huge one would hold
# every other client up; past this many bytes the fills go in another call.
MERGED_FILL_BYTES = 1 << 20

# A marker: this prefix, then the holder's token, then "+" once another worker
# waits for it. No sealed envelope starts with a zero byte (its first byte is
# the format version, never 0), so a marker is never mistaken for a value.
MARKER_PREFIX = "\x00lease:"
_MARKER_BYTES = MARKER_PREFIX.encode()
# Stands for ``SET key marker NX PX ms GET`` in a batch of script calls.
_SET_NX_GET = object()
# Stands for ``SET key data PX ms IFEQ marker``: a miss's fill that nobody waits for.
_SET_IFEQ = object()
# Stands for ``DELIFEQ key holder`` or ``DELEX key IFEQ holder``: a release nobody waits for.
_DELETE_IFEQ = object()
# Plain commands standing in for scripts (they are not loaded, and a server may refuse them).
_COMMANDS = frozenset({_SET_NX_GET, _SET_IFEQ, _DELETE_IFEQ})
# The reply to one of them from a server that refuses it (SET NX GET before Redis 7.0,
# or a command renamed away or denied by an ACL): the caller goes by script instead.
_REFUSED = object()


def is_marker(data: bytes) -> bool:
    """True when ``data``, read from a value key, is a lease marker rather than a value."""
    return data.startswith(_MARKER_BYTES)


@dataclass(frozen=True, slots=True)
class Lease:
    """Lease is one lease taken: ``key`` holds ``holder`` (plus "+" once someone waits).

    ``in_value``: the holder is a marker in the value key (a miss's lease);
    else ``key`` is the entry's separate lease key (a refresh's lease).
    """

    key: str
    holder: str
    in_value: bool

    @classmethod
    def for_miss(cls, value_key: str, token: str) -> Lease:
        return cls(value_key, MARKER_PREFIX + token, True)

    @classmethod
    def for_refresh(cls, lease_key: str, token: str) -> Lease:
        return cls(lease_key, token, False)


def _refused(reply: Any) -> bool:
    """True for the errors a server answers a command or option it lacks or denies with
    (never for one a script would meet too, such as OOM or READONLY)."""
    if isinstance(reply, NoPermissionError):
        return True
    text = str(reply).lower()
    return isinstance(reply, ResponseError) and (
        "syntax error" in text or text.startswith("unknown command")
    )


class LeaseManager:
    """LeaseManager takes, extends, fills and releases leases through the breaker."""

    def __init__(self, client: AnyRedis, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        # Lease requests, renewals, releases and fills made in the same loop tick share
        # one pipelined round trip (and one breaker slot): thousands of concurrent
        # misses cost a handful of round trips, not one each.
        self._calls: Batcher[ScriptCall, Any] = Batcher(self._run_batch, CHUNK)
        self._acquire_contended = client.register_script(scripts.ACQUIRE_CONTENDED)
        self._acquire_in_value = client.register_script(scripts.ACQUIRE_IN_VALUE)
        self._extend = client.register_script(scripts.EXTEND)
        self._release = client.register_script(scripts.RELEASE)
        self._fill = client.register_script(scripts.FILL)
        self._fill_in_value = client.register_script(scripts.FILL_IN_VALUE)
        self._write = client.register_script(scripts.WRITE)
        self._delete = client.register_script(scripts.DELETE)
        self._client = client
        self.presence = Presence(client)
        # False once the server refused SET NX GET (Redis < 7.0): leases then go by script.
        self.one_command_acquire = True
        # Off (scripts) until use_server() is told the server has them.
        self.one_command_fill = False
        self.compare_and_delete: str | None = None  # "DELIFEQ", "DELEX" or None

    def use_server(self, server: ServerInfo | None) -> None:
        """Fill and release by one command where ``server`` has one (chosen once, at start)."""
        self.one_command_fill = server is not None and server.set_ifeq
        self.compare_and_delete = None if server is None else server.compare_and_delete

    @staticmethod
    def new_token() -> str:
        """A token naming no presence: a waiter lets its lease run out its term."""
        return secrets.token_hex(12)

    async def token(self) -> str:
        """A token naming this worker's presence, so a waiter can tell when it died."""
        return await self.presence.token()

    def names_presence(self, marker: bytes) -> bool:
        """True when ``marker`` names its holder's presence (so it can be asked after)."""
        return self.presence.probing and Holder.parse(self._token_of(marker)) is not None

    @staticmethod
    def _token_of(marker: bytes) -> str:
        return marker[len(_MARKER_BYTES) :].decode("ascii", "replace")

    async def holder_gone(self, marker: bytes) -> bool:
        """True when Redis says the worker that parked ``marker`` is no longer connected."""
        holder = Holder.parse(self._token_of(marker))
        return holder is not None and not await self.presence.alive(holder)

    async def aclose(self) -> None:
        await self.presence.aclose()

    def close_now(self) -> None:
        self.presence.close_now()

    async def acquire(
        self, lease: Lease, lease_ms: int, *, replacing: bytes | None = None
    ) -> tuple[int, bytes | None]:
        """Take ``lease``: ``(-1, None)`` when taken, ``(-2, data)`` when its value key
        holds a value after all, else ``(the holder's remaining ms, its marker)``
        (the marker is None for a refresh's lease).

        ``replacing``: a value the caller read but cannot use, or the marker of
        a holder that is gone; a miss's lease takes its place if it is still there.
        """
        ms = max(1, lease_ms)
        if not lease.in_value:
            client = self._client
            taken = await self._breaker.call(
                lambda: client.set(lease.key, lease.holder, nx=True, px=ms)
            )
            if taken:
                return -1, None
            held = await self._calls.call(
                (self._acquire_contended, [lease.key], [lease.holder, ms])
            )
            return int(held), None
        if replacing is None and self.one_command_acquire:
            found = await self._calls.call((_SET_NX_GET, [lease.key], [lease.holder, ms]))
            if found is _REFUSED:
                self.one_command_acquire = False  # an older server: the script does the same
            elif found is None:
                return -1, None
            elif not is_marker(bytes(found)):
                return -2, bytes(found)
        # SHA-1 because the script can compute it (redis.sha1hex); it only names the value.
        digest = "" if replacing is None else sha1(replacing, usedforsecurity=False).hexdigest()
        reply = await self._calls.call(
            (self._acquire_in_value, [lease.key], [lease.holder, ms, digest])
        )
        if int(reply[0]) == -2:
            return -2, bytes(reply[1])
        held = bytes(reply[1]) if len(reply) > 1 else None
        return int(reply[0]), held

    async def extend(self, lease: Lease, lease_ms: int) -> bool:
        """Renew ``lease`` for ``lease_ms``; False once it is gone (revoked or expired)."""
        reply = await self._calls.call((self._extend, [lease.key], [lease.holder, lease_ms]))
        return int(reply) == 1

    async def release(self, lease: Lease, channel: str, message: bytes) -> bool:
        """Drop ``lease`` if it is still held, announcing it to waiting workers."""
        command = self.compare_and_delete
        if command is not None:
            # Deletes the holder only as it was taken, without "+": nobody waits, none to wake.
            deleted = await self._calls.call((_DELETE_IFEQ, [lease.key], [command, lease.holder]))
            if deleted is _REFUSED:
                self._note_refusal(command)
                self.compare_and_delete = None
            elif int(deleted) == 1:
                return True
            # Not deleted: awaited (the script wakes the waiters) or gone (it finds it so).
        call = (self._release, [lease.key], [lease.holder, channel, message])
        return int(await self._calls.call(call)) == 1

    async def fill(
        self,
        value_key: str,
        lease: Lease,
        data: bytes,
        ttl_ms: int,
        channel: str,
        message: bytes,
        always_announce: bool = False,
    ) -> bool:
        """Write ``data`` only while ``lease`` is held; announce it when awaited.

        ``always_announce`` publishes even when no worker waits: a refresh
        replaces a value other workers may still hold stale in L1.
        """
        always = "1" if always_announce else "0"
        px = max(1, ttl_ms)
        if lease.in_value:
            if self.one_command_fill and not always_announce:
                # Writes only over the marker as taken, without "+": nobody waits, none to wake.
                stored = await self._calls.call((_SET_IFEQ, [value_key], [lease.holder, data, px]))
                if stored is _REFUSED:
                    self._note_refusal("SET IFEQ")
                    self.one_command_fill = False
                elif stored:
                    return True
                # Not stored: awaited (the script fills and wakes) or revoked (it refuses too).
            args = [channel, lease.holder, data, px, always, message]
            [filled] = await self._calls.call((self._fill_in_value, [value_key], args))
            return int(filled) == 1
        args = [lease.holder, data, px, channel, message, always]
        return int(await self._calls.call((self._fill, [value_key, lease.key], args))) == 1

    @staticmethod
    def _note_refusal(command: str) -> None:
        log.info("the server refuses %s: leases go by script instead", command)

    async def _run_batch(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls in one pipeline through the breaker; return their replies.

        Scripts go by SHA (EVAL on a Cluster, whose pipelines refuse EVALSHA);
        after a Redis restart forgot them, they are loaded again and the calls
        that met no script are sent once more (only those: a conditional command
        sent twice would find its own write and report it as lost). A script
        error fails the whole batch.
        """
        client = self._client

        async def run(batch: Sequence[ScriptCall], first: bool) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                places = self._queue(pipe, batch)
                raw = list(await pipe.execute(raise_on_error=False))
            replies = [
                raw[at] if part is None or isinstance(raw[at], Exception) else [raw[at][part]]
                for at, part in places
            ]
            for at, (script, _, _) in enumerate(batch):
                if script in _COMMANDS and _refused(replies[at]):
                    replies[at] = _REFUSED  # not a failure: the caller goes by script instead
            for reply in replies:
                if isinstance(reply, Exception) and not (
                    first and isinstance(reply, NoScriptError)
                ):
                    raise reply  # inside the breaker: counted, and made a BackendError
            return replies

        async def load_scripts(batch: Sequence[ScriptCall]) -> None:
            scripts = [script for script, _, _ in batch if script not in _COMMANDS]
            for script in {script.sha: script for script in scripts}.values():
                await client.script_load(script.script)

        replies = await self._breaker.call(lambda: run(calls, True))
        forgotten = [at for at, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if forgotten:
            again = [calls[at] for at in forgotten]
            await self._breaker.call(lambda: load_scripts(again))
            retried = await self._breaker.call(lambda: run(again, False))
            for at, reply in zip(forgotten, retried, strict=True):
                replies[at] = reply
        return replies

    def _queue(self, pipe: Any, calls: Sequence[ScriptCall]) -> list[tuple[int, int | None]]:
        """Queue ``calls`` on ``pipe``; return where each one's reply will be:
        ``(reply index, None)``, or ``(reply index, position)`` for a fill merged
        with others of the batch into one script call (not on a Cluster, whose
        keys may lie in any slot)."""
        merge = not isinstance(self._client, RedisCluster)
        commands: list[list[ScriptCall]] = []  # each: one call, or fills merged into one
        places: list[tuple[int, int | None]] = []
        open_fills: dict[str, tuple[int, int]] = {}  # channel -> (command, bytes so far)
        for call in calls:
            script, _, args = call
            if merge and script is self._fill_in_value:
                channel, size = args[0], len(args[2])
                group = open_fills.get(channel)
                if group is not None and group[1] + size <= MERGED_FILL_BYTES:
                    places.append((group[0], len(commands[group[0]])))
                    commands[group[0]].append(call)
                    open_fills[channel] = (group[0], group[1] + size)
                    continue
                open_fills[channel] = (len(commands), size)
                places.append((len(commands), 0))
            else:
                places.append((len(commands), None))
            commands.append([call])
        for command in commands:
            script, keys, args = command[0]
            if len(command) > 1:
                keys = [key for _, call_keys, _ in command for key in call_keys]
                args = [args[0]] + [arg for _, _, call_args in command for arg in call_args[1:]]
            if script is _SET_NX_GET:
                pipe.set(keys[0], args[0], nx=True, px=args[1], get=True)
            elif script is _SET_IFEQ:
                # Spelled out: redis-py warns that its ifeq= argument is experimental.
                pipe.execute_command("SET", keys[0], args[1], "PX", args[2], "IFEQ", args[0])
            elif script is _DELETE_IFEQ:
                command, holder = args
                condition = ["IFEQ"] if command == "DELEX" else []
                pipe.execute_command(command, keys[0], *condition, holder)
            elif merge:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            else:
                pipe.eval(script.script, len(keys), *keys, *args)
        return places

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
