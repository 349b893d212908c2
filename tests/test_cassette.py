"""Cassettes: record a run's calls to JSON Lines, replay them offline, fail loudly on a miss."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import aiotoolcache as atc


class Forecast(BaseModel):
    city: str
    temps: list[float]


class Tools:
    """Loaders that count their runs; with ``live=False`` every loader raises."""

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.runs = 0

    def result(self, value: Any) -> Callable[[], Awaitable[Any]]:
        async def load() -> Any:
            if not self.live:
                raise AssertionError("a loader ran during a replay")
            self.runs += 1
            return value

        return load

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.live:
            raise AssertionError("the embedder ran during a replay")
        self.runs += 1
        return [[float(len(text)), 0.1] for text in texts]


async def agent_run(cache: atc.ToolCache, tools: Tools) -> list[Any]:
    """A small agent run: discovery, search, tool calls (one repeated), embeddings, @cached."""

    @cache.cached()
    async def summarise(text: str, words: int = 5) -> str:
        return await tools.result(f"{text[:words]}…")()

    out: list[Any] = [
        await cache.list_tools("weather", tools.result([{"name": "forecast"}])),
        await cache.search_tools("rain", tools.result(["weather/forecast"]), top_k=3),
        await cache.call_tool("weather", "forecast", {"city": "Paris"}, tools.result({"t": 12})),
        await cache.call_tool("weather", "forecast", {"city": "Paris"}, tools.result({"t": 13})),
        await cache.call_tool("weather", "raw", {"city": "Oslo"}, tools.result(b"\x00\xff")),
        await cache.embed(["rain", "sun", "rain"], model="m", loader=tools.embed),
        await summarise("a long text"),
    ]
    return out


@pytest.fixture
def tape(tmp_path: Path) -> Path:
    return tmp_path / "cassettes" / "run.jsonl"


def read_text(path: Path) -> str:
    return path.read_text()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_text(path).splitlines()]


async def test_a_replay_returns_the_recorded_results_without_running_a_loader(tape: Path) -> None:
    live = Tools()
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        recorded = await agent_run(cache, live)
    assert (
        live.runs == 7
    )  # the repeated call ran twice (a cassette is not a cache); one embed batch
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        replayed = await agent_run(cache, Tools(live=False))
        assert cache.cassette is not None and cache.cassette.replayed == 8
    assert replayed == recorded
    assert replayed[2] == {"t": 12} and replayed[3] == {"t": 13}


async def test_the_file_is_one_header_and_one_json_line_per_call(tape: Path) -> None:
    async with atc.ToolCache.from_url(f"cassette://{tape}?mode=record") as cache:
        await agent_run(cache, Tools())
    header, *calls = lines(tape)
    assert header["aiotoolcache_cassette"] == 1 and "$msgpack" in header["encoding"]
    assert [c["seq"] for c in calls] == list(range(8))
    first_call = calls[2]
    assert first_call["layer"] == "results" and first_call["op"] == "call_tool"
    assert (first_call["server"], first_call["name"]) == ("weather", "forecast")
    assert first_call["arguments"] == {"city": "Paris"} and first_call["result"] == {"t": 12}
    assert first_call["load_seconds"] >= 0 and first_call["cost"] == 0.0
    # bytes are not JSON: the codec's msgpack payload, base64, behind the marker
    assert set(calls[4]["result"]) == {"$msgpack"}
    assert {c["op"] for c in calls} == {"list_tools", "search_tools", "call_tool", "embed", "call"}


async def test_registered_models_record_and_replay(tape: Path) -> None:
    value = Forecast(city="Paris", temps=[1.5, float("nan")])
    async with atc.ToolCache(cassette=tape, mode="record", models=[Forecast]) as cache:
        await cache.call_tool("w", "f", {}, Tools().result(value))
    async with atc.ToolCache(cassette=tape, mode="replay", models=[Forecast]) as cache:
        replayed = await cache.call_tool("w", "f", {}, Tools(live=False).result(None))
    assert isinstance(replayed, Forecast) and replayed.city == "Paris"


async def test_tuples_inside_a_result_replay_as_tuples(tape: Path) -> None:
    value = {"route": ("CDG", "JFK"), "legs": [(1, "a"), [2, "b"]], "token": ("x",)}
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        await cache.call_tool("w", "f", {}, Tools().result(value))
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        replayed = await cache.call_tool("w", "f", {}, Tools(live=False).result(None))
    assert replayed == {**value, "token": "<redacted>"}
    assert isinstance(replayed["route"], tuple)
    assert isinstance(replayed["legs"][0], tuple) and isinstance(replayed["legs"][1], list)
    # A result of plain JSON stays readable in the file; one holding a tuple is marked.
    assert set(lines(tape)[1]["result"]) == {"$msgpack"}


async def test_a_miss_names_the_call_and_diffs_the_nearest_recorded_one(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        await agent_run(cache, Tools())
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        with pytest.raises(atc.CassetteMiss) as caught:
            await cache.call_tool(
                "weather", "forecast", {"city": "Lyon", "days": 2}, Tools(live=False).result(0)
            )
        assert cache.cassette is not None and cache.cassette.misses == [caught.value]
    message = str(caught.value)
    assert caught.value.call == "results call_tool weather/forecast"
    assert message.startswith("results call_tool weather/forecast: not recorded in ")
    assert "nearest recorded calls:\n  #2 results call_tool weather/forecast" in message
    assert '-    "city": "Paris"' in message
    assert '+    "city": "Lyon",' in message and '+    "days": 2' in message
    assert "embed" not in message  # only calls of the same kind are offered


async def test_repeated_calls_replay_in_sequence_then_miss(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        for n in range(3):
            await cache.call_tool("clock", "now", {}, Tools().result(n))
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        replayed = [
            await cache.call_tool("clock", "now", {}, Tools(False).result(0)) for _ in "abc"
        ]
        with pytest.raises(atc.CassetteMiss, match="made again after all 3 recorded"):
            await cache.call_tool("clock", "now", {}, Tools(False).result(0))
    assert replayed == [0, 1, 2]


async def test_default_order_is_free_but_strict_order_is_enforced(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        for city in ("Paris", "Oslo"):
            await cache.call_tool("w", "f", {"city": city}, Tools().result(city))
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        assert await cache.call_tool("w", "f", {"city": "Oslo"}, Tools(False).result(0)) == "Oslo"
    async with atc.ToolCache(cassette=tape, mode="replay", order="strict") as cache:
        with pytest.raises(atc.CassetteMiss, match="out of order: recorded call #0 comes next"):
            await cache.call_tool("w", "f", {"city": "Oslo"}, Tools(False).result(0))
    async with atc.ToolCache.from_url(f"cassette://{tape}?order=strict") as cache:
        assert cache.cassette is not None and cache.cassette.mode == "replay"
        for city in ("Paris", "Oslo"):
            assert await cache.call_tool("w", "f", {"city": city}, Tools(False).result(0)) == city
        with pytest.raises(atc.CassetteMiss, match="the tape ended after 2 calls"):
            await cache.call_tool("w", "f", {"city": "Rome"}, Tools(False).result(0))


async def test_secrets_never_reach_the_file_and_matching_ignores_them(tape: Path) -> None:
    secret_args = {"city": "Paris", "api_key": "sk-live-1", "headers": {"Authorization": "B x"}}
    result = {"temp": 12, "session_token": "tok-9", "mine": "pw-7"}
    async with atc.ToolCache(cassette=tape, mode="record", redact=["mine"]) as cache:
        got = await cache.call_tool("w", "f", secret_args, Tools().result(result))
    assert got == result  # the live caller gets the real value
    text = read_text(tape)
    for secret in ("sk-live-1", "B x", "tok-9", "pw-7"):
        assert secret not in text
    header, call = lines(tape)
    assert header["redacted_fields"] == ["mine"] and header["redacts_secret_looking_fields"]
    assert call["redacted"] == [
        "arguments.api_key",
        "arguments.headers.Authorization",
        "result.session_token",
        "result.mine",
    ]
    other_key = {**secret_args, "api_key": "sk-other"}
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        replayed = await cache.call_tool("w", "f", other_key, Tools(False).result(0))
    assert replayed == {"temp": 12, "session_token": "<redacted>", "mine": "<redacted>"}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("apiKey", True),
        ("x-api-key", True),
        ("Authorization", True),
        ("access_token", True),
        ("client_secret", True),
        ("password", True),
        ("private_key", True),
        ("key", False),  # a lookup key, not a secret: redacting it would break matching
        ("sort_key", False),
        ("max_tokens", False),
        ("author", False),
        ("city", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    from aiotoolcache.tape import looks_secret

    assert looks_secret(name) is secret


async def test_new_mode_adds_its_redacted_fields_to_the_header(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        await cache.call_tool("w", "f", {"n": 1, "email": "a@x"}, Tools().result(1))
    async with atc.ToolCache(cassette=tape, mode="new", redact=["email"]) as cache:
        await cache.call_tool("w", "f", {"n": 2, "email": "b@x"}, Tools().result(2))
    header, first, second = lines(tape)
    assert header["redacted_fields"] == ["email"]
    assert first["arguments"]["email"] == "a@x" and second["arguments"]["email"] == "<redacted>"
    # A replay that does not name the field still ignores it, as the header says.
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        other = {"n": 2, "email": "c@x"}
        assert await cache.call_tool("w", "f", other, Tools(False).result(0)) == 2


async def test_a_loader_failure_is_recorded_and_replayed(tape: Path) -> None:
    async def fails() -> Any:
        raise TimeoutError("upstream timed out")

    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        with pytest.raises(TimeoutError):
            await cache.call_tool("w", "f", {}, fails)
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        with pytest.raises(atc.CachedLoaderError) as caught:
            await cache.call_tool("w", "f", {}, Tools(False).result(0))
    assert caught.value.error_type == "TimeoutError"


async def test_new_mode_replays_the_tape_and_records_the_rest(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        await cache.call_tool("w", "f", {"step": 0}, Tools().result("zero"))
    live = Tools()
    async with atc.ToolCache(cassette=tape, mode="new") as cache:
        assert await cache.call_tool("w", "f", {"step": 0}, live.result("again")) == "zero"
        assert await cache.call_tool("w", "f", {"step": 1}, live.result("one")) == "one"
    assert live.runs == 1
    assert [c["seq"] for c in lines(tape)[1:]] == [0, 1]
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        assert await cache.call_tool("w", "f", {"step": 1}, Tools(False).result(0)) == "one"


async def test_once_records_a_missing_file_then_replays_it(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape) as cache:
        assert cache.cassette is not None and cache.cassette.mode == "record"
        await cache.call_tool("w", "f", {}, Tools().result(1))
    async with atc.ToolCache(cassette=tape) as cache:
        assert cache.cassette is not None and cache.cassette.mode == "replay"
        assert await cache.call_tool("w", "f", {}, Tools(False).result(0)) == 1


async def test_stats_report_what_the_replay_saved(tape: Path) -> None:
    layers = {"results": atc.LayerConfig(ttl=60, cost_per_load=0.25)}
    async with atc.ToolCache(cassette=tape, mode="record", layers=layers) as cache:
        await cache.call_tool("w", "f", {"n": 1}, Tools().result(1))

        async def priced() -> int:
            atc.record_cost(0.75)
            return 2

        await cache.call_tool("w", "f", {"n": 2}, priced)
        assert cache.stats()["results"].loads == 2
    recorded = sum(c["load_seconds"] for c in lines(tape)[1:])
    assert [c["cost"] for c in lines(tape)[1:]] == [0.25, 0.75]
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        for n in (1, 2):
            await cache.call_tool("w", "f", {"n": n}, Tools(False).result(0))
        stats = cache.stats()
    assert stats["results"].replayed == 2 and stats["results"].loads == 0
    assert stats.saved_cost == pytest.approx(1.0)
    assert stats.saved_seconds == pytest.approx(recorded)


async def test_a_torn_last_line_is_ignored_and_dropped_before_appending(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        await cache.call_tool("w", "f", {"n": 1}, Tools().result(1))
    with tape.open("a") as file:
        file.write('{"seq": 1, "layer": "res')  # the process died inside this write
    async with atc.ToolCache(cassette=tape, mode="new") as cache:
        assert await cache.call_tool("w", "f", {"n": 1}, Tools(False).result(0)) == 1
        assert await cache.call_tool("w", "f", {"n": 2}, Tools().result(2)) == 2
    assert [c.get("result") for c in lines(tape)[1:]] == [1, 2]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", "empty cassette"),
        ('{"hello": 1}\n', "not an aiotoolcache cassette"),
        ('{"aiotoolcache_cassette": 1}\nnot json\n{"seq": 0}\n', ":2: not a JSON line"),
    ],
)
def test_a_damaged_file_is_a_clear_error(tape: Path, content: str, error: str) -> None:
    tape.parent.mkdir(parents=True)
    tape.write_text(content)
    with pytest.raises(atc.CassetteError, match=error):
        atc.Cassette(tape, mode="replay")


def test_bad_options_are_configuration_errors(tape: Path) -> None:
    with pytest.raises(atc.ConfigurationError, match="mode"):
        atc.ToolCache(cassette=tape, mode="rewind")
    with pytest.raises(atc.ConfigurationError, match="order"):
        atc.ToolCache(cassette=tape, order="sorted")
    with pytest.raises(atc.ConfigurationError, match="unknown cassette URL option"):
        atc.ToolCache.from_url(f"cassette://{tape}?speed=2")
    with pytest.raises(atc.CassetteError, match="record it first"):
        atc.ToolCache(cassette=tape, mode="replay")


def test_a_cassette_url_takes_its_options_from_the_query() -> None:
    from aiotoolcache.cassette import options_from_url

    assert options_from_url("cassette://tests/c/w.jsonl?mode=record&redact=a,b") == {
        "cassette": "tests/c/w.jsonl",
        "mode": "record",
        "redact": ["a", "b"],
    }
    assert options_from_url("cassette:///abs/w.jsonl")["cassette"] == "/abs/w.jsonl"


async def test_a_value_no_codec_carries_is_marked_and_misses_on_replay(tape: Path) -> None:
    opaque, lone_surrogate = object(), "bad \udc80"
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        # The live caller gets its value even when the cassette cannot keep it.
        assert await cache.call_tool("w", "obj", {}, Tools().result(opaque)) is opaque
        assert await cache.call_tool("w", "str", {}, Tools().result(lone_surrogate)) == "bad \udc80"
    assert [(c["result"], c["unrecordable"]) for c in lines(tape)[1:]] == [
        (None, "object"),
        (None, "str"),
    ]
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        with pytest.raises(atc.CassetteMiss, match="its object result could not be written"):
            await cache.call_tool("w", "obj", {}, Tools(False).result(0))
    async with atc.ToolCache(cassette=tape, mode="new") as cache:
        assert await cache.call_tool("w", "obj", {}, Tools().result(1)) == 1  # runs live


async def test_concurrent_identical_calls_are_each_recorded_and_replayed(tape: Path) -> None:
    async with atc.ToolCache(cassette=tape, mode="record") as cache:
        live = Tools()
        first = await asyncio.gather(
            *(cache.call_tool("w", "f", {}, live.result(n)) for n in range(3))
        )
    assert live.runs == 3  # no single-flight through a cassette: each call is one recording
    async with atc.ToolCache(cassette=tape, mode="replay") as cache:
        again = await asyncio.gather(
            *(cache.call_tool("w", "f", {}, Tools(False).result(0)) for _ in range(3))
        )
    assert sorted(again) == sorted(first) == [0, 1, 2]
