"""The wire format of cached values: a versioned, optionally signed msgpack envelope.

Layout: ``version(1) flags(1) [mac(16)] body`` where body is the msgpack array
``[created_at, fresh_until, load_seconds, tag_generations, payload]`` and the
payload is the msgpack of the value, zlib-compressed above a threshold. The MAC
(keyed blake2b) covers the Redis key name too, so a signed value copied under
another key fails verification. Never pickle: pydantic models travel as their
JSON form under a registered name and come back only through the registry.
"""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any

import msgpack

from aiotoolcache.errors import CachedLoaderError, ConfigurationError, UnserializableValue

__all__ = ["Codec", "CorruptValue", "Envelope", "ModelRegistry"]

FORMAT_VERSION = 1
_FLAG_COMPRESSED = 1
_FLAG_SIGNED = 2
_MAC_SIZE = 16
_EXT_MODEL = 1
_EXT_ERROR = 2
_MAX_DECODED = 64 * 2**20


class CorruptValue(Exception):
    """Raised inside the library when stored bytes cannot be decoded or verified."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """Envelope is one stored value with the metadata freshness decisions need."""

    created_at: float
    fresh_until: float
    load_seconds: float
    tag_generations: dict[str, int] | None
    payload: bytes


class ModelRegistry:
    """ModelRegistry maps names to the pydantic model classes allowed in cached values.

    Decoding never imports a class path found in data: an unknown name is a miss.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[Any]] = {}
        self._by_class: dict[type[Any], str] = {}

    def register(self, model: type[Any], name: str | None = None) -> None:
        """Allow ``model`` in cached values under ``name`` (default: its module and qualname).

        Raises ConfigurationError when ``model`` is not a pydantic model class or
        the name already belongs to another class.
        """
        if not callable(getattr(model, "model_validate", None)):
            raise ConfigurationError(f"{model!r} is not a pydantic model class")
        name = name or f"{model.__module__}.{model.__qualname__}"
        existing = self._by_name.get(name)
        if existing is not None and existing is not model:
            raise ConfigurationError(f"model name {name!r} is already registered")
        self._by_name[name] = model
        self._by_class[model] = name

    def name_of(self, model: type[Any]) -> str | None:
        """Return the registered name of ``model``, or None when it is not registered."""
        return self._by_class.get(model)

    def model_for(self, name: str) -> type[Any] | None:
        """Return the class registered as ``name``, or None: never imported from the name."""
        return self._by_name.get(name)


class Codec:
    """Codec turns values into envelopes and back; bad bytes raise CorruptValue, never more."""

    def __init__(
        self,
        *,
        secret: bytes | str | None = None,
        compress_threshold: int = 1024,
        registry: ModelRegistry | None = None,
    ) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and not secret:
            raise ConfigurationError("secret must not be empty")
        # blake2b keys are at most 64 bytes; hash longer secrets down to one.
        self._mac_key = (
            None if secret is None else secret if len(secret) <= 64 else blake2b(secret).digest()
        )
        self.compress_threshold = compress_threshold
        self.registry = registry or ModelRegistry()

    @property
    def signed(self) -> bool:
        """True when a secret is configured: values are signed and unsigned ones refused."""
        return self._mac_key is not None

    # -- values ---------------------------------------------------------------
    def _pack_default(self, value: Any) -> Any:
        name = self.registry.name_of(type(value))
        if name is not None:
            data = value.model_dump(mode="json")
            return msgpack.ExtType(_EXT_MODEL, msgpack.packb([name, data], use_bin_type=True))
        if isinstance(value, CachedLoaderError):
            fields = [value.error_type, value.message]
            return msgpack.ExtType(_EXT_ERROR, msgpack.packb(fields, use_bin_type=True))
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise TypeError(f"cannot cache a value of type {type(value).__name__}")

    def encode_value(self, value: Any) -> bytes:
        """Return the msgpack payload of ``value``; raise UnserializableValue if it has none."""
        try:
            return bytes(msgpack.packb(value, default=self._pack_default, use_bin_type=True))
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnserializableValue(str(exc)) from None

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_ERROR:
            error_type, message = msgpack.unpackb(data, raw=False)
            return CachedLoaderError(str(error_type), str(message))
        if code != _EXT_MODEL:
            raise CorruptValue(f"unknown extension type {code}")
        name, fields = msgpack.unpackb(data, raw=False)
        model = self.registry.model_for(name)
        if model is None:
            raise CorruptValue(f"model {name!r} is not registered")
        return model.model_validate(fields)

    def decode_value(self, payload: bytes) -> Any:
        """Return the value of a payload; raise CorruptValue for anything wrong with it."""
        try:
            return msgpack.unpackb(
                payload, raw=False, ext_hook=self._ext_hook, strict_map_key=False
            )
        except CorruptValue:
            raise
        except Exception as exc:  # msgpack raises a zoo of types on hostile input
            raise CorruptValue(f"undecodable payload: {exc!r}") from None

    # -- envelopes ------------------------------------------------------------
    def _mac(self, key_name: str, header: bytes, body: bytes) -> bytes:
        assert self._mac_key is not None
        h = blake2b(key=self._mac_key, digest_size=_MAC_SIZE)
        h.update(key_name.encode())
        h.update(header)
        h.update(body)
        return h.digest()

    def seal(self, key_name: str, envelope: Envelope) -> bytes:
        """Return the bytes to store for ``envelope`` under ``key_name``."""
        flags = 0
        payload = envelope.payload
        if len(payload) >= self.compress_threshold:
            compressed = zlib.compress(payload, 1)
            if len(compressed) < len(payload):
                payload, flags = compressed, flags | _FLAG_COMPRESSED
        body: bytes = msgpack.packb(
            [
                envelope.created_at,
                envelope.fresh_until,
                envelope.load_seconds,
                envelope.tag_generations,
                payload,
            ],
            use_bin_type=True,
        )
        if self._mac_key is None:
            return bytes((FORMAT_VERSION, flags)) + body
        header = bytes((FORMAT_VERSION, flags | _FLAG_SIGNED))
        return header + self._mac(key_name, header, body) + body

    def open(self, key_name: str, data: bytes) -> Envelope:
        """Return the envelope stored under ``key_name``; raise CorruptValue if it is bad."""
        if len(data) < 2 or data[0] != FORMAT_VERSION:
            raise CorruptValue("unknown format version")
        flags = data[1]
        header, body = data[:2], data[2:]
        if self._mac_key is not None:
            # With a secret configured, unsigned values are refused: anyone
            # with write access to Redis could otherwise plant them.
            if not flags & _FLAG_SIGNED or len(body) < _MAC_SIZE:
                raise CorruptValue("value is not signed")
            mac, body = body[:_MAC_SIZE], body[_MAC_SIZE:]
            if not hmac.compare_digest(mac, self._mac(key_name, header, body)):
                raise CorruptValue("MAC mismatch")
        elif flags & _FLAG_SIGNED:
            raise CorruptValue("value is signed but no secret is configured")
        try:
            created_at, fresh_until, load_seconds, tag_gens, payload = msgpack.unpackb(
                body, raw=False, strict_map_key=False
            )
            envelope = Envelope(
                float(created_at),
                float(fresh_until),
                float(load_seconds),
                _tag_generations(tag_gens),
                _as_bytes(payload),
            )
        except CorruptValue:
            raise
        except Exception as exc:
            raise CorruptValue(f"undecodable envelope: {exc!r}") from None
        if flags & _FLAG_COMPRESSED:
            envelope = replace(envelope, payload=_inflate(envelope.payload))
        return envelope


def _as_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise CorruptValue("payload is not bytes")
    return value


def _tag_generations(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in value.items()
    ):
        raise CorruptValue("bad tag generations")
    return value


def _inflate(payload: bytes) -> bytes:
    # Bounded decompression: a crafted zlib bomb cannot exhaust memory.
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(payload, _MAX_DECODED)
    except zlib.error as exc:
        raise CorruptValue(f"bad compressed payload: {exc}") from None
    if decompressor.unconsumed_tail or not decompressor.eof:
        raise CorruptValue("compressed payload too large or truncated")
    return out
