"""Reading a cassette file: every bad line is a CassetteError naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import aiotoolcache as atc
from aiotoolcache.errors import CassetteError
from aiotoolcache.redaction import MAX_NESTING
from aiotoolcache.tape import read_tape

HEADER = {"aiotoolcache_cassette": 1, "redacted_fields": [], "redacts_secret_looking_fields": True}


def call_line(**fields: Any) -> dict[str, Any]:
    line = {"seq": 0, "layer": "results", "op": "call_tool", "server": "s", "name": "t",
            "arguments": {}, "partition": None, "result": 1}  # fmt: skip
    return {**line, **fields}


def write(path: Path, *records: dict[str, Any] | str) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in (HEADER, *records)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 200_000])
def test_a_deeply_nested_line_is_a_cassette_error_with_its_line(tmp_path: Path, depth: int) -> None:
    deep = '{"seq": 1, "arguments": ' + "[" * depth + "]" * depth + "}"
    tape = write(tmp_path / "deep.jsonl", call_line(), deep)
    with pytest.raises(CassetteError, match=rf"deep\.jsonl:3: nested more than {MAX_NESTING}"):
        read_tape(tape)
    with pytest.raises(CassetteError, match=r"deep\.jsonl:3"):
        atc.ToolCache(cassette=tape, mode="replay")


def test_nesting_up_to_the_bound_is_read(tmp_path: Path) -> None:
    depth = MAX_NESTING - 2  # the line object and its "arguments" field are two levels
    args: Any = []
    for _ in range(depth - 1):
        args = [args]
    tape = read_tape(write(tmp_path / "ok.jsonl", call_line(arguments=args)))
    assert tape.line_numbers == [2] and tape.entries[0]["arguments"] == args


@pytest.mark.parametrize(
    "line",
    [
        call_line(seq="x"),
        call_line(seq=[1]),
        call_line(seq=1e309),
        {"seq": 0, "op": "call_tool"},
    ],
    ids=["seq text", "seq list", "seq infinite", "no layer"],
)
def test_an_unreadable_call_names_the_file_and_line(tmp_path: Path, line: dict[str, Any]) -> None:
    tape = write(tmp_path / "bad.jsonl", call_line(), line)
    with pytest.raises(CassetteError, match=r"bad\.jsonl:3: "):
        atc.ToolCache(cassette=tape, mode="replay")


@pytest.mark.parametrize(
    "result",
    [{"$msgpack": "not base64!"}, {"$msgpack": 5}, {"$msgpack": "wQ=="}],
    ids=["not base64", "not a string", "not msgpack"],
)
async def test_an_undecodable_result_names_the_file_and_line(tmp_path: Path, result: Any) -> None:
    tape = write(tmp_path / "r.jsonl", call_line(seq=0, name="u"), call_line(seq=1, result=result))

    async def never() -> Any:
        raise AssertionError("a loader ran during a replay")

    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        assert await cache.call_tool("s", "u", {}, never) == 1
        with pytest.raises(CassetteError, match=r"r\.jsonl:3: undecodable recorded value"):
            await cache.call_tool("s", "t", {}, never)
