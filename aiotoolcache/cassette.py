"""Cassette: record every call a ToolCache's layers make, and replay them offline.

A ToolCache built with ``cassette=`` hands each ``get_or_load`` (and so
``call_tool``, ``list_tools``, ``search_tools``, ``@cached`` and every
integration) and each ``embed`` to its Cassette before the cache sees it:
the layers never serve a repeated call from L1 or L2, so repeated calls
replay their recorded results in sequence, as the live run saw them.

Modes: ``record`` runs loaders and writes every call; ``replay`` never runs
a loader and raises CassetteMiss for a call not on the tape; ``once`` replays
if the file exists, else records; ``new`` replays what is on the tape and
records the rest (resuming an interrupted run).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

from aiotoolcache.codec import Codec
from aiotoolcache.embeddings import pack_vector, unpack_vector
from aiotoolcache.errors import (
    CachedLoaderError,
    CassetteError,
    CassetteMiss,
    ConfigurationError,
    ToolCacheError,
    UnserializableValue,
)
from aiotoolcache.tape import (
    Call,
    TapeWriter,
    decode_value,
    describe,
    encode_value,
    looks_secret,
    new_header,
    read_tape,
    redact,
    write_atomically,
)
from aiotoolcache.tape_diff import CALL_FIELDS, miss_message, nearest

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer

__all__ = ["MODES", "ORDERS", "Cassette", "options_from_url", "record_cost"]

T = TypeVar("T")
MODES: Final = ("record", "replay", "once", "new")
ORDERS: Final = ("any", "strict")

_charges: ContextVar[list[float] | None] = ContextVar("aiotoolcache_cassette_cost", default=None)


def record_cost(dollars: float) -> None:
    """Note what the tool call running now cost; a recording cassette writes it on its line.

    Without a call from the loader, a line carries its layer's ``cost_per_load``.
    Outside a recorded call this does nothing.
    """
    charges = _charges.get()
    if charges is not None:
        charges.append(float(dollars))


class Cassette:
    """Cassette is one tape of calls, played back or recorded; one per ToolCache.

    A recorded call is on disk (its line written whole and fsynced) before the
    call returns, so the file always holds every call completed so far.
    ``redact`` names fields (of arguments and results) whose values are written
    as ``"<redacted>"``; fields whose names look secret are redacted too unless
    ``redact_secrets=False``. Matching ignores redacted values. ``codec`` is the
    ToolCache's, so registered pydantic models record and replay.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: str = "once",
        order: str = "any",
        redact: Iterable[str] = (),
        redact_secrets: bool = True,
        codec: Codec | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"cassette mode must be one of {MODES}, got {mode!r}")
        if order not in ORDERS:
            raise ConfigurationError(f"cassette order must be one of {ORDERS}, got {order!r}")
        if isinstance(redact, str):
            redact = [redact]
        self.path = Path(path)
        exists = self.path.exists()
        if mode == "replay" and not exists:
            raise CassetteError(
                f"no cassette at {self.path}: record it first (mode='record' or 'once')"
            )
        self.requested_mode = mode
        self.mode = ("replay" if exists else "record") if mode == "once" else mode
        if self.mode == "new" and not exists:
            self.mode = "record"
        self.order = order
        self.redact_secrets = redact_secrets
        self._redact_names = {name.lower() for name in redact}
        self._codec = codec or Codec()
        self.misses: list[CassetteMiss] = []
        """Every CassetteMiss raised, even those a framework caught and turned into a message."""
        self.replayed = 0
        self.recorded = 0
        self._entries: list[dict[str, Any]] = []
        self._identities: list[str] = []
        self._queues: dict[str, deque[int]] = {}
        self._cursor = 0
        self._next_seq = 0
        self._writer: TapeWriter | None = None
        # id() of a recorded entry -> its line in the file, for messages (stable:
        # self._entries keeps every entry alive as long as the cassette).
        self._lines: dict[int, int] = {}
        if self.mode == "record":
            header = new_header(self._redact_names, redact_secrets)
            self._writer = TapeWriter(self.path, header)
            return
        tape = read_tape(self.path)
        # What the recording redacted, matching must ignore too, whatever this run asks.
        recorded = {str(name).lower() for name in tape.header.get("redacted_fields", ())}
        self.redact_secrets |= bool(tape.header.get("redacts_secret_looking_fields"))
        added, self._redact_names = self._redact_names - recorded, self._redact_names | recorded
        self._lines = dict(zip(map(id, tape.entries), tape.line_numbers, strict=True))
        for record in tape.entries:
            self._add_recorded(record)
        if self.mode == "new":
            keep = tape.valid_bytes
            if added:  # the header must name them, or a later replay would not ignore them
                header = {**tape.header, "redacted_fields": sorted(self._redact_names)}
                write_atomically(self.path, [header, *tape.entries])
                keep = self.path.stat().st_size
            self._writer = TapeWriter(self.path, None, keep_bytes=keep)

    def __repr__(self) -> str:
        return f"<Cassette {self.path} mode={self.mode} order={self.order}>"

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The calls read from the file when it was opened, as their JSON records."""
        return list(self._entries)

    def close(self) -> None:
        """Close the file; every recorded call is already on disk."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- matching -------------------------------------------------------------------------
    def _secret(self, name: str) -> bool:
        return name.lower() in self._redact_names or (self.redact_secrets and looks_secret(name))

    def _where(self, record: dict[str, Any]) -> str:
        line = self._lines.get(id(record))
        return f"{self.path}:{line}" if line is not None else str(self.path)

    def _add_recorded(self, record: dict[str, Any]) -> None:
        layer, op = record.get("layer"), record.get("op")
        if not isinstance(layer, str) or not isinstance(op, str):
            raise CassetteError(f"{self._where(record)}: a line without its layer and op")
        index = len(self._entries)
        try:
            call = Call(layer, op, *(record.get(name) for name in CALL_FIELDS[2:]))
            identity = call.redacted(self._secret)[0].identity()
            seq = int(record.get("seq", index))
        except (UnserializableValue, ValueError, TypeError, OverflowError) as exc:
            raise CassetteError(f"{self._where(record)}: unreadable call ({exc})") from None
        self._entries.append(record)
        self._identities.append(identity)
        self._queues.setdefault(identity, deque()).append(index)
        self._next_seq = max(self._next_seq, seq + 1)

    def _call(self, layer: str, key: Any, partition: str | None) -> tuple[Call, list[str]]:
        return describe(layer, key, partition).redacted(self._secret)

    def _take(self, call: Call) -> dict[str, Any] | None:
        """The recorded call that answers ``call`` (consumed), None to run it live, or a miss."""
        if self.mode == "record":
            return None
        identity = call.identity()
        if self.order == "strict":
            if self._cursor == len(self._entries):
                if self.mode == "new":
                    return None
                raise self._miss(call, f"the tape ended after {self._cursor} calls", [])
            index = self._cursor
            if self._identities[index] != identity:
                expected = self._entries[index]
                reason = f"out of order: recorded call #{expected.get('seq')} comes next"
                raise self._miss(call, reason, [expected])
            self._cursor += 1
            return self._entries[index]
        queue = self._queues.get(identity)
        if queue:
            return self._entries[queue.popleft()]
        if self.mode == "new":
            return None
        recorded = self._identities.count(identity)
        reason = f"made again after all {recorded} recorded" if recorded else "not recorded"
        raise self._miss(call, reason, None)

    def _miss(
        self, call: Call, reason: str, candidates: Sequence[dict[str, Any]] | None
    ) -> CassetteMiss:
        fields = call.fields()
        if candidates is None:
            candidates = nearest(fields, self._entries)
        message = miss_message(fields, reason, candidates, str(self.path))
        miss = CassetteMiss(message, call.title())
        self.misses.append(miss)
        return miss

    # -- the layer hooks --------------------------------------------------------------------
    async def through(
        self, layer: Layer, key: Any, loader: Callable[[], Awaitable[T]], partition: str | None
    ) -> T:
        """Answer one ``get_or_load`` from the tape, or run ``loader`` and record the call."""
        call, paths = self._call(layer.name, key, partition)
        entry = self._take(call)
        if entry is None:
            return await self._record(layer, call, paths, loader)
        if "unrecordable" not in entry:
            return cast(T, self._replay(layer, entry))
        if self.mode != "new":
            reason = f"recorded, but its {entry['unrecordable']} result could not be written"
            raise self._miss(call, reason, [entry])
        return (await layer.entries.run_loader(loader))[0]

    async def embed(
        self,
        layer: Layer,
        texts: Sequence[str],
        model: str,
        loader: Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]],
        *,
        dimensions: int | None,
        partition: str | None,
    ) -> list[list[float]]:
        """Return one float32 vector per text: each text replayed, or embedded live in one batch."""
        found: dict[str, list[float]] = {}
        pending: list[tuple[str, Call, list[str]]] = []
        for text in dict.fromkeys(texts):  # a text repeated in one batch is one call
            call, paths = self._call(layer.name, ("embed", model, dimensions, text), partition)
            entry = self._take(call)
            if entry is None:
                pending.append((text, call, paths))
            else:
                found[text] = [float(x) for x in self._replay(layer, entry)]
        if pending:
            todo = [text for text, _, _ in pending]
            charges: list[float] = []
            token = _charges.set(charges)
            try:
                loaded, seconds = await layer.entries.run_loader(lambda: loader(todo))
            finally:
                _charges.reset(token)
            vectors = list(loaded)
            if len(vectors) != len(todo):
                raise ToolCacheError(
                    f"embedding loader returned {len(vectors)} vectors for {len(todo)} texts"
                )
            cost = (sum(charges) if charges else layer.config.cost_per_load) / len(todo)
            for (text, call, paths), vector in zip(pending, vectors, strict=True):
                found[text] = unpack_vector(pack_vector(vector))
                self._write(call, paths, found[text], None, seconds / len(todo), cost)
        return [list(found[text]) for text in texts]

    # -- replay and record ------------------------------------------------------------------
    def _replay(self, layer: Layer, entry: dict[str, Any]) -> Any:
        counters = layer.counters
        counters.replayed += 1
        counters.replayed_seconds += float(entry.get("load_seconds") or 0.0)
        counters.replayed_cost += float(entry.get("cost") or 0.0)
        self.replayed += 1
        error = entry.get("error")
        if isinstance(error, dict):
            raise CachedLoaderError(str(error.get("type")), str(error.get("message")))
        try:
            return decode_value(entry.get("result"), self._codec)
        except CassetteError as exc:
            raise CassetteError(f"{self._where(entry)}: {exc}") from None

    async def _record(
        self, layer: Layer, call: Call, paths: list[str], loader: Callable[[], Awaitable[T]]
    ) -> T:
        charges: list[float] = []
        token = _charges.set(charges)
        started = time.perf_counter()
        try:
            value, seconds = await layer.entries.run_loader(loader)
        except Exception as exc:
            cost = sum(charges) if charges else layer.config.cost_per_load
            self._write(call, paths, None, exc, time.perf_counter() - started, cost)
            raise
        finally:
            _charges.reset(token)
        cost = sum(charges) if charges else layer.config.cost_per_load
        self._write(call, paths, value, None, seconds, cost)
        return value

    def _write(
        self,
        call: Call,
        paths: list[str],
        value: Any,
        error: Exception | None,
        seconds: float,
        cost: float,
    ) -> None:
        if self._writer is None:
            raise CassetteError(f"the cassette {self.path} is closed")
        record: dict[str, Any] = {"seq": self._next_seq, **call.fields()}
        if error is not None:
            record["result"] = None
            record["error"] = {"type": type(error).__name__, "message": str(error)}
        else:
            try:
                # Redacted in the form written, so models and dataclasses inside
                # $msgpack payloads are walked too.
                record["result"], more = redact(
                    encode_value(value, self._codec), self._secret, "result"
                )
                paths = paths + more
            except UnserializableValue:
                record["result"] = None
                record["unrecordable"] = type(value).__name__
        record["load_seconds"] = round(seconds, 6)
        record["cost"] = cost
        if paths:
            record["redacted"] = paths
        try:
            self._writer.append(record)
        except UnserializableValue:  # a string JSON cannot write (a lone surrogate)
            record["result"], record["unrecordable"] = None, type(value).__name__
            self._writer.append(record)
        self._next_seq += 1
        self.recorded += 1


def options_from_url(url: str) -> dict[str, Any]:
    """Return the ToolCache options of ``cassette://PATH?mode=…&order=…&redact=a,b``.

    ``cassette://tests/x.jsonl`` is relative to the working directory;
    ``cassette:///abs/x.jsonl`` is absolute.
    """
    parts = urlsplit(url)
    if parts.scheme != "cassette":
        raise ConfigurationError(f"not a cassette URL: {url!r}")
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise ConfigurationError(f"cassette URL needs a file path: {url!r}")
    options: dict[str, Any] = {"cassette": path}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name in ("mode", "order"):
            options[name] = values[-1]
        elif name == "redact":
            options["redact"] = [f for v in values for f in v.split(",") if f]
        else:
            raise ConfigurationError(f"unknown cassette URL option {name!r} in {url!r}")
    return options
