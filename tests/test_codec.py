"""The envelope codec: anything hostile is a CorruptValue, anything JSON-able round-trips."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotoolcache.codec import Codec, CorruptValue, Envelope
from aiotoolcache.keys import canonical_json, digest

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def envelope(payload: bytes) -> Envelope:
    return Envelope(1.0, 2.0, 0.5, {"server:x": 3}, payload)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_are_corrupt_never_another_exception(data: bytes) -> None:
    for codec in (Codec(), Codec(secret="s")):
        try:
            codec.decode_value(codec.open("key", data).payload)
        except CorruptValue:
            pass


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_json_like_values_round_trip(value: Any) -> None:
    codec = Codec(secret="s", compress_threshold=64)
    sealed = codec.seal("k", envelope(codec.encode_value(value)))
    assert codec.decode_value(codec.open("k", sealed).payload) == value


@settings(max_examples=200, deadline=None)
@given(key=json_values)
def test_keys_hash_deterministically(key: Any) -> None:
    assert digest(key) == digest(key)
    assert len(digest(key)) == 32
    assert canonical_json(key) == canonical_json(key)


def test_dict_key_order_does_not_change_the_digest() -> None:
    assert digest({"a": 1, "b": [1, {"d": 1, "c": 2}]}) == digest(
        {"b": [1, {"c": 2, "d": 1}], "a": 1}
    )
    assert digest("x", partition="a") != digest("x", partition="b") != digest("x")


def test_a_zip_bomb_is_refused() -> None:
    codec = Codec()
    bomb = zlib.compress(b"\x00" * (80 * 2**20), 9)
    body = msgpack.packb([1.0, 2.0, 0.0, None, bomb], use_bin_type=True)
    with pytest.raises(CorruptValue, match="too large"):
        codec.open("k", bytes((1, 1)) + body)


def test_signed_values_do_not_verify_under_another_key_or_secret() -> None:
    codec = Codec(secret="s")
    sealed = codec.seal("k1", envelope(codec.encode_value("v")))
    with pytest.raises(CorruptValue):
        codec.open("k2", sealed)
    with pytest.raises(CorruptValue):
        Codec(secret="t").open("k1", sealed)
    with pytest.raises(CorruptValue):
        Codec().open("k1", sealed)
    with pytest.raises(CorruptValue):
        codec.open("k1", Codec().seal("k1", envelope(b"\xa1v")))  # unsigned refused


def test_unknown_model_names_are_corrupt_not_imported() -> None:
    payload = msgpack.packb(
        msgpack.ExtType(1, msgpack.packb(["os.system", {"x": 1}])), use_bin_type=True
    )
    with pytest.raises(CorruptValue, match="not registered"):
        Codec().decode_value(payload)
