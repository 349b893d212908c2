"""The cassette file: JSON Lines, a header line, then one recorded call per line.

A line is written whole and fsynced before the call returns, so a crash
leaves a valid file holding every call completed so far; a torn last line
(the process died inside a write) is ignored on reading. Values JSON cannot
carry exactly (bytes, NaN, non-string keys, registered pydantic models…) are
stored as ``{"$msgpack": "<base64>"}``: base64 of the payload the cache's own
msgpack codec produces, and the header says so.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiotoolcache.codec import Codec, CorruptValue
from aiotoolcache.errors import CassetteError, UnserializableValue
from aiotoolcache.keys import canonical_json
from aiotoolcache.redaction import MAX_NESTING, MSGPACK, REDACTED, looks_secret, redact

__all__ = [
    "FORMAT",
    "REDACTED",
    "Call",
    "Tape",
    "TapeWriter",
    "decode_value",
    "describe",
    "encode_value",
    "looks_secret",
    "read_tape",
    "redact",
]

FORMAT = 1
ENCODING_NOTE = (
    'JSON; a value JSON cannot carry exactly is {"$msgpack": base64 of the payload of '
    "aiotoolcache's msgpack codec}"
)


def _json_exact(value: Any) -> bool:
    """True when JSON carries ``value`` as the cache's codec would give it back."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64  # what msgpack carries
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):  # a tuple is not: JSON would give it back as a list
        return all(_json_exact(item) for item in value)
    if isinstance(value, dict):
        return MSGPACK not in value and all(
            isinstance(k, str) and _json_exact(v) for k, v in value.items()
        )
    return False


def encode_value(value: Any, codec: Codec) -> Any:
    """Return the JSON form of ``value``; raise UnserializableValue if the codec has none."""
    try:
        exact = _json_exact(value)
    except RecursionError:
        raise UnserializableValue(f"a value nested more than {MAX_NESTING} levels deep") from None
    if exact:
        return value
    return {MSGPACK: base64.b64encode(codec.encode_value(value)).decode("ascii")}


def decode_value(data: Any, codec: Codec) -> Any:
    """Return the value of a JSON form written by ``encode_value``."""
    if isinstance(data, dict) and set(data) == {MSGPACK}:
        try:
            return codec.decode_value(base64.b64decode(data[MSGPACK], validate=True))
        except (CorruptValue, ValueError, TypeError) as exc:
            raise CassetteError(f"undecodable recorded value: {exc}") from None
    return data


@dataclass(frozen=True, slots=True)
class Call:
    """Call is one cached call as a cassette sees it: what it was, not what it returned.

    ``op`` is the kind of call (call_tool, list_tools, search_tools, embed, call
    for ``@cached`` functions, or the first key part); ``arguments`` and
    ``extra`` are canonical JSON forms.
    """

    layer: str
    op: str
    server: str | None
    name: str | None
    arguments: Any
    extra: Any = None
    partition: str | None = None

    def fields(self) -> dict[str, Any]:
        """The call's fields in file order (``extra`` only when there is one)."""
        out: dict[str, Any] = {
            "layer": self.layer,
            "op": self.op,
            "server": self.server,
            "name": self.name,
            "arguments": self.arguments,
        }
        if self.extra is not None:
            out["extra"] = self.extra
        out["partition"] = self.partition
        return out

    def identity(self) -> str:
        """The string two calls share exactly when they match."""
        return json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))

    def title(self) -> str:
        """A short human name: ``results call_tool weather/forecast``."""
        who = "/".join(part for part in (self.server, self.name) if part)
        return " ".join(part for part in (self.layer, self.op, who) if part)

    def redacted(self, secret: Callable[[str], bool]) -> tuple[Call, list[str]]:
        """This call with secret fields of its arguments and extra replaced, and their paths."""
        arguments, paths = redact(self.arguments, secret, "arguments")
        extra, more = redact(self.extra, secret, "extra")
        call = Call(self.layer, self.op, self.server, self.name, arguments, extra, self.partition)
        return call, paths + more


def _plain(part: Any) -> Any:
    """The canonical JSON form of a key part (dict keys sorted, bytes tagged…)."""
    return json.loads(canonical_json(part))


def describe(layer: str, key: Any, partition: str | None) -> Call:
    """Return the Call of a layer key, naming its parts for the known key shapes.

    Raises KeyEncodingError when a key part has no canonical form.
    """
    parts = list(key) if isinstance(key, list | tuple) else [key]
    head = parts[0] if parts and isinstance(parts[0], str) else None
    if head is not None and head.endswith("call_tool") and len(parts) >= 4:
        extra = [_plain(p) for p in parts[4:]]
        extra_value = None if not extra or extra == [None] else extra
        args = _plain(parts[3])
        return Call(layer, head, str(parts[1]), str(parts[2]), args, extra_value, partition)
    if head == "search_tools" and len(parts) == 5:
        names = ("query", "catalog_version", "top_k", "servers")
        args = {n: _plain(p) for n, p in zip(names, parts[1:], strict=True)}
        return Call(layer, head, None, None, args, None, partition)
    if head == "embed" and len(parts) == 4:
        args = {"dimensions": _plain(parts[2]), "text": _plain(parts[3])}
        return Call(layer, head, None, str(parts[1]), args, None, partition)
    if head is not None and len(parts) == 2 and isinstance(parts[1], str):
        return Call(layer, head, parts[1], None, None, None, partition)  # list_tools, listings
    if head is not None and len(parts) == 2 and isinstance(parts[1], dict):
        return Call(layer, "call", None, head, _plain(parts[1]), None, partition)  # @cached
    return Call(layer, "get_or_load", None, None, _plain(parts), None, partition)


@dataclass(slots=True)
class Tape:
    """Tape is the content of a cassette file: its header and its calls in file order."""

    header: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    valid_bytes: int = 0  # length of the file up to the end of its last complete line
    line_numbers: list[int] = field(default_factory=list)  # of each entry, for messages


def new_header(redact_fields: Iterable[str], redact_secrets: bool) -> dict[str, Any]:
    """The first line of a new cassette: its format, value encoding and redaction."""
    return {
        "aiotoolcache_cassette": FORMAT,
        "encoding": ENCODING_NOTE,
        "redacted_fields": sorted(set(redact_fields)),
        "redacts_secret_looking_fields": redact_secrets,
        "redacted_value": REDACTED,
    }


def _too_deep(value: Any) -> bool:
    """True when ``value`` nests more than MAX_NESTING lists or objects (no recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_NESTING:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def read_tape(path: str | os.PathLike[str]) -> Tape:
    """Read a cassette file; a torn last line is dropped, any other bad line is an error.

    Every failure to read a line is a CassetteError naming the file and the line:
    a line that is not JSON, not an object, or nested more than MAX_NESTING deep.
    """
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    # Every complete line ends with a newline: what follows the last one was torn.
    complete, offset = lines[:-1], 0
    tape: Tape | None = None
    for number, line in enumerate(complete, start=1):
        offset += len(line) + 1
        try:
            record = json.loads(line)
        except RecursionError:  # nested beyond what the parser can take
            raise CassetteError(
                f"{path}:{number}: nested more than {MAX_NESTING} levels deep"
            ) from None
        except ValueError:
            if number == len(complete):
                break  # the newline made it, the line did not: same as torn
            raise CassetteError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(record, dict):
            raise CassetteError(f"{path}:{number}: not a JSON object")
        if _too_deep(record):
            raise CassetteError(f"{path}:{number}: nested more than {MAX_NESTING} levels deep")
        if tape is None:
            if record.get("aiotoolcache_cassette") != FORMAT:
                raise CassetteError(f"{path}: not an aiotoolcache cassette (format {FORMAT})")
            tape = Tape(record)
        else:
            tape.entries.append(record)
            tape.line_numbers.append(number)
        tape.valid_bytes = offset
    if tape is None:
        raise CassetteError(f"{path}: empty cassette (no header line)")
    return tape


def dump_line(record: dict[str, Any]) -> str:
    """One record as its file line: stable key order, readable, no trailing newline."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def line_bytes(record: dict[str, Any]) -> bytes:
    """One record as the UTF-8 bytes of its line; UnserializableValue if it has none."""
    try:
        return (dump_line(record) + "\n").encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as exc:  # a lone surrogate, say
        raise UnserializableValue(f"cannot write this call to a cassette: {exc}") from None


class TapeWriter:
    """TapeWriter appends records to a cassette file, each one whole and on disk on return."""

    def __init__(self, path: Path, header: dict[str, Any] | None, keep_bytes: int = 0) -> None:
        """Start a new file with ``header`` (atomically), or append after ``keep_bytes``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if header is not None:
            write_atomically(path, [header])
        else:
            with path.open("r+b") as existing:
                existing.truncate(keep_bytes)  # drop a torn last line before appending
        self._file: IO[bytes] | None = path.open("ab")

    def append(self, record: dict[str, Any]) -> None:
        """Write one record whole and fsync, so a crash after this returns keeps it.

        Raises UnserializableValue, having written nothing, when the record has no line.
        """
        if self._file is None:
            raise CassetteError("the cassette is closed")
        self._file.write(line_bytes(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_atomically(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``, one a line: a reader sees the old file or the new."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(dump_line(record) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def check_encodable(value: Any, codec: Codec) -> str | None:
    """None when ``value`` can be recorded, else the name of the type that cannot."""
    try:
        encode_value(value, codec)
    except UnserializableValue:
        return type(value).__name__
    return None
