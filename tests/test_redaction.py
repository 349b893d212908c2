"""Redaction finds a secret-named field in every shape a cassette line holds (recorder and CLI)."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import aiotoolcache as atc
from aiotoolcache.cli import main
from aiotoolcache.errors import UnserializableValue
from aiotoolcache.redaction import MAX_NESTING, REDACTED, looks_secret, redact
from aiotoolcache.tape import decode_value, encode_value


class Account(BaseModel):
    user: str
    api_key: str


class Team(BaseModel):
    name: str
    owner: Account


@dataclasses.dataclass
class Creds:
    user: str
    password: str


@dataclasses.dataclass(frozen=True)
class Login:
    user: str
    access_token: str


class Shade(enum.Enum):
    DARK = "dark"


MODELS = [Account, Team, Creds, Login, Shade]


def every_text(path: Path) -> str:
    """The file's text plus every $msgpack payload decoded, nested payloads included."""
    text = path.read_text()
    blobs = [base64.b64decode(b) for b in re.findall(r'"\$msgpack": "([^"]+)"', text)]
    # msgpack writes strings as their UTF-8 bytes, also inside extension payloads.
    return text + "".join(blob.decode("latin-1") for blob in blobs)


async def never() -> Any:
    raise AssertionError("a loader ran during a replay")


# Arguments are written as canonical key forms: one case per tag that can hold a field.
ARGUMENT_SHAPES: list[tuple[str, Any, str]] = [
    ("plain", {"q": "a", "api_key": "S-PLAIN"}, "arguments.api_key"),
    ("$dict ($-key)", {"$schema": "v1", "api_key": "S-DOLLAR"}, "arguments.api_key"),
    ("$dict (int key)", {7: "x", "password": "S-INTKEY"}, "arguments.password"),
    ("$dataclass", {"who": Creds("ann", "S-DATACLASS")}, "arguments.who.password"),
    ("$model", {"who": Account(user="ann", api_key="S-MODEL")}, "arguments.who.api_key"),
    ("$set", {"who": {Login("ann", "S-SET")}}, "arguments.who[0].access_token"),
    ("nested $dict", {"h": {1: {"Authorization": "S-NESTED"}}}, "arguments.h.<key 0>"),
]


@pytest.mark.parametrize(("shape", "arguments", "path"), ARGUMENT_SHAPES, ids=lambda x: str(x))
async def test_a_secret_argument_is_redacted_in_every_tag(
    tmp_path: Path, shape: str, arguments: dict[Any, Any], path: str
) -> None:
    tape = tmp_path / "c.jsonl"
    async with atc.ToolCache(cassette=tape, mode="record", models=MODELS) as cache:
        assert await cache.call_tool("crm", "find", arguments, lambda: _value("ok")) == "ok"
    secret = re.search(r"S-[A-Z]+", repr(arguments))
    assert secret is not None
    assert secret.group() not in every_text(tape)
    record = json.loads(tape.read_text().splitlines()[1])
    assert any(p.startswith(path) for p in record["redacted"]), record["redacted"]
    # A replay with another secret in the same place still matches the recorded call.
    swapped = _swap(arguments, secret.group(), "S-OTHER")
    async with atc.ToolCache(cassette=tape, mode="replay", models=MODELS) as cache:
        assert await cache.call_tool("crm", "find", swapped, never) == "ok"


async def _value(value: Any) -> Any:
    return value


def _swap(value: Any, old: str, new: str) -> Any:
    """``value`` with the string ``old`` replaced by ``new`` wherever it is a field value."""
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, dict):
        return {k: _swap(v, old, new) for k, v in value.items()}
    if isinstance(value, set):
        return {_swap(v, old, new) for v in value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{f.name: _swap(getattr(value, f.name), old, new) for f in dataclasses.fields(value)},
        )
    if isinstance(value, BaseModel):
        return value.model_copy(update={k: _swap(v, old, new) for k, v in value})
    return value


# Results JSON cannot carry exactly are written as $msgpack: one case per shape inside it.
RESULT_SHAPES: list[tuple[str, Any, Any, str]] = [
    ("model", Account(user="ann", api_key="S-MODEL"), Account(user="ann", api_key=REDACTED),
     "result.api_key"),
    ("nested model", Team(name="t", owner=Account(user="a", api_key="S-NESTED")),
     Team(name="t", owner=Account(user="a", api_key=REDACTED)), "result.owner.api_key"),
    ("dataclass in a list", [Creds("ann", "S-DATACLASS")], [Creds("ann", REDACTED)],
     "result[0].password"),
    ("frozen dataclass in a set", {Login("ann", "S-SET")}, {Login("ann", REDACTED)},
     "result[0].access_token"),
    ("dict in a tuple", ({"token": "S-TUPLE"}, {1}), ({"token": REDACTED}, {1}),
     "result[0].token"),
    ("int key", {1: "x", "secret": "S-INTKEY"}, {1: "x", "secret": REDACTED}, "result.secret"),
    ("bytes beside a dataclass", [Creds("ann", "p"), {"cookie": b"S-BYTES"}],
     [Creds("ann", REDACTED), {"cookie": REDACTED}], "result[1].cookie"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "result", "replayed", "path"), RESULT_SHAPES, ids=lambda x: str(x)[:20]
)
async def test_a_secret_field_of_a_result_is_redacted_inside_msgpack(
    tmp_path: Path, shape: str, result: Any, replayed: Any, path: str
) -> None:
    tape = tmp_path / "c.jsonl"
    async with atc.ToolCache(cassette=tape, mode="record", models=MODELS) as cache:
        got = await cache.call_tool("crm", "get", {"q": 1}, lambda: _value(result))
    assert got == result  # the live caller gets the real value
    secret = re.search(r"S-[A-Z]+", repr(result))
    assert secret is not None and '"$msgpack"' in tape.read_text()
    assert secret.group() not in every_text(tape)
    record = json.loads(tape.read_text().splitlines()[1])
    assert path in record["redacted"]
    async with atc.ToolCache(cassette=tape, mode="replay", models=MODELS) as cache:
        assert await cache.call_tool("crm", "get", {"q": 1}, never) == replayed


def test_redact_walks_nested_msgpack_payloads_without_the_classes() -> None:
    codec = atc.ToolCache(models=MODELS).codec
    payload = codec.encode_value((Team(name="t", owner=Account(user="a", api_key="S-1")),))
    form = {"$msgpack": base64.b64encode(payload).decode()}
    out, paths = redact(form, looks_secret, "result")
    assert paths == ["result[0].owner.api_key"]
    data = base64.b64decode(out["$msgpack"])
    assert b"S-1" not in data
    decoded = codec.decode_value(data)
    assert decoded == (Team(name="t", owner=Account(user="a", api_key=REDACTED)),)
    # Nothing secret: the payload is left byte for byte.
    plain = {"$msgpack": base64.b64encode(codec.encode_value((1, 2))).decode()}
    assert redact(plain, looks_secret, "result") == (plain, [])


def test_redact_leaves_what_it_cannot_read_and_refuses_what_nests_too_deep() -> None:
    for odd in ({"$msgpack": "not base64!"}, {"$msgpack": "wMHB"}, {"$dict": [1, [2]]}):
        assert redact(odd, looks_secret)[1] == []
    bad_record = msgpack.ExtType(1, b"\xc1")  # an extension payload that does not unpack
    blob = base64.b64encode(msgpack.packb([bad_record])).decode()
    assert redact({"$msgpack": blob}, looks_secret)[1] == []
    deep: Any = "x"
    for _ in range(MAX_NESTING + 2):
        deep = [deep]
    with pytest.raises(UnserializableValue, match="nested more than"):
        redact(deep, looks_secret)


async def test_cli_redact_reaches_dict_tags_and_msgpack_payloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tape = tmp_path / "c.jsonl"
    async with atc.ToolCache(cassette=tape, mode="record", models=MODELS) as cache:
        await cache.call_tool(
            "crm", "find", {"$schema": "v1", "email": "E-ARG"}, lambda: _value("ok")
        )
        await cache.call_tool(
            "crm",
            "get",
            {"q": 1},
            lambda: _value(Team(name="t", owner=Account(user="E-RES", api_key="k"))),
        )
    assert "E-ARG" in every_text(tape) and "E-RES" in every_text(tape)
    # The command has no registered classes: it walks the payloads without them.
    assert main(["cassette", "redact", str(tape), "--field", "email", "--field", "user"]) == 0
    assert "redacted 2 values" in capsys.readouterr().out
    text = every_text(tape)
    assert "E-ARG" not in text and "E-RES" not in text
    async with atc.ToolCache(cassette=tape, mode="replay", models=MODELS) as cache:
        got = await cache.call_tool("crm", "get", {"q": 1}, never)
    assert got == Team(name="t", owner=Account(user=REDACTED, api_key=REDACTED))


SECRET = "S3CR3T-VALUE"


def with_secrets(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Containers of every shape the codec writes; the secret only ever under a secret name."""
    fields = st.dictionaries(st.sampled_from(["q", "n"]), children, max_size=2)
    return st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.sets(st.sampled_from([1, "x", Login("u", SECRET)]), max_size=2),
        fields.map(lambda d: {**d, "api_key": SECRET}),
        fields.map(lambda d: {**d, 7: SECRET.lower(), "$schema": "v", "password": SECRET}),
        children.map(lambda c: {"nested": c, "Authorization": SECRET}),
        st.just(Creds("u", SECRET)),
        st.just(Team(name="t", owner=Account(user="u", api_key=SECRET))),
    )


@settings(max_examples=150, deadline=None)
@given(value=st.recursive(st.sampled_from(["x", 1, None, 2.5]), with_secrets, max_leaves=12))
def test_property_no_secret_named_field_reaches_a_line(value: Any) -> None:
    codec = atc.ToolCache(models=MODELS).codec
    form, paths = redact(encode_value(value, codec), looks_secret, "result")
    text = json.dumps(form)
    blobs = re.findall(r'"\$msgpack": "([^"]+)"', text)
    written = text + "".join(base64.b64decode(b).decode("latin-1") for b in blobs)
    assert SECRET not in written
    assert bool(paths) == (SECRET in repr(value))
    decode_value(form, codec)  # what was written still decodes
