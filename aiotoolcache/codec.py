"""The wire format of cached values: a versioned, self-checking, optionally signed envelope.

Layout (format version 3): ``version(1) flags(1) check(4) [mac(16)] body``.
``check`` is a CRC-32 of the Redis key name and everything else in the
envelope, so corrupted bytes are refused even without a secret. With a
secret, ``mac`` is a keyed BLAKE2b-128 of the key name, the header and the
body, so a value copied under another key or planted without the secret
fails. ``body`` is fixed-size big-endian fields, ``created_at``,
``fresh_until``, ``hard_until``, ``load_seconds`` (float64 each) and ``size``
(uint32, the payload's inflated length), then, when the tagged flag is set, a
uint32 length and the msgpack map of tag generations, then the payload:
the value's msgpack (see ``types_ext``), zlib-compressed above a threshold.
``hard_until`` is checked on every read (with an allowance for clock skew),
and ``size`` bounds decompression. Fixed fields cost one ``unpack_from`` to
read, so opening an envelope stays cheap on every L2 hit. Never pickle.
"""

from __future__ import annotations

import functools
import hmac
import math
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, NoReturn

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

FORMAT_VERSION = 3
DEFAULT_MAX_DECODED = 64 * 2**20
DEFAULT_CLOCK_SKEW = 5.0
_FLAG_COMPRESSED = 1
_FLAG_SIGNED = 2
_FLAG_NEGATIVE = 4
_FLAG_TAGGED = 8
_KNOWN_FLAGS = _FLAG_COMPRESSED | _FLAG_SIGNED | _FLAG_NEGATIVE | _FLAG_TAGGED
_CHECK_SIZE = 4
_MAC_SIZE = 16
_HEAD = 2 + _CHECK_SIZE
_MAC_END = _HEAD + _MAC_SIZE
# created_at, fresh_until, hard_until, load_seconds, size: the body's fixed fields.
_FIELDS = struct.Struct(">ddddI")
# The same fields behind the header and the check (and the MAC), so that opening
# an envelope reads all of them with one unpack_from.
_UNSIGNED = struct.Struct(">BBI" + _FIELDS.format[1:])
_SIGNED = struct.Struct(f">BBI{_MAC_SIZE}s" + _FIELDS.format[1:])
_LENGTH = struct.Struct(">I")
# Every valid header, so neither seal nor open builds one.
_HEADERS = tuple(bytes((FORMAT_VERSION, flags)) for flags in range(_KNOWN_FLAGS + 1))

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
        # Keyed hashers to copy: a copy skips hashing the key block again.
        self._mac_bases = tuple(blake2b(key=key, digest_size=_MAC_SIZE) for key in self._mac_keys)
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

    def release_buffers(self) -> None:
        """Free the encoding buffers kept for reuse (a closed cache needs none)."""
        self._values.release_buffers()

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
    def _mac(base: blake2b, key_name: str, header: bytes, *body: bytes) -> bytes:
        h = base.copy()
        h.update(_name_prefix(key_name))
        h.update(header)
        for part in body:
            h.update(part)
        return h.digest()

    def seal(self, key_name: str, envelope: Envelope) -> bytes:
        """Return the bytes to store for ``envelope`` under ``key_name``."""
        flags = _FLAG_NEGATIVE if envelope.negative else 0
        payload = envelope.payload
        size = len(payload)
        if size >= self.compress_threshold:
            compressed = zlib.compress(payload, 1)
            if len(compressed) < size:
                payload, flags = compressed, flags | _FLAG_COMPRESSED
        fields = _FIELDS.pack(
            envelope.created_at,
            envelope.fresh_until,
            envelope.expires_at,
            envelope.load_seconds,
            size,
        )
        if envelope.tag_generations is not None:
            tags: bytes = msgpack.packb(envelope.tag_generations, use_bin_type=True)
            fields += _LENGTH.pack(len(tags)) + tags
            flags |= _FLAG_TAGGED
        if self._mac_keys:
            flags |= _FLAG_SIGNED
            header = _HEADERS[flags]
            # The MAC comes first after the check, which covers it too.
            fields = self._mac(self._mac_bases[0], key_name, header, fields, payload) + fields
        else:
            header = _HEADERS[flags]
        # CRC-32 finds every burst of up to 32 flipped bits; it guards against
        # corruption, not attackers (that is the MAC's job).
        check = zlib.crc32(payload, zlib.crc32(fields, zlib.crc32(header, _name_check(key_name))))
        return b"".join((header, check.to_bytes(_CHECK_SIZE, "big"), fields, payload))

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
        limit = self.max_decoded_bytes
        if max_bytes is not None and max_bytes < limit:
            limit = max_bytes
        length = len(data)
        if length < _HEAD:
            raise CorruptValue("too short for an envelope")
        if data[0] != FORMAT_VERSION:
            raise CorruptValue(f"format version {data[0]}; this worker reads {FORMAT_VERSION}")
        if length > limit + 65536:
            raise CorruptValue("envelope larger than max_decoded_bytes")
        flags = data[1]
        if flags & ~_KNOWN_FLAGS:
            raise CorruptValue("unknown flags")
        # The structure is read first (it cannot be trusted yet), then
        # verified, and only then are the fields' values used.
        try:
            if flags & _FLAG_SIGNED:
                _, _, check, mac, created, fresh, hard, load, size = _SIGNED.unpack_from(data)
                start = _SIGNED.size
            else:
                _, _, check, created, fresh, hard, load, size = _UNSIGNED.unpack_from(data)
                start = _UNSIGNED.size
            tags_at = start  # where the tag generations start, when tagged
            if flags & _FLAG_TAGGED:
                tags_at += _LENGTH.size
                start = tags_at + _LENGTH.unpack_from(data, start)[0]
                if start > length:
                    raise CorruptValue("tag generations run past the end of the envelope")
        except struct.error:
            raise CorruptValue("truncated envelope") from None
        payload = data[start:]
        header = _HEADERS[flags]
        if flags & _FLAG_SIGNED:
            if not self._verified(key_name, header, data[_MAC_END:], mac):
                self._refuse(key_name, header, data)
        elif self._mac_keys or check != zlib.crc32(
            data[_HEAD:], zlib.crc32(header, _name_check(key_name))
        ):
            # With a secret, unsigned values are refused: anyone with write
            # access to Redis could otherwise plant them.
            self._refuse(key_name, header, data)
        # x - x is 0.0 for every finite float, NaN for NaN and infinities (and
        # a NaN anywhere makes the sum NaN).
        if (created - created) + (fresh - fresh) + (hard - hard) + (load - load) != 0.0:
            raise CorruptValue("envelope time is not a finite float")
        if load < 0.0:  # freshness decisions scale with it (see ReadPath.maybe_refresh)
            raise CorruptValue("envelope load time is negative")
        if now is None:
            now = time.time()
        skew = self.clock_skew
        if now > hard + skew:
            raise ExpiredValue(f"hard expiry passed {now - hard:.3f}s ago")
        if created > now + skew:
            raise ExpiredValue(f"dated {created - now:.3f}s in the future")
        if size > limit:
            raise CorruptValue("declared size above max_decoded_bytes")
        if flags & _FLAG_COMPRESSED:
            payload = _inflate(payload, size)
        elif len(payload) != size:
            raise CorruptValue("payload size mismatch")
        return Envelope(
            created,
            fresh,
            load,
            _tag_generations(data[tags_at:start]) if flags & _FLAG_TAGGED else None,
            payload,
            hard,
            (flags & _FLAG_NEGATIVE) != 0,
        )

    def _verified(self, key_name: str, header: bytes, body: bytes, mac: bytes) -> bool:
        # A verified MAC makes the checksum redundant, so readers with a
        # secret hash the bytes once.
        for base in self._mac_bases:
            if hmac.compare_digest(mac, self._mac(base, key_name, header, body)):
                return True
        return False

    def _refuse(self, key_name: str, header: bytes, data: bytes) -> NoReturn:
        """Raise ForeignSecret if ``data`` is intact (a secret this worker lacks), else corrupt."""
        check = zlib.crc32(data[_HEAD:], zlib.crc32(header, _name_check(key_name)))
        # A checksum, not a secret: a plain comparison leaks nothing worth timing.
        if data[2:_HEAD] != check.to_bytes(_CHECK_SIZE, "big"):
            raise CorruptValue("checksum mismatch")
        signed = bool(header[1] & _FLAG_SIGNED)
        raise ForeignSecret(
            "no configured secret verifies this value"
            if signed and self._mac_keys
            else f"value is {'' if signed else 'not '}signed and this worker "
            f"has {'a' if self._mac_keys else 'no'} secret"
        )


@functools.lru_cache(maxsize=4096)  # hot keys are read again and again
def _name_prefix(key_name: str) -> bytes:
    # Length-prefixed so that no key name can run into the header.
    name = key_name.encode("utf-8", "surrogatepass")
    return len(name).to_bytes(4, "big") + name


@functools.lru_cache(maxsize=4096)
def _name_check(key_name: str) -> int:
    # The CRC-32 of the name prefix, where every check of this key starts.
    return zlib.crc32(_name_prefix(key_name))


@functools.lru_cache(maxsize=1024)  # entries written together carry the same generations
def _tag_generations(packed: bytes) -> dict[str, int]:
    # Shared by the envelopes that carry these bytes: envelopes are read-only.
    try:
        value = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise CorruptValue(f"undecodable tag generations: {exc!r}") from None
    if type(value) is not dict:
        raise CorruptValue("bad tag generations")
    for tag, generation in value.items():
        if type(tag) is not str or type(generation) is not int:
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
    if (
        len(out) != size
        or decompressor.unconsumed_tail
        or not decompressor.eof
        or decompressor.unused_data  # bytes after the compressed stream
    ):
        raise CorruptValue("compressed payload does not match its declared size")
    return out
