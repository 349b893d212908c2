"""The wire format of cached values: a versioned, self-checking, optionally signed envelope.

Layout: ``version(1) flags(1) check(4) [mac(16)] body``. ``check`` is a
CRC-32 of the Redis key name and everything else in the envelope,
so corrupted bytes are refused even without a secret. With a secret, ``mac``
is a keyed BLAKE2b-128 of the key name, the header and the body, so a value
copied under another key or planted without the secret fails. ``body`` is the
msgpack array ``[created_at, fresh_until, hard_until, load_seconds,
tag_generations, size, payload]``: ``hard_until`` is checked on every read
(with an allowance for clock skew), and ``size`` bounds decompression. The
payload is the value's msgpack (see ``types_ext``), zlib-compressed above a
threshold. Never pickle.
"""

from __future__ import annotations

import functools
import hmac
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import msgpack

from aiotoolcache.codec_warnings import ForeignWarning, UnstorableWarning
from aiotoolcache.errors import CachedLoaderError, ConfigurationError, UnserializableValue
from aiotoolcache.types_ext import ModelRegistry, ValueCodec

__all__ = [
    "Codec",
    "CorruptValue",
    "Envelope",
    "ExpiredValue",
    "ForeignSecret",
    "ModelRegistry",
    "parse_secrets",
]

FORMAT_VERSION = 2
DEFAULT_MAX_DECODED = 64 * 2**20
DEFAULT_CLOCK_SKEW = 5.0
_FLAG_COMPRESSED = 1
_FLAG_SIGNED = 2
_FLAG_NEGATIVE = 4
_KNOWN_FLAGS = _FLAG_COMPRESSED | _FLAG_SIGNED | _FLAG_NEGATIVE
_CHECK_SIZE = 4
_MAC_SIZE = 16
_HEAD = 2 + _CHECK_SIZE

Secret = str | bytes
Secrets = Secret | Sequence[Secret]


class CorruptValue(Exception):
    """Raised inside the library when stored bytes cannot be decoded or verified."""


class ExpiredValue(CorruptValue):
    """Raised when an envelope is past its hard expiry, or dated beyond the clock-skew allowance."""


class ForeignSecret(CorruptValue):
    """Raised when an intact envelope is not signed by a secret this worker holds: kept, a miss.

    That includes an unsigned envelope read with a secret, and a signed one
    read without: what a rotation or a partial roll-out of a secret looks like.
    """


@dataclass(slots=True)  # not frozen: a frozen init costs a microsecond on every L2 hit
class Envelope:
    """Envelope is one stored value with the metadata freshness decisions need.

    Treat it as immutable: readers share it (L1 keeps one per entry).

    ``hard_until`` is the absolute time (epoch seconds) after which no reader
    accepts the envelope; None when sealing means ``fresh_until`` (no stale
    window). ``negative`` marks a cached loader failure.
    """

    created_at: float
    fresh_until: float
    load_seconds: float
    tag_generations: dict[str, int] | None
    payload: bytes
    hard_until: float | None = None
    negative: bool = False

    @property
    def expires_at(self) -> float:
        """The hard expiry: ``hard_until``, or ``fresh_until`` when none was set."""
        return self.fresh_until if self.hard_until is None else self.hard_until


def parse_secrets(secret: Secrets | None) -> tuple[bytes, ...]:
    """Return the signing keys of ``secret``: the first signs, every one verifies.

    Raises ConfigurationError for an empty secret or an empty list.
    """
    if secret is None:
        return ()
    items = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not items:
        raise ConfigurationError("the list of secrets must not be empty")
    keys: list[bytes] = []
    for item in items:
        if not isinstance(item, str | bytes):
            raise ConfigurationError(f"a secret must be str or bytes, got {type(item).__name__}")
        raw = item.encode() if isinstance(item, str) else item
        if not raw:
            raise ConfigurationError("secret must not be empty")
        # blake2b keys are at most 64 bytes; hash longer secrets down to one.
        keys.append(raw if len(raw) <= 64 else blake2b(raw).digest())
    return tuple(keys)


class Codec:
    """Codec turns values into envelopes and back; bad bytes raise CorruptValue, never more.

    ``secret`` is one secret or a sequence of them: values are signed with the
    first and verified with any (rotation). ``max_decoded_bytes`` bounds what a
    read may inflate to. ``clock_skew`` is how far (seconds) worker clocks may
    disagree: a reader refuses an envelope once its own clock is past
    ``hard_until + clock_skew``, or when it is dated more than ``clock_skew``
    into the future.
    """

    def __init__(
        self,
        *,
        secret: Secrets | None = None,
        compress_threshold: int = 1024,
        registry: ModelRegistry | None = None,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED,
        clock_skew: float = DEFAULT_CLOCK_SKEW,
    ) -> None:
        if max_decoded_bytes <= 0 or not 0 <= clock_skew < math.inf:
            raise ConfigurationError("max_decoded_bytes must be > 0 and clock_skew finite, >= 0")
        self._mac_keys = parse_secrets(secret)
        self.compress_threshold = compress_threshold
        self.registry = registry or ModelRegistry()
        self.max_decoded_bytes = max_decoded_bytes
        self.clock_skew = clock_skew
        self._values = ValueCodec(self.registry)
        # Called by the layer: codec.warn_foreign(key_name, exc) for a
        # ForeignSecret, codec.warn_unstorable(layer_name, exc) for a value
        # that is returned but not stored.
        self.warn_foreign = ForeignWarning()
        self.warn_unstorable = UnstorableWarning()

    @property
    def signed(self) -> bool:
        """True when a secret is configured: values are signed and unsigned ones refused."""
        return bool(self._mac_keys)

    # -- values ---------------------------------------------------------------
    def encode_value(self, value: Any) -> bytes:
        """Return the msgpack payload of ``value``; raise UnserializableValue if it has none.

        The message names the type and the fix (``register_model``).
        """
        try:
            return self._values.pack(value)
        except UnserializableValue:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise UnserializableValue(
                f"cannot cache this {type(value).__qualname__} value: {exc}",
                value_type=type(value).__qualname__,
            ) from None

    def decode_value(self, payload: bytes, *, allow_errors: bool = False) -> Any:
        """Return the value of a payload; raise CorruptValue for anything wrong with it.

        A cached loader failure decodes (as a CachedLoaderError value, and only
        as the whole value) when ``allow_errors`` is True; otherwise it is a
        CorruptValue.
        """
        try:
            value = self._values.unpack(payload, allow_errors=allow_errors)
            if allow_errors and not isinstance(value, CachedLoaderError):
                # Decoded again without errors, so none hides inside the value.
                value = self._values.unpack(payload)
        except Exception as exc:  # msgpack and constructors raise a zoo of types on bad input
            raise CorruptValue(f"undecodable payload: {exc!r}") from None
        return value

    def decode(self, envelope: Envelope, *, allow_errors: bool = False) -> Any:
        """Return the value in ``envelope``; raise CorruptValue if it is bad or not allowed.

        A negative envelope (a cached loader failure) decodes only with
        ``allow_errors`` (the layer caches failures); any other envelope never
        decodes to a CachedLoaderError.
        """
        if not envelope.negative:
            return self.decode_value(envelope.payload)
        if not allow_errors:
            raise CorruptValue("negative entry in a layer without negative caching")
        value = self.decode_value(envelope.payload, allow_errors=True)
        if not isinstance(value, CachedLoaderError):
            raise CorruptValue("a negative entry holds something other than a loader failure")
        return value

    # -- envelopes ------------------------------------------------------------
    @staticmethod
    def _mac(key: bytes, key_name: str, header: bytes, body: bytes | memoryview) -> bytes:
        h = blake2b(key=key, digest_size=_MAC_SIZE)
        h.update(_name_prefix(key_name))
        h.update(header)
        h.update(body)
        return h.digest()

    @staticmethod
    def _check(key_name: str, header: bytes, rest: bytes | memoryview) -> bytes:
        # CRC-32 finds every burst of up to 32 flipped bits; it guards against
        # corruption, not attackers (that is the MAC's job).
        crc = zlib.crc32(rest, zlib.crc32(header, zlib.crc32(_name_prefix(key_name))))
        return crc.to_bytes(_CHECK_SIZE, "big")

    def seal(self, key_name: str, envelope: Envelope) -> bytes:
        """Return the bytes to store for ``envelope`` under ``key_name``."""
        flags = _FLAG_NEGATIVE if envelope.negative else 0
        payload = envelope.payload
        if len(payload) >= self.compress_threshold:
            compressed = zlib.compress(payload, 1)
            if len(compressed) < len(payload):
                payload, flags = compressed, flags | _FLAG_COMPRESSED
        body: bytes = msgpack.packb(
            [
                float(envelope.created_at),
                float(envelope.fresh_until),
                float(envelope.expires_at),
                float(envelope.load_seconds),
                envelope.tag_generations,
                len(envelope.payload),
                payload,
            ],
            use_bin_type=True,
        )
        if self._mac_keys:
            flags |= _FLAG_SIGNED
            header = bytes((FORMAT_VERSION, flags))
            rest = self._mac(self._mac_keys[0], key_name, header, body) + body
        else:
            header = bytes((FORMAT_VERSION, flags))
            rest = body
        return header + self._check(key_name, header, rest) + rest

    def open(
        self,
        key_name: str,
        data: bytes,
        *,
        now: float | None = None,
        max_bytes: int | None = None,
    ) -> Envelope:
        """Return the envelope stored under ``key_name``; raise CorruptValue if it is bad.

        ForeignSecret (a miss to keep, not delete) when the bytes are intact
        but no configured secret verifies them, or they are unsigned and this
        worker has a secret (or the reverse); ExpiredValue when the envelope is
        past its hard expiry. ``max_bytes`` (such as the layer's
        ``max_value_bytes``) lowers ``max_decoded_bytes`` for this read.
        """
        limit = (
            self.max_decoded_bytes if max_bytes is None else min(max_bytes, self.max_decoded_bytes)
        )
        if len(data) < _HEAD:
            raise CorruptValue("too short for an envelope")
        if data[0] != FORMAT_VERSION:
            raise CorruptValue(f"format version {data[0]}; this worker reads {FORMAT_VERSION}")
        if len(data) > limit + 65536:
            raise CorruptValue("envelope larger than max_decoded_bytes")
        view = memoryview(data)
        header, rest = bytes(view[:2]), view[_HEAD:]
        flags = header[1]
        if flags & ~_KNOWN_FLAGS:
            raise CorruptValue("unknown flags")
        body = self._verified_body(key_name, header, flags, view)
        if body is None:
            if not self._intact(key_name, header, view):
                raise CorruptValue("checksum mismatch")
            if flags & _FLAG_SIGNED and len(rest) < _MAC_SIZE:
                raise CorruptValue("truncated MAC")
            raise ForeignSecret(
                "no configured secret verifies this value"
                if flags & _FLAG_SIGNED and self._mac_keys
                else f"value is {'' if flags & _FLAG_SIGNED else 'not '}signed and this worker "
                f"has {'a' if self._mac_keys else 'no'} secret"
            )
        return self._parse(body, flags, time.time() if now is None else now, limit)

    def _intact(self, key_name: str, header: bytes, view: memoryview) -> bool:
        # A checksum, not a secret: a plain comparison leaks nothing worth timing.
        return view[2:_HEAD] == self._check(key_name, header, view[_HEAD:])

    def _verified_body(
        self, key_name: str, header: bytes, flags: int, view: memoryview
    ) -> memoryview | None:
        """Return the body if this worker can trust it, else None (foreign or corrupt)."""
        rest = view[_HEAD:]
        if not flags & _FLAG_SIGNED:
            # With a secret, unsigned values are refused: anyone with write
            # access to Redis could otherwise plant them.
            if self._mac_keys or not self._intact(key_name, header, view):
                return None
            return rest
        if not self._mac_keys or len(rest) < _MAC_SIZE:
            return None
        # A verified MAC makes the checksum redundant, so readers with a
        # secret hash the bytes once.
        mac, body = rest[:_MAC_SIZE], rest[_MAC_SIZE:]
        for key in self._mac_keys:
            if hmac.compare_digest(mac, self._mac(key, key_name, header, body)):
                return body
        return None

    def _parse(self, body: memoryview, flags: int, now: float, limit: int) -> Envelope:
        try:
            fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
            created, fresh, hard, load, tag_gens, size, payload = fields
        except Exception as exc:
            raise CorruptValue(f"undecodable envelope: {exc!r}") from None
        for number in (created, fresh, hard, load):
            # x - x is 0.0 for every finite float, NaN for NaN and infinities.
            if type(number) is not float or number - number != 0.0:
                raise CorruptValue("envelope time is not a finite float")
        skew = self.clock_skew
        if now > hard + skew:
            raise ExpiredValue(f"hard expiry passed {now - hard:.3f}s ago")
        if created > now + skew:
            raise ExpiredValue(f"dated {created - now:.3f}s in the future")
        if not isinstance(size, int) or not 0 <= size <= limit:
            raise CorruptValue("decoded size missing or above max_decoded_bytes")
        if not isinstance(payload, bytes):
            raise CorruptValue("payload is not bytes")
        if flags & _FLAG_COMPRESSED:
            payload = _inflate(payload, size)
        elif len(payload) != size:
            raise CorruptValue("payload size mismatch")
        return Envelope(
            created,
            fresh,
            load,
            _tag_generations(tag_gens),
            payload,
            hard,
            bool(flags & _FLAG_NEGATIVE),
        )


@functools.lru_cache(maxsize=4096)  # hot keys are read again and again
def _name_prefix(key_name: str) -> bytes:
    # Length-prefixed so that no key name can run into the header.
    name = key_name.encode("utf-8", "surrogatepass")
    return len(name).to_bytes(4, "big") + name


def _tag_generations(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in value.items()
    ):
        raise CorruptValue("bad tag generations")
    return value


def _inflate(payload: bytes, size: int) -> bytes:
    # Bounded by the declared size (itself at most max_decoded_bytes): a zlib
    # bomb stops after ``size + 1`` bytes instead of inflating to its full size.
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(payload, size + 1)
    except zlib.error as exc:
        raise CorruptValue(f"bad compressed payload: {exc}") from None
    if len(out) != size or decompressor.unconsumed_tail or not decompressor.eof:
        raise CorruptValue("compressed payload does not match its declared size")
    return out
