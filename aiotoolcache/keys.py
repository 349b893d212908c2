"""Cache keys: a typed canonical form of the key parts, hashed, never stored in clear.

Two key values share an entry only when they are equal under the rule below;
any other pair of values gets two entries. The canonical form is JSON:

* **Plain values** — ``str``, ``int``, finite ``float``, ``bool``, ``None``,
  ``list``, ``tuple`` and ``dict`` with ``str`` keys — are their compact JSON
  with dict keys sorted (``orjson`` with ``OPT_SORT_KEYS``). This is the fast
  path, and the form every key had before typed keys, so those keys keep
  their digests.
* **Every other value** becomes a *tag*: a JSON object with one key that
  starts with ``$`` (``{"$uuid": "…"}``). A dict of the caller's whose keys
  are not all strings, or that has a key starting with ``$``, is itself
  written as a tag, ``{"$dict": [[key, value], …]}``, so a caller's dict can
  never pass for a tag.

=============================  ===============================================
value                          canonical form
=============================  ===============================================
NaN, ``inf``, ``-inf``          ``{"$float": "nan"}`` / ``"inf"`` / ``"-inf"``
int beyond 64 bits             ``{"$int": "<decimal digits>"}``
bytes, bytearray, memoryview   ``{"$bytes": "<base64>"}``
set, frozenset                 ``{"$set": [items sorted by canonical form]}``
datetime                       ``{"$datetime": "<isoformat, µs, offset>"}``
date / time                    ``{"$date": …}`` / ``{"$time": "<isoformat, µs>"}``
timedelta                      ``{"$timedelta": [days, seconds, µs]}``
UUID                           ``{"$uuid": "<canonical hex>"}``
Decimal                        ``{"$decimal": "<str(value)>"}``
Enum member                    ``{"$enum": ["<module.Class>", value]}``
dataclass instance             ``{"$dataclass": ["<module.Class>", {field: value}]}``
pydantic model                 ``{"$model": ["<module.Class>", model_dump()]}``
model with an untyped field   ``{"$model_json": ["<module.Class>", JSON dump]}``
other dict                     ``{"$dict": [[key, value], …]}``, sorted by key
=============================  ===============================================

The equality rule, where it differs from Python's ``==``:

* ``bool``, ``int``, ``float`` and ``Decimal`` never share a key:
  ``True``, ``1``, ``1.0`` and ``Decimal("1")`` are four keys, as ``true``,
  ``1`` and ``1.0`` are three JSON values a tool may treat differently.
* floats share a key when their ``repr`` is equal: ``-0.0`` is not ``0.0``,
  and every NaN is the same key (although ``nan != nan``). Decimals share a
  key when their ``str`` is equal (``Decimal("1.0")`` is not ``Decimal("1")``).
* a tuple is the list with the same items (JSON has one array type, MCP
  arguments arrive as lists, and the library's own keys are tuples); a set
  is the frozenset with the same items; bytes, bytearray and memoryview of
  the same bytes share a key.
* a datetime or time carries its UTC offset: the same instant written in
  two offsets is two keys, and a naive value never matches an aware one.
* subclasses of ``str``, ``int``, ``float``, ``list``, ``tuple`` and
  ``dict`` are keys of their base type (but an ``Enum`` member never is).

Anything else (an arbitrary object, a string with a lone surrogate, nesting
deeper than 64 levels or a cycle) raises ``KeyEncodingError`` naming the
type and where it was found (``$["args"][2]``), before any loader runs.

The Redis key name carries only the namespace, layer, generation, a
sanitised label and a 128-bit blake2b digest of this form, so argument
values (which can hold secrets) never appear in it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from hashlib import blake2b
from typing import Any
from uuid import UUID

import orjson

from aiotoolcache.errors import KeyEncodingError

__all__ = [
    "KeyRef",
    "canonical_json",
    "digest",
    "generation_scope",
    "sanitize_label",
    "scalar_memo",
]

_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_LABEL_MAX = 48
_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS
# Deep enough for any argument; tags nest up to 3 JSON levels per level, within orjson's limit.
_MAX_DEPTH = 64
# orjson writes exactly these ints; larger ones get a tag on both paths.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


# Types whose == and hash agree with their canonical form: equal values of one of them
# name one entry. (``1 == True`` needs the type beside the value; ``0.0 == -0.0``
# rules out floats.)
_MEMO_TYPES = frozenset({str, int, bool, type(None)})


def scalar_memo(values: tuple[Any, ...], named: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A hashable form of ``values`` and ``named`` under which an entry name may be
    remembered (see ``Layer.remembered_ref``): equal forms have equal canonical keys.

    None when any value is not a str, an int, a bool or None (or a name not a str).
    """
    memo: list[Any] = [values]  # then each value's type, then (name, value, type) triples
    for value in values:
        kind = type(value)
        if kind not in _MEMO_TYPES:
            return None
        memo.append(kind)
    for name, value in named.items():
        kind = type(value)
        if kind not in _MEMO_TYPES or type(name) is not str:
            return None
        memo += (name, value, kind)
    return tuple(memo)


def canonical_json(value: Any) -> bytes:
    """Return the canonical form of ``value``: equal keys give equal bytes, others differ.

    Raises KeyEncodingError for a value with no canonical form.
    """
    if _is_plain(value, 0):
        try:
            out = _dumps(value, option=_SORTED)
        except orjson.JSONEncodeError:
            pass  # a non-str dict key, a huge int or a surrogate: the typed path decides
        else:
            # A dict key starting with "$" needs escaping; a "$…" string value
            # only takes the slower path, which writes it the same way.
            if b'"$' not in out:
                return out
    typed = _typed(value, "$", 0)
    try:
        return orjson.dumps(typed, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # not expected: _typed checked every part
        raise _refuse(f"this value ({exc})", "$") from None


def _is_plain(value: Any, depth: int) -> bool:
    """True when ``value`` holds only types whose plain JSON is already canonical.

    Exact types only, checked inline: this walk is the whole price of typed
    keys for ordinary arguments.
    """
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return (
            kind is str
            or kind is int
            or kind is bool
            or value is None
            or (kind is float and not value - value)
        )
    for item in items:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if item - item:  # inf - inf and nan - nan are nan, which is truthy
                return False
        elif kind is dict or kind is list or kind is tuple:
            if depth >= _MAX_DEPTH or not _is_plain(item, depth + 1):
                return False
        else:
            return False
    return True


def _refuse(what: str, path: str) -> KeyEncodingError:
    if len(path) > 120:
        path = f"{path[:60]}…{path[-40:]}"
    return KeyEncodingError(f"cannot use {what} in a cache key (at {path})")


def _type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _text(value: str, path: str) -> str:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _refuse("a str with a lone surrogate", path) from None
    return value


def _typed(value: Any, path: str, depth: int) -> Any:
    """Return the JSON-able canonical value of ``value`` (tags for what JSON cannot say)."""
    if depth > _MAX_DEPTH:
        raise _refuse(f"nesting deeper than {_MAX_DEPTH} levels (or a cycle)", path)
    kind = type(value)
    if kind is bool or value is None:
        return value
    if isinstance(value, Enum):  # before str and int: IntEnum and StrEnum are both
        return {"$enum": [_type_name(kind), _typed(value.value, f"{path}.value", depth + 1)]}
    if isinstance(value, str):
        return _text(str.__str__(value), path)
    if isinstance(value, int):
        whole = int.__index__(value)
        return whole if _INT_MIN <= whole <= _INT_MAX else {"$int": str(whole)}
    if isinstance(value, float):
        number = float.__float__(value)
        if number - number:
            return {"$float": repr(number)}  # "nan", "inf" or "-inf"
        return number
    if isinstance(value, list | tuple):
        return [_typed(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return _typed_dict(value, path, depth)
    encode = _TAGGERS.get(kind) or _tagger_for(value)
    if encode is None:
        raise _refuse(f"a value of type {_type_name(kind)}", path)
    return encode(value, path, depth)


def _typed_dict(value: dict[Any, Any], path: str, depth: int) -> Any:
    plain: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or isinstance(key, Enum):
            break
        text = _text(str.__str__(key), f"{path}[{_name(key)}] key")
        if text.startswith("$"):
            break  # written as a $dict so it cannot pass for a tag
        plain[text] = _typed(item, f"{path}[{_name(key)}]", depth + 1)
    else:
        if len(plain) == len(value):
            return plain
    entries = []
    for key, item in value.items():
        where = f"{path}[{_name(key)}]"
        canon_key = _typed(key, f"{where} key", depth + 1)
        canon_item = _typed(item, where, depth + 1)
        entries.append((_sort_form(canon_key), _sort_form(canon_item), canon_key, canon_item))
    # Sorted by key, then value: keys that are distinct in Python but one key
    # here (two NaNs) still give one order.
    entries.sort(key=lambda entry: entry[:2])
    return {"$dict": [[canon_key, item] for _, _, canon_key, item in entries]}


def _name(key: Any) -> str:
    """A dict key for an error message: a short str key, else only its type."""
    return ascii(key)[:40] if isinstance(key, str) else f"<{type(key).__name__} key>"


def _sort_form(canon: Any) -> bytes:
    return orjson.dumps(canon, option=orjson.OPT_SORT_KEYS)


def _set(value: Any, path: str, depth: int) -> Any:
    items = [_typed(item, f"{path}{{item}}", depth + 1) for item in value]
    return {"$set": sorted(items, key=_sort_form)}


def _datetime(value: dt.datetime, path: str, depth: int) -> Any:
    return {"$datetime": value.isoformat(timespec="microseconds")}


def _date(value: dt.date, path: str, depth: int) -> Any:
    return {"$date": value.isoformat()}


def _time(value: dt.time, path: str, depth: int) -> Any:
    return {"$time": value.isoformat(timespec="microseconds")}


def _timedelta(value: dt.timedelta, path: str, depth: int) -> Any:
    return {"$timedelta": [value.days, value.seconds, value.microseconds]}


def _bytes(value: Any, path: str, depth: int) -> Any:
    return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}


def _uuid(value: UUID, path: str, depth: int) -> Any:
    return {"$uuid": str(value)}


def _decimal(value: Decimal, path: str, depth: int) -> Any:
    return {"$decimal": str(value)}


def _dataclass(value: Any, path: str, depth: int) -> Any:
    fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return {"$dataclass": [_type_name(type(value)), _typed(fields, path, depth + 1)]}


def _model(value: Any, path: str, depth: int) -> Any:
    name = _type_name(type(value))
    try:
        return {"$model": [name, _typed(value.model_dump(), path, depth + 1)]}
    except KeyEncodingError:
        pass  # a field type with no typed form (a URL, …): its JSON dump still tells values apart
    except Exception as exc:
        raise _refuse(f"a {name} whose model_dump() fails ({type(exc).__name__})", path) from exc
    try:
        dumped = value.model_dump(mode="json")
    except Exception as exc:
        raise _refuse(f"a {name} whose model_dump() fails ({type(exc).__name__})", path) from exc
    return {"$model_json": [name, _typed(dumped, path, depth + 1)]}


_Tagger = Callable[[Any, str, int], Any]
_TAGGERS: dict[type, _Tagger] = {
    set: _set,
    frozenset: _set,
    dt.datetime: _datetime,
    dt.date: _date,
    dt.time: _time,
    dt.timedelta: _timedelta,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    UUID: _uuid,
    Decimal: _decimal,
}


def _tagger_for(value: Any) -> _Tagger | None:
    """Find the tag of a subclass, a dataclass or a pydantic model (None: refused)."""
    if isinstance(value, type):
        return None  # classes are not key parts, though they look like dataclasses
    if dataclasses.is_dataclass(value):
        return _dataclass
    if callable(getattr(value, "model_dump", None)):
        return _model
    for base, tagger in _TAGGERS.items():  # datetime comes before date: a datetime is a date
        if isinstance(value, base):
            return tagger
    return None


def digest(value: Any, partition: str | None = None) -> str:
    """Return the 128-bit blake2b hex digest of a key (and its partition).

    Raises KeyEncodingError for a key with no canonical form or a partition
    that is not a str or holds a lone surrogate.
    """
    canonical = canonical_json(value)
    if partition is None:
        return blake2b(canonical, digest_size=16).hexdigest()
    if not isinstance(partition, str):
        raise _refuse(f"a partition of type {_type_name(type(partition))}", "partition")
    raw = _text(partition, "partition").encode()
    # Length-prefixed so no key can collide with another key in another partition.
    h = blake2b(len(raw).to_bytes(4, "big"), digest_size=16)
    h.update(raw)
    h.update(canonical)
    return h.hexdigest()


def sanitize_label(label: str | None) -> str:
    """Return a short human hint safe to put in a key name (``_`` when empty).

    Raises KeyEncodingError for a label holding a lone surrogate.
    """
    if not label:
        return "_"
    if not isinstance(label, str):
        raise _refuse(f"a label of type {_type_name(type(label))}", "label")
    _text(label, "label")
    return _LABEL_UNSAFE.sub("-", label)[:_LABEL_MAX].strip("-") or "_"


def generation_scope(namespace_generation: int, layer_generation: int) -> str:
    """The part of a key name that says which generations (namespace, layer) it was built under."""
    return f"g{namespace_generation}.{layer_generation}"


@dataclass(frozen=True, slots=True)
class KeyRef:
    """KeyRef is one resolved cache entry: its digest and its Redis key names.

    ``value_key`` and ``lease_key`` share the ``{digest}`` hash tag so in a
    Redis Cluster a value and its lease always live in the same slot. A
    KeyRef passed back as a key skips hashing the key again; ``generation``
    says which generations it was built under, so a stale one is rebuilt.
    """

    layer: str
    digest: str
    value_key: str
    label: str = "_"
    generation: str = ""

    @property
    def lease_key(self) -> str:
        return self.value_key + ":lease"

    @classmethod
    def build(
        cls, namespace: str, layer: str, generation: str, label: str, key_digest: str
    ) -> KeyRef:
        value_key = f"{namespace}:{layer}:{generation}:{label}:{{{key_digest}}}"
        return cls(layer, key_digest, value_key, label, generation)
