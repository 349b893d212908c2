"""Cache keys: canonical JSON of the key parts, hashed, never stored in clear.

A key part is any JSON-able value: str, numbers, bool, None, bytes, lists,
tuples, dicts (keys sorted, so argument order never matters) and pydantic
models (through ``model_dump``). The Redis key name carries only the
namespace, layer, generation, a sanitised label and a 128-bit blake2b digest,
so argument values (which can hold secrets) never appear in it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

from aiotoolcache.errors import KeyEncodingError

__all__ = ["KeyRef", "canonical_json", "digest", "sanitize_label"]

_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_LABEL_MAX = 48
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    """Turn the types orjson does not know into tagged JSON values."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset):
        # Sets have no order; sort their canonical forms so equal sets agree.
        return {"$set": sorted(canonical_json(item).decode() for item in value)}
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return {"$model": type(value).__qualname__, "data": model_dump(mode="json")}
    raise TypeError(f"{type(value).__name__} is not a JSON-able key part")


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON of ``value``: equal values give equal bytes.

    Raises KeyEncodingError when the value holds something that has no
    canonical form (an arbitrary object, a float NaN is allowed as null by orjson).
    """
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise KeyEncodingError(f"cannot use this value in a cache key: {exc}") from None


def digest(value: Any, partition: str | None = None) -> str:
    """Return the 128-bit blake2b hex digest of a key (and its partition)."""
    h = blake2b(digest_size=16)
    if partition is not None:
        # Length-prefixed so no key can collide with another key in another partition.
        raw = partition.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    h.update(canonical_json(value))
    return h.hexdigest()


def sanitize_label(label: str | None) -> str:
    """Return a short human hint safe to put in a key name (``_`` when empty)."""
    if not label:
        return "_"
    return _LABEL_UNSAFE.sub("-", label)[:_LABEL_MAX].strip("-") or "_"


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
