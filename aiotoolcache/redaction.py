"""Redaction: secret fields replaced in every shape a cassette line can hold, before it is written.

A cassette line holds three kinds of data, and a secret-named field is found
in each of them:

- plain JSON (dicts with string keys, lists);
- canonical key forms (arguments and extra), whose tags are walked like any
  JSON; a dict with a key starting with ``$`` or a non-string key is the tag
  ``{"$dict": [[key, value], …]}``, whose pairs are read as fields;
- ``{"$msgpack": "<base64>"}`` (results JSON cannot carry exactly): the
  payload is unpacked without any class (extension types stay opaque bytes),
  walked into tuples, sets, registered pydantic models, dataclasses and Enums,
  and packed again, so a model's ``api_key`` is replaced like a dict's.

A value nested deeper than :data:`MAX_NESTING` is refused with
UnserializableValue rather than written unread.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

import msgpack

from aiotoolcache.errors import UnserializableValue
from aiotoolcache.types_ext import (
    EXT_DATACLASS,
    EXT_ENUM,
    EXT_FROZENSET,
    EXT_MODEL,
    EXT_SET,
    EXT_TUPLE,
)

__all__ = ["MAX_NESTING", "MSGPACK", "REDACTED", "looks_secret", "redact"]

REDACTED = "<redacted>"
MSGPACK = "$msgpack"
DICT_TAG = "$dict"
MAX_NESTING = 200
"""The deepest nesting a cassette line may hold (a key part nests at most 64 levels)."""

# Name parts that mark a field as secret: accessToken, Authorization, password, apiKey…
_SECRET_PARTS = frozenset(
    {"token", "secret", "password", "passwd", "authorization", "auth", "apikey",
     "credential", "credentials", "cookie"}
)  # fmt: skip
# "key" alone names lookups (a cache key, a sort key): secret only after one of these.
_SECRET_KEY_KINDS = frozenset({"api", "private", "access", "secret", "signing", "session"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PARTS = re.compile(r"[^a-z0-9]+")
# Key tags holding ["<module.Class>", {field: value}].
_RECORD_TAGS = frozenset({"$dataclass", "$model", "$model_json", "$enum"})
# Extension types whose payload is itself msgpack holding fields or items.
_CONTAINER_EXTS = frozenset({EXT_TUPLE, EXT_SET, EXT_FROZENSET})
_RECORD_EXTS = frozenset({EXT_MODEL, EXT_DATACLASS, EXT_ENUM})  # payload: [name, fields]

Secret = Callable[[str], bool]


def looks_secret(name: str) -> bool:
    """True when a field name looks like it holds a secret (``api_key``, ``accessToken``…)."""
    parts = _PARTS.split(_CAMEL.sub("_", name).lower())
    if any(part in _SECRET_PARTS for part in parts):
        return True
    return any(
        part == "key" and i > 0 and parts[i - 1] in _SECRET_KEY_KINDS
        for i, part in enumerate(parts)
    )


def redact(value: Any, secret: Secret, path: str = "") -> tuple[Any, list[str]]:
    """Return the cassette form ``value`` with secret fields replaced, and their paths.

    ``value`` is what a line holds (JSON, canonical key tags, ``$msgpack``
    payloads); tuples become lists, as JSON writes them. Raises
    UnserializableValue when it nests deeper than :data:`MAX_NESTING`.
    """
    paths: list[str] = []
    return _walk(value, secret, path, paths, 0), paths


def _too_deep() -> UnserializableValue:
    return UnserializableValue(f"a value nested more than {MAX_NESTING} levels deep")


def _field(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _walk(value: Any, secret: Secret, path: str, paths: list[str], depth: int) -> Any:
    if depth > MAX_NESTING:
        raise _too_deep()
    if isinstance(value, dict):
        if len(value) == 1:
            payload = value.get(MSGPACK)
            if isinstance(payload, str):
                return {MSGPACK: _redact_blob(payload, secret, path, paths)}
            pairs = value.get(DICT_TAG)
            if isinstance(pairs, list):
                return {DICT_TAG: _walk_pairs(pairs, secret, path, paths, depth + 1)}
            ((tag, content),) = value.items()
            if isinstance(tag, str) and tag.startswith("$"):  # a tag: its path is its value's
                if tag in _RECORD_TAGS and isinstance(content, list) and len(content) == 2:
                    fields = _walk(content[1], secret, path, paths, depth + 1)
                    return {tag: [content[0], fields]}
                return {tag: _walk(content, secret, path, paths, depth + 1)}
        return _walk_fields(value, secret, path, paths, depth, _walk)
    if isinstance(value, list | tuple):
        return [
            _walk(item, secret, f"{path}[{i}]", paths, depth + 1) for i, item in enumerate(value)
        ]
    return value


def _walk_fields(
    fields: dict[Any, Any],
    secret: Secret,
    path: str,
    paths: list[str],
    depth: int,
    walk: Callable[[Any, Secret, str, list[str], int], Any],
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, item in fields.items():
        where = _field(path, key)
        if isinstance(key, str) and secret(key):
            out[key] = REDACTED
            paths.append(where)
        else:
            out[key] = walk(item, secret, where, paths, depth + 1)
    return out


def _walk_pairs(
    pairs: list[Any], secret: Secret, path: str, paths: list[str], depth: int
) -> list[Any]:
    """The pairs of a ``$dict`` tag: a string key's value is a field like a dict's."""
    out: list[Any] = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, list) and len(pair) == 2:
            key, item = pair
            where = _field(path, key if isinstance(key, str) else f"<key {i}>")
            if isinstance(key, str) and secret(key):
                out.append([key, REDACTED])
                paths.append(where)
                continue
            out.append([_walk(key, secret, where, paths, depth + 1),
                        _walk(item, secret, where, paths, depth + 1)])  # fmt: skip
        else:
            out.append(_walk(pair, secret, f"{path}[{i}]", paths, depth + 1))
    return out


# -- msgpack payloads -----------------------------------------------------------------------
def _redact_blob(payload: str, secret: Secret, path: str, paths: list[str]) -> str:
    """The base64 ``$msgpack`` payload with secret fields replaced (unchanged if none)."""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return payload  # not a payload this library wrote: nothing it could decode either
    found: list[str] = []
    redacted = _redact_packed(data, secret, path, found, 0)
    if not found:
        return payload
    paths.extend(found)
    return base64.b64encode(redacted).decode("ascii")


def _redact_packed(data: bytes, secret: Secret, path: str, paths: list[str], depth: int) -> bytes:
    if depth > MAX_NESTING:
        raise _too_deep()
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=msgpack.ExtType, use_list=True
        )
    except Exception:
        return data
    found: list[str] = []
    walked = _walk_packed(value, secret, path, found, depth)
    if not found:
        return data
    paths.extend(found)
    return msgpack.packb(walked, use_bin_type=True)  # type: ignore[no-any-return]


def _walk_packed(value: Any, secret: Secret, path: str, paths: list[str], depth: int) -> Any:
    if depth > MAX_NESTING:
        raise _too_deep()
    if isinstance(value, dict):
        return _walk_fields(value, secret, path, paths, depth, _walk_packed)
    if isinstance(value, list):
        return [
            _walk_packed(item, secret, f"{path}[{i}]", paths, depth + 1)
            for i, item in enumerate(value)
        ]
    if isinstance(value, msgpack.ExtType):
        if value.code in _CONTAINER_EXTS:
            data = _redact_packed(value.data, secret, path, paths, depth + 1)
            return msgpack.ExtType(value.code, data)
        if value.code in _RECORD_EXTS:
            return msgpack.ExtType(
                value.code, _redact_record(value.data, secret, path, paths, depth)
            )
    return value


def _redact_record(data: bytes, secret: Secret, path: str, paths: list[str], depth: int) -> bytes:
    """A registered object's payload ``[name, fields]``: its fields are walked as a dict's."""
    try:
        record = msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=msgpack.ExtType, use_list=True
        )
    except Exception:
        return data
    if not (isinstance(record, list) and len(record) == 2):
        return data
    found: list[str] = []
    fields = _walk_packed(record[1], secret, path, found, depth + 1)
    if not found:
        return data
    paths.extend(found)
    return msgpack.packb([record[0], fields], use_bin_type=True)  # type: ignore[no-any-return]
