"""The envelope codec: anything hostile is a CorruptValue, anything storable round-trips."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiotoolcache as atc
from aiotoolcache.codec import (
    FORMAT_VERSION,
    Codec,
    CorruptValue,
    Envelope,
    ExpiredValue,
    ForeignSecret,
)
from aiotoolcache.errors import CachedLoaderError, ConfigurationError
from aiotoolcache.keys import canonical_json, digest
from aiotoolcache.settings import Settings, env_secrets

KEY = "atc:results:g0.0:lookup:{0123456789abcdef}"

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


def envelope(payload: bytes, *, ttl: float = 60.0, stale: float = 0.0) -> Envelope:
    now = time.time()
    return Envelope(now, now + ttl, 0.5, {"server:x": 3}, payload, hard_until=now + ttl + stale)


def sealed_value(codec: Codec, value: Any, key: str = KEY, **options: float) -> bytes:
    return codec.seal(key, envelope(codec.encode_value(value), **options))


def read(codec: Codec, data: bytes, key: str = KEY, now: float | None = None) -> Any:
    return codec.decode(codec.open(key, data, now=now))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_are_corrupt_never_another_exception(data: bytes) -> None:
    for codec in (Codec(), Codec(secret="s")):
        for candidate in (data, bytes((FORMAT_VERSION,)) + data):
            try:
                codec.decode(codec.open(KEY, candidate), allow_errors=True)
            except CorruptValue:
                pass


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_json_like_values_round_trip(value: Any) -> None:
    codec = Codec(secret="s", compress_threshold=64)
    assert read(codec, sealed_value(codec, value)) == value


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


# -- checksums ------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "s3cret"])
def test_single_bit_flips_never_decode_to_another_value(secret: str | None) -> None:
    codec = Codec(secret=secret, compress_threshold=256)
    rng = random.Random(14)
    values = [
        {"city": "Paris", "temp": 21.5, "tags": ["a", "b"], "n": 12345},
        {"text": "lorem ipsum " * 60},  # compressed
        "short",
    ]
    silently_different = 0
    for i in range(1000):
        value = values[i % len(values)]
        data = bytearray(sealed_value(codec, value))
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        try:
            decoded = read(codec, bytes(data))
        except CorruptValue:
            continue
        silently_different += decoded != value
        assert decoded == value  # a flip that decodes at all decodes to the same value
    assert silently_different == 0


def test_an_unsigned_value_copied_under_another_key_is_corrupt() -> None:
    codec = Codec()
    data = sealed_value(codec, "v", key="k1")
    assert read(codec, data, key="k1") == "v"
    with pytest.raises(CorruptValue, match="checksum"):
        codec.open("k2", data)


def test_another_format_version_is_a_miss() -> None:
    codec = Codec()
    data = sealed_value(codec, "v")
    with pytest.raises(CorruptValue, match="format version"):
        codec.open(KEY, bytes((1,)) + data[1:])
    v1 = bytes((1, 0)) + msgpack.packb([1.0, 2.0, 0.0, None, b"\xa1v"], use_bin_type=True)
    with pytest.raises(CorruptValue, match="format version 1"):
        codec.open(KEY, v1)
    # Format 2, as earlier releases wrote it: a msgpack body behind the check.
    now = time.time()
    body = msgpack.packb([now, now + 10, now + 10, 0.0, None, 2, b"\xa1v"], use_bin_type=True)
    v2 = forge(body, b"", version=2)
    with pytest.raises(CorruptValue, match="format version 2") as info:
        codec.open(KEY, v2)
    assert not isinstance(info.value, ForeignSecret)  # deleted, not kept


# -- layout -----------------------------------------------------------------------


def name_prefix(key: str) -> bytes:
    name = key.encode()
    return len(name).to_bytes(4, "big") + name


def forge(body: bytes, payload: bytes, flags: int = 0, *, version: int = FORMAT_VERSION) -> bytes:
    """An envelope built from the documented layout, with a valid check and no MAC."""
    header = bytes((version, flags))
    rest = body + payload
    check = zlib.crc32(rest, zlib.crc32(header, zlib.crc32(name_prefix(KEY))))
    return header + check.to_bytes(4, "big") + rest


def fields(
    size: int, times: tuple[float, float, float, float] | None = None, tags: bytes | None = None
) -> bytes:
    """The body before the payload: four float64 times, the size, then any tag generations."""
    now = time.time()
    created, fresh, hard, load = times or (now, now + 10, now + 10, 0.0)
    out = struct.pack(">ddddI", created, fresh, hard, load, size)
    if tags is not None:
        out += len(tags).to_bytes(4, "big") + tags
    return out


def test_the_layout_is_the_documented_one() -> None:
    codec = Codec()
    times = (1000.0, 1010.0, 1020.0, 0.25)
    payload = codec.encode_value("v")
    sealed = codec.seal(KEY, Envelope(1000.0, 1010.0, 0.25, None, payload, hard_until=1020.0))
    assert sealed == forge(fields(len(payload), times), payload)
    tags = {"server:x": 3}
    sealed = codec.seal(KEY, Envelope(1000.0, 1010.0, 0.25, tags, payload, 1020.0, negative=True))
    packed = msgpack.packb(tags, use_bin_type=True)
    assert sealed == forge(fields(len(payload), times, packed), payload, flags=4 | 8)


@pytest.mark.parametrize("secret", [None, "s"])
@pytest.mark.parametrize("tags", [None, {}, {"server:x": 3, "user:42": 2**40}])
def test_tag_generations_round_trip(secret: str | None, tags: dict[str, int] | None) -> None:
    codec = Codec(secret=secret, compress_threshold=64)
    now = time.time()
    for value in ("short", "long " * 100):  # plain and compressed
        sealed = codec.seal(KEY, Envelope(now, now + 10, 0.5, tags, codec.encode_value(value)))
        env = codec.open(KEY, sealed)
        assert env.tag_generations == tags
        assert codec.decode(env) == value
        assert (env.created_at, env.fresh_until, env.load_seconds) == (now, now + 10, 0.5)


@pytest.mark.parametrize("secret", [None, "s"])
def test_every_truncation_is_corrupt(secret: str | None) -> None:
    codec = Codec(secret=secret, compress_threshold=64)
    for value in ("short", "long " * 100):
        data = sealed_value(codec, value)  # tagged
        for length in range(len(data)):
            with pytest.raises(CorruptValue) as info:
                codec.open(KEY, data[:length])
            assert not isinstance(info.value, ForeignSecret)


def test_a_truncated_header_is_corrupt() -> None:
    codec = Codec()
    data = forge(fields(2), b"\xa1v")
    for length in (7, 20, 41):  # inside the fixed fields
        with pytest.raises(CorruptValue, match="truncated"):
            codec.open(KEY, data[:length])
    tagged = forge(fields(2, tags=b"\x80")[:-5], b"", flags=8)  # no room for the tag length
    with pytest.raises(CorruptValue, match="truncated"):
        codec.open(KEY, tagged)


def test_tag_generations_declared_beyond_the_data_are_corrupt() -> None:
    codec = Codec()
    body = fields(2)
    for declared in (3, 1000, 2**32 - 1):
        data = forge(body + declared.to_bytes(4, "big") + b"\x80", b"", flags=8)
        with pytest.raises(CorruptValue, match="tag generations"):
            codec.open(KEY, data)


@pytest.mark.parametrize(
    "tags",
    [
        b"",  # tagged, but nothing there
        b"\xc1",  # not msgpack
        msgpack.packb([1, 2]),  # not a map
        msgpack.packb({"a": "b"}),  # not a generation
        msgpack.packb({1: 2}),  # not a tag
        msgpack.packb({"a": 1}) + b"\x00",  # more than the map
    ],
)
def test_bad_tag_generations_are_corrupt(tags: bytes) -> None:
    with pytest.raises(CorruptValue, match="tag generations"):
        Codec().open(KEY, forge(fields(2, tags=tags), b"\xa1v", flags=8))


@settings(max_examples=300, deadline=None)
@given(flags=st.integers(0, 15), body=st.binary(max_size=120), size=st.integers(0, 2**32 - 1))
def test_forged_bodies_with_a_valid_check_are_corrupt_never_another_exception(
    flags: int, body: bytes, size: int
) -> None:
    # The check passes, so everything after it is parsed: only CorruptValue may escape.
    for candidate in (body, fields(size) + body, fields(size, tags=body[:8]) + body[8:]):
        for codec in (Codec(), Codec(secret="s")):
            try:
                codec.decode(codec.open(KEY, forge(candidate, b"", flags)), allow_errors=True)
            except CorruptValue:
                pass


def test_unknown_flags_are_corrupt() -> None:
    codec = Codec()
    for flag in (16, 32, 128):
        with pytest.raises(CorruptValue, match="unknown flags"):
            codec.open(KEY, forge(fields(2), b"\xa1v", flags=flag))
    assert read(codec, forge(fields(2), b"\xa1v")) == "v"  # the same bytes without the flag


# -- hard expiry ----------------------------------------------------------------


def test_a_signed_value_written_back_after_hard_expiry_is_refused() -> None:
    codec = Codec(secret="s", clock_skew=5.0)
    captured = sealed_value(codec, {"balance": 10}, ttl=60, stale=30)
    now = time.time()
    assert read(codec, captured, now=now + 89) == {"balance": 10}  # stale window
    assert read(codec, captured, now=now + 94) == {"balance": 10}  # inside the skew allowance
    with pytest.raises(ExpiredValue, match="hard expiry"):
        codec.open(KEY, captured, now=now + 96)


def test_without_a_stale_window_hard_expiry_is_the_soft_one() -> None:
    codec = Codec(clock_skew=0.0)
    now = time.time()
    data = codec.seal(KEY, Envelope(now, now + 10, 0.0, None, codec.encode_value(1)))
    assert codec.open(KEY, data, now=now + 9).expires_at == pytest.approx(now + 10)
    with pytest.raises(ExpiredValue):
        codec.open(KEY, data, now=now + 11)


def test_a_value_dated_beyond_the_skew_allowance_is_refused() -> None:
    codec = Codec(secret="s", clock_skew=5.0)
    data = sealed_value(codec, "from a fast clock")
    now = time.time()
    assert read(codec, data, now=now - 4) == "from a fast clock"
    with pytest.raises(ExpiredValue, match="future"):
        codec.open(KEY, data, now=now - 6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("position", range(4))
def test_non_finite_times_are_corrupt(bad: float, position: int) -> None:
    # A checksum anyone can compute: the fields themselves must still be checked.
    now = time.time()
    times = [now, now + 10, now + 10, 0.0]
    times[position] = bad
    data = forge(fields(2, (times[0], times[1], times[2], times[3])), b"\xa1v")
    with pytest.raises(CorruptValue, match="finite"):
        Codec().open(KEY, data)


def test_a_negative_load_time_is_corrupt() -> None:
    now = time.time()
    data = forge(fields(2, (now, now + 10, now + 10, -1.0)), b"\xa1v")
    with pytest.raises(CorruptValue, match="negative"):
        Codec().open(KEY, data)


# -- size limits ----------------------------------------------------------------


def forged(payload: bytes, size: int, flags: int = 1) -> bytes:
    return forge(fields(size), payload, flags)


def test_a_zlib_bomb_is_refused_without_inflating_it() -> None:
    bomb = zlib.compress(b"\x00" * (64 * 2**20), 9)  # ~64 KB that inflate to 64 MiB
    codec = Codec(max_decoded_bytes=2**20)
    for declared in (1000, 2**20):  # lying about its size, or claiming the maximum
        with pytest.raises(CorruptValue, match="declared size"):
            codec.open(KEY, forged(bomb, declared))
    with pytest.raises(CorruptValue, match="max_decoded_bytes"):
        codec.open(KEY, forged(bomb, 64 * 2**20))
    with pytest.raises(CorruptValue, match="max_decoded_bytes"):
        Codec().open(KEY, forged(bomb, 2**20), max_bytes=1000)  # the layer's own limit


def test_inflation_stops_at_the_declared_size() -> None:
    # The decompressor is asked for at most size + 1 bytes: measure what it returns.
    bomb = zlib.compress(b"\x00" * (8 * 2**20), 9)
    decompressor = zlib.decompressobj()
    assert len(decompressor.decompress(bomb, 1001)) == 1001
    with pytest.raises(CorruptValue):
        Codec().open(KEY, forged(bomb, 1000))


def test_an_honest_large_value_within_the_limit_round_trips() -> None:
    codec = Codec(max_decoded_bytes=2**20)
    value = "x" * 500_000
    assert read(codec, sealed_value(codec, value)) == value
    with pytest.raises(CorruptValue, match="max_decoded_bytes"):
        Codec(max_decoded_bytes=1000).open(KEY, sealed_value(codec, value))


def test_an_uncompressed_payload_must_match_its_size() -> None:
    with pytest.raises(CorruptValue, match="size"):
        Codec().open(KEY, forged(b"\xa1v", 5, flags=0))
    with pytest.raises(CorruptValue, match="size"):
        Codec().open(KEY, forged(b"\xa1v\x00", 2, flags=0))  # one byte too many


def test_bytes_after_a_compressed_payload_are_corrupt() -> None:
    payload = zlib.compress(b"x" * 100)
    assert Codec().open(KEY, forged(payload, 100)).payload == b"x" * 100
    with pytest.raises(CorruptValue, match="declared size"):
        Codec().open(KEY, forged(payload + b"\x00", 100))


# -- negative entries -------------------------------------------------------------


def negative(codec: Codec, failure: Any) -> bytes:
    now = time.time()
    payload = codec.encode_value(failure)
    return codec.seal(KEY, Envelope(now, now + 10, 0.0, None, payload, negative=True))


def test_a_negative_entry_decodes_only_where_failures_are_cached() -> None:
    codec = Codec(secret="s")
    data = negative(codec, CachedLoaderError("ValueError", "no such city"))
    env = codec.open(KEY, data)
    assert env.negative
    failure = codec.decode(env, allow_errors=True)
    assert isinstance(failure, CachedLoaderError) and failure.message == "no such city"
    with pytest.raises(CorruptValue, match="negative"):
        codec.decode(env)


def test_a_planted_failure_in_an_ordinary_entry_is_a_miss() -> None:
    codec = Codec()
    now = time.time()
    planted = codec.encode_value(CachedLoaderError("PermissionError", "call the attacker"))
    data = codec.seal(KEY, Envelope(now, now + 10, 0.0, None, planted))  # not flagged
    for allow in (False, True):
        with pytest.raises(CorruptValue):
            codec.decode(codec.open(KEY, data), allow_errors=allow)
    assert codec.decode_value(codec.encode_value("x"), allow_errors=True) == "x"
    whole = codec.decode_value(codec.encode_value(CachedLoaderError("E", "m")), allow_errors=True)
    assert isinstance(whole, CachedLoaderError)
    nested = codec.encode_value([CachedLoaderError("E", "m")])
    with pytest.raises(CorruptValue):
        codec.decode_value(nested, allow_errors=True)
    with pytest.raises(CorruptValue):
        codec.decode(codec.open(KEY, negative(codec, "not a failure")), allow_errors=True)


async def test_a_planted_negative_entry_is_a_miss_in_a_layer_without_negative_ttl() -> None:
    async with atc.ToolCache() as cache:
        layer = cache.results
        await layer.set("city", CachedLoaderError("ValueError", "planted"))
        cache.l1.clear()
        calls = 0

        async def load() -> str:
            nonlocal calls
            calls += 1
            return "Paris"

        assert await layer.get_or_load("city", load) == "Paris"
        assert calls == 1
        assert layer.counters.corrupt >= 1


# -- secrets and rotation -------------------------------------------------------


def test_rotation_signs_with_the_first_secret_and_verifies_with_any() -> None:
    old, rotating, new = Codec(secret="old"), Codec(secret=["new", "old"]), Codec(secret="new")
    written_by_old = sealed_value(old, "a")
    written_by_rotating = sealed_value(rotating, "b")
    assert read(rotating, written_by_old) == "a"
    assert read(new, written_by_rotating) == "b"
    with pytest.raises(ForeignSecret):
        old.open(KEY, written_by_rotating)
    with pytest.raises(ForeignSecret, match="no configured secret"):
        Codec(secret=(b"other",)).open(KEY, written_by_old)


def test_signed_values_do_not_verify_under_another_key() -> None:
    codec = Codec(secret="s")
    data = sealed_value(codec, "v", key="k1")
    with pytest.raises(CorruptValue) as info:
        codec.open("k2", data)
    assert not isinstance(info.value, ForeignSecret)  # the checksum fails too


def test_signed_and_unsigned_workers_see_each_other_as_foreign_not_corrupt() -> None:
    signed, unsigned = Codec(secret="s"), Codec()
    with pytest.raises(ForeignSecret, match="not signed"):
        signed.open(KEY, sealed_value(unsigned, "v"))
    with pytest.raises(ForeignSecret, match="no secret"):
        unsigned.open(KEY, sealed_value(signed, "v"))


def test_a_corrupted_signed_value_is_corrupt_not_foreign() -> None:
    codec = Codec(secret="s")
    data = bytearray(sealed_value(codec, {"a": 1}))
    data[-3] ^= 0x10
    with pytest.raises(CorruptValue) as info:
        codec.open(KEY, bytes(data))
    assert not isinstance(info.value, ForeignSecret)


@pytest.mark.parametrize("secret", ["", b"", [], ["ok", ""], [1]])
def test_empty_or_odd_secrets_are_configuration_errors(secret: Any) -> None:
    with pytest.raises(ConfigurationError):
        Codec(secret=secret)


def test_long_secrets_are_hashed_to_a_key() -> None:
    codec = Codec(secret="x" * 200)
    assert read(codec, sealed_value(codec, 1)) == 1


def test_foreign_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    codec = Codec(secret="new")
    exc = ForeignSecret("no configured secret verifies this value")
    with caplog.at_level(logging.WARNING, logger="aiotoolcache.codec"):
        assert codec.warn_foreign("k1", exc, now=100.0)
        assert not codec.warn_foreign("k2", exc, now=130.0)
        assert not codec.warn_foreign("k3", exc, now=159.0)
        assert codec.warn_foreign("k4", exc, now=161.0)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert "k4" in messages[1] and "2 more" in messages[1]


def test_the_environment_may_list_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_secrets(None) is None and env_secrets("") is None
    assert env_secrets("one") == "one"
    assert env_secrets("new, old") == ("new", "old")
    with pytest.raises(ConfigurationError):
        env_secrets("new,,old")
    monkeypatch.setenv("AIOTOOLCACHE_SECRET", "new,old")
    assert Settings.resolve().secret == ("new", "old")
    assert Settings.resolve(secret="a,b").secret == "a,b"  # never split in code
    assert Settings.resolve(secret=["a", "b"]).secret == ("a", "b")


async def test_a_worker_with_another_secret_leaves_entries_in_place(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="rot", secret="old") as old,
        atc.ToolCache.from_url(redis_url, namespace="rot", secret="new") as new,
        atc.ToolCache.from_url(redis_url, namespace="rot", secret=["new", "old"]) as rolling,
    ):
        await old.results.set("k", "v")
        with caplog.at_level(logging.WARNING, logger="aiotoolcache.codec"):
            assert await new.results.get("k", default="MISS") == "MISS"
            assert await new.results.get("k", default="MISS") == "MISS"
        assert new.stats()["results"].corrupt == 2
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        assert await rolling.results.get("k") == "v"  # not deleted by the foreign reader


async def test_a_layer_refuses_its_own_value_written_back_after_hard_expiry(
    redis_url: str, redis_server: Any
) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="expiry", secret="s") as cache:
        cache.codec.clock_skew = 0.0
        cache.add_layer("quotes", atc.LayerConfig(ttl=0.2, jitter=0, l1=False))
        await cache.layer("quotes").set("AAPL", 180.5)
        with redis_server.client() as client:
            [key] = client.keys("expiry:quotes:*")
            captured = client.get(key)
            assert await cache.layer("quotes").get("AAPL") == 180.5
            await asyncio.sleep(0.4)
            client.set(key, captured)  # written back, without a TTL
        assert await cache.layer("quotes").get("AAPL", default="MISS") == "MISS"
        assert cache.stats()["quotes"].corrupt == 1


@settings(max_examples=200, deadline=None)
@given(value=json_values, position=st.integers(min_value=0), secret=st.sampled_from([None, "s"]))
def test_property_a_flipped_bit_is_refused_or_harmless(
    value: Any, position: int, secret: str | None
) -> None:
    codec = Codec(secret=secret, compress_threshold=64)
    data = bytearray(sealed_value(codec, value))
    bit = position % (len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    try:
        decoded = read(codec, bytes(data))
    except CorruptValue:
        return
    assert decoded == value
