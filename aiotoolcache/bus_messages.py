"""Bus messages on the wire: msgpack maps, signed with a keyed MAC when there is a secret.

A message says who sent it (``o``), what happened (``op``) and to what. With
a secret, the wire form is a marker byte, a 16-byte BLAKE2b MAC keyed with a
key derived from the secret (so a bus key never signs a value), and the
body; a message that fails the check is not one of ours. A generation in a
message is accepted only below a sane bound: a forged or corrupt huge value
would otherwise make every worker ignore the real bumps after it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import msgpack

__all__ = [
    "MAX_GENERATION",
    "MAX_GENERATION_LEAD_MS",
    "Message",
    "bus_keys",
    "decode_message",
    "encode_message",
    "generation_bound",
    "now_ms",
    "sane_generation",
]

Message = dict[str, Any]
_MAC_SIZE = 16
_SIGNED = b"\x01"
# A generation may run ahead of this worker's clock by this much (ms) and no more.
MAX_GENERATION_LEAD_MS = 10 * 60 * 1000
# No generation goes past this, so every one is exact in a Lua double (the bump script).
MAX_GENERATION = 2**53 - 1


def now_ms() -> int:
    return int(time.time() * 1000)


def _mac(key: bytes, body: bytes) -> bytes:
    return blake2b(body, key=key, digest_size=_MAC_SIZE, person=b"atc-bus").digest()


def encode_message(message: Message, keys: tuple[bytes, ...] = ()) -> bytes:
    """Return the wire form of ``message``, signed with the first of ``keys`` if any."""
    body = bytes(msgpack.packb(message, use_bin_type=True))
    if not keys:
        return body
    return _SIGNED + _mac(keys[0], body) + body


def decode_message(data: Any, keys: tuple[bytes, ...] = ()) -> Message | None:
    """Return the message in ``data``, or None when it is not one of ours (or not signed
    by one of ``keys`` when there are keys)."""
    if not isinstance(data, bytes):
        return None
    if keys:
        if data[:1] != _SIGNED or len(data) < 1 + _MAC_SIZE:
            return None
        mac, data = data[1 : 1 + _MAC_SIZE], data[1 + _MAC_SIZE :]
        if not any(hmac.compare_digest(mac, _mac(key, data)) for key in keys):
            return None
    try:
        message = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        return None
    return message


def bus_keys(secrets: Sequence[bytes]) -> tuple[bytes, ...]:
    """The bus's MAC keys, one per secret (derived, so a bus key never signs a value)."""
    return tuple(
        blake2b(secret, digest_size=32, person=b"atc-bus-key").digest() for secret in secrets
    )


def generation_bound(local: int) -> int:
    """The largest generation a worker that knows ``local`` accepts: not far beyond its
    clock or what it knows, and never past ``MAX_GENERATION``."""
    return min(MAX_GENERATION, max(local + 1_000_000, now_ms() + MAX_GENERATION_LEAD_MS))


def sane_generation(value: Any, local: int) -> bool:
    """True for a generation a worker may accept: an int not far beyond anything plausible."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= generation_bound(local)
    )
