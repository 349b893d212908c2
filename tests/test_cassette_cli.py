"""``aiotoolcache cassette show|diff|redact`` on recorded cassette files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import aiotoolcache as atc
from aiotoolcache.cli import main


async def record(path: Path, calls: list[tuple[str, dict[str, Any], Any]]) -> None:
    layers = {"results": atc.LayerConfig(ttl=60, cost_per_load=0.5)}
    async with atc.ToolCache(cassette=path, mode="record", layers=layers) as cache:
        for tool, arguments, value in calls:

            async def load(value: Any = value) -> Any:
                return value

            await cache.call_tool("weather", tool, arguments, load)


async def test_show_prints_a_table_with_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.jsonl"
    await record(path, [("forecast", {"city": "Paris"}, {"t": 1}), ("alerts", {}, [])])
    assert main(["cassette", "show", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["seq", "call", "arguments", "partition", "load", "time", "cost",
                              "result"]  # fmt: skip
    assert "results call_tool weather/forecast" in out[2] and '{"city": "Paris"}' in out[2]
    assert out[2].rstrip().endswith("$0.5000  ok")
    assert out[-1].startswith("2 calls: ") and "$1.0000" in out[-1]
    assert main(["cassette", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["calls"]) == 2 and shown["cost"] == 1.0
    assert shown["header"]["aiotoolcache_cassette"] == 1


async def test_diff_prints_the_calls_that_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    await record(a, [("forecast", {"city": "Paris"}, {"t": 1}), ("alerts", {}, [])])
    await record(b, [("forecast", {"city": "Paris"}, {"t": 2}), ("alerts", {}, []),
                     ("radar", {}, "img")])  # fmt: skip
    assert main(["cassette", "diff", str(a), str(a)]) == 0
    assert "2 calls, the same in both" in capsys.readouterr().out
    assert main(["cassette", "diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert (
        "~ #0 results call_tool weather/forecast  /  #0 results call_tool weather/forecast" in out
    )
    assert '-    "t": 1' in out and '+    "t": 2' in out
    assert f"+ #2 results call_tool weather/radar  (only in {b})" in out
    assert "alerts" not in out


async def test_redact_rewrites_the_file_and_replays_still_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.jsonl"
    await record(path, [("lookup", {"email": "ann@example.com", "q": "x"}, {"email": "ann@x"})])
    assert main(["cassette", "redact", str(path), "--field", "email"]) == 0
    assert "redacted 2 values" in capsys.readouterr().out
    text = path.read_text()
    assert "ann@" not in text and '"redacted_fields": ["email"]' in text
    assert '"redacted": ["arguments.email", "result.email"]' in text

    async def never() -> Any:
        raise AssertionError("ran")

    async with atc.ToolCache(cassette=path, mode="replay") as cache:
        got = await cache.call_tool("weather", "lookup", {"email": "bob@b", "q": "x"}, never)
    assert got == {"email": "<redacted>"}


def test_a_missing_or_damaged_file_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cassette", "show", str(tmp_path / "none.jsonl")]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"aiotoolcache: error: no cassette at {tmp_path}/none.jsonl"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1]\n")
    assert main(["cassette", "diff", str(bad), str(bad)]) == 1
    assert "not a JSON object" in capsys.readouterr().err
