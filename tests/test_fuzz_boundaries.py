"""Fuzzing the trust boundaries: what comes from Redis, the bus, a cassette file or a URL.

The invariant everywhere: a clean miss or a typed error, never a wrong value
served when a secret is set, and never a secret in a message.
"""

from __future__ import annotations

import base64
import json
import string
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aiotoolcache.bus_messages import bus_keys, decode_message, encode_message, sane_generation
from aiotoolcache.cassette import Cassette
from aiotoolcache.cli import main
from aiotoolcache.codec import Codec, CorruptValue, Envelope
from aiotoolcache.errors import CassetteError, ConfigurationError
from aiotoolcache.tape import decode_value, read_tape
from aiotoolcache.urls import check_url, mask_url

KEY = "atc:results:g0.0:lookup:{0123456789abcdef}"
OTHER_KEY = "atc:results:g0.0:lookup:{fedcba9876543210}"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


# (position, new byte) pairs: what an attacker with write access changes.
byte_edits = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4
)
FIXTURES_OK = [HealthCheck.function_scoped_fixture]  # each example resets what it uses


# -- envelopes (values read from Redis) ---------------------------------------------------------
def seal(codec: Codec, value: Any, key: str = KEY) -> bytes:
    now = time.time()
    envelope = Envelope(now, now + 60, 0.1, {"server:x": 3}, codec.encode_value(value), now + 60)
    return codec.seal(key, envelope)


def opened(codec: Codec, data: bytes, key: str = KEY) -> Any:
    return codec.decode(codec.open(key, data))


@settings(max_examples=300, deadline=None)
@given(
    value=json_values,
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cut=st.none() | st.integers(min_value=0),
)
def test_a_tampered_signed_envelope_is_refused_or_unchanged(
    value: Any, edits: list[tuple[int, int]], cut: int | None
) -> None:
    codec = Codec(secret="fleet-secret", compress_threshold=32)
    data = bytearray(seal(codec, value))
    for position, byte in edits:
        data[position % len(data)] = byte
    tampered = bytes(data if cut is None else data[: cut % (len(data) + 1)])
    try:
        got = opened(codec, tampered)
    except CorruptValue:
        return
    assert got == value  # the only envelope that opens is the one that was sealed


@settings(max_examples=150, deadline=None)
@given(value=json_values, forger=st.sampled_from([None, "guessed-secret"]))
def test_an_envelope_sealed_without_the_secret_or_for_another_key_is_refused(
    value: Any, forger: str | None
) -> None:
    codec = Codec(secret="fleet-secret")
    with pytest.raises(CorruptValue):
        opened(codec, seal(Codec(secret=forger), value))
    with pytest.raises(CorruptValue):  # the MAC covers the key name: no moving values around
        opened(codec, seal(codec, value, OTHER_KEY))


# -- bus messages -------------------------------------------------------------------------------
message_values = st.dictionaries(
    st.sampled_from(["o", "op", "tag", "gen", "key", "layer", "x"]),
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=12) | st.lists(st.booleans()),
    max_size=5,
).map(lambda m: {**m, "op": str(m.get("op", "tag"))})


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), signed=st.booleans())
def test_arbitrary_bus_bytes_decode_to_none_or_a_message(data: bytes, signed: bool) -> None:
    keys = bus_keys([b"fleet-secret"]) if signed else ()
    message = decode_message(data, keys)
    assert message is None or (isinstance(message, dict) and isinstance(message["op"], str))
    if signed:  # random bytes never carry a valid MAC
        assert message is None


@settings(max_examples=300, deadline=None)
@given(
    message=message_values,
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=3
    ),
)
def test_a_tampered_signed_bus_message_is_refused_or_unchanged(
    message: dict[str, Any], edits: list[tuple[int, int]]
) -> None:
    keys = bus_keys([b"fleet-secret"])
    data = bytearray(encode_message(message, keys))
    for position, byte in edits:
        data[position % len(data)] = byte
    got = decode_message(bytes(data), keys)
    assert got is None or got == message
    assert decode_message(encode_message(message), keys) is None  # unsigned: refused
    assert decode_message(encode_message(message, bus_keys([b"guess"])), keys) is None


@given(value=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5))
def test_sane_generation_answers_any_value(value: Any) -> None:
    accepted = sane_generation(value, 5)
    assert accepted is False or (type(value) is int and 0 <= value < 2**62)


# -- tape lines ---------------------------------------------------------------------------------
HEADER = json.dumps({"aiotoolcache_cassette": 1, "redacts_secret_looking_fields": True})
lines = st.one_of(
    st.binary(max_size=80),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["seq", "layer", "op", "server", "name", "arguments", "result", "extra"]),
        json_values | st.just({"$msgpack": "wQ=="}) | st.just({"$dict": [[1, {"api_key": 1}]]}),
    ).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b'{"arguments": ' + b"[" * n + b"]" * n + b"}"),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.lists(lines, max_size=4))
def test_any_cassette_file_opens_or_is_a_cassette_error(tmp_path: Path, body: list[bytes]) -> None:
    path = tmp_path / "fuzzed.jsonl"
    path.write_bytes(b"\n".join([HEADER.encode(), *body]) + b"\n")
    try:
        read_tape(path)
        Cassette(path, mode="replay").close()
    except CassetteError as exc:
        assert str(exc).startswith(str(path))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_a_recorded_payload_decodes_or_is_a_cassette_error(payload: bytes) -> None:
    form = {"$msgpack": base64.b64encode(payload).decode()}
    try:
        decode_value(form, Codec())
    except CassetteError:
        pass


# -- URLs ---------------------------------------------------------------------------------------
PASSWORD_CHARS = string.ascii_letters + string.digits + "/?#@:!$&'()*+,;=%[]-._~"


def disguise(password: str) -> str:
    """The same password shape with every letter and digit changed: a leak shows as a difference."""
    return "".join(
        ("b" if c == "a" else "a")
        if c.islower()
        else ("B" if c == "A" else "A")
        if c.isupper()
        else ("2" if c == "1" else "1")
        if c.isdigit()
        else c
        for c in password
    )


urls = st.builds(
    lambda scheme, user, password, host, tail: f"{scheme}://{user}:{password}@{host}{tail}",
    st.sampled_from(["redis", "rediss", "redis+cluster", "redis+sentinel", "unix", "file"]),
    st.sampled_from(["", "app", "default"]),
    st.text(PASSWORD_CHARS, min_size=1, max_size=24),
    st.sampled_from(["cache.internal", "127.0.0.1:1", "h1,h2:7000", "[::1]:6380", ""]),
    st.sampled_from(["", "/0", "/mymaster/1", "?db=2", "/0?ssl_cert_reqs=none", "#x", "/a/b"]),
)


def messages(url: str) -> list[str]:
    """Everything the library may say about ``url`` without connecting."""
    out = [mask_url(url)]
    try:
        check_url(url)
    except ConfigurationError as exc:
        out.append(str(exc))
    return out


def password_of(url: str) -> str:
    return url.split("://", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]


@settings(max_examples=500, deadline=None)
@given(url=urls)
def test_no_password_character_reaches_a_url_message(url: str) -> None:
    password = password_of(url)
    said = messages(url)
    same_shape = url.replace(f":{password}@", f":{disguise(password)}@")
    assert said == messages(same_shape)  # no letter or digit of the password shows
    if len(password) >= 6:
        assert all(password not in text for text in said)


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES_OK)
@given(password=st.text(PASSWORD_CHARS, min_size=6, max_size=16))
def test_doctor_json_never_prints_the_password(
    password: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assume(any(c.isalnum() for c in password))
    # Text doctor prints whatever the password (such as "aiotoolcache: error:") may hold a
    # short password by chance: only a password absent from it can show a leak.
    monkeypatch.setenv("AIOTOOLCACHE_URL", f"redis://:{disguise(password)}@127.0.0.1:1/0")
    assert main(["doctor", "--json"]) != 0
    fixed = capsys.readouterr()
    assume(password not in fixed.err + fixed.out)
    monkeypatch.setenv("AIOTOOLCACHE_URL", f"redis://:{password}@127.0.0.1:1/0")
    assert main(["doctor", "--json"]) != 0
    captured = capsys.readouterr()
    assert password not in captured.err and password not in captured.out
    assert password not in json.dumps(json.loads(captured.out), ensure_ascii=False)
