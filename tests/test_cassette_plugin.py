"""The pytest plugin, used from a test file in a temporary project through ``pytester``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

TESTS = """
import contextlib
import pytest

LIVE = {live}

async def fetch(city):
    if not LIVE:
        raise AssertionError("the network was reached")
    return {{"city": city, "temp": len(city)}}

async def test_forecast(tool_cassette):
    got = await tool_cassette.call_tool(
        "weather", "forecast", {{"city": "{city}"}}, lambda: fetch("{city}")
    )
    assert got == {{"city": "Paris", "temp": 5}}

async def test_swallowed_miss(tool_cassette):
    # An agent framework that turns tool exceptions into messages for the model.
    with contextlib.suppress(Exception):
        await tool_cassette.call_tool("weather", "forecast", {{"city": "{city}"}},
                                      lambda: fetch("{city}"))

@pytest.mark.tool_cassette(path="recorded/shared.jsonl", order="strict")
async def test_marked(tool_cassette):
    assert tool_cassette.cassette.order == "strict"
    for city in ("Paris", "Oslo"):
        await tool_cassette.call_tool("weather", "forecast", {{"city": city}},
                                      lambda: fetch(city))
"""


PLUGINS = ("-p", "asyncio", "-p", "aiotoolcache.pytest_plugin", "-p", "no:cacheprovider")


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # Only the plugins named: the temporary project does not load every installed one.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "addopts = --strict-markers\n"
    )
    return pytester


def run(project: pytest.Pytester, live: bool, city: str, *args: str) -> pytest.RunResult:
    project.makepyfile(test_weather=TESTS.format(live=live, city=city))
    return project.runpytest(*PLUGINS, *args)


def test_first_run_records_then_replays_offline(project: pytest.Pytester) -> None:
    run(project, True, "Paris").assert_outcomes(passed=3)
    cassette = project.path / "tests" / "cassettes" / "test_weather" / "test_forecast.jsonl"
    header, call = (json.loads(line) for line in cassette.read_text().splitlines())
    assert call["arguments"] == {"city": "Paris"} and call["result"]["temp"] == 5
    assert (project.path / "recorded" / "shared.jsonl").exists()
    # Offline: every loader now raises, and the replay still passes.
    run(project, False, "Paris").assert_outcomes(passed=3)


def test_a_call_not_on_the_cassette_fails_with_a_diff(project: pytest.Pytester) -> None:
    run(project, True, "Paris").assert_outcomes(passed=3)
    result = run(project, False, "Lyon")
    # test_swallowed_miss passes its call phase and errors at teardown.
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*CassetteMiss: results call_tool weather/forecast: not recorded in *",
            '*-    "city": "Paris"*',
            '*+    "city": "Lyon"*',
        ]
    )
    # The swallowed miss still fails its test, at teardown.
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_swallowed_miss*"])


def test_the_option_sets_the_mode(project: pytest.Pytester) -> None:
    run(project, True, "Paris").assert_outcomes(passed=3)
    # Re-recording with a different world: the new result is on the tape.
    result = run(project, True, "Lyon", "--tool-cassettes=record")
    result.assert_outcomes(passed=2, failed=1)  # test_forecast asserts on Paris
    cassette = project.path / "tests" / "cassettes" / "test_weather" / "test_forecast.jsonl"
    assert '"Lyon"' in cassette.read_text()
    # Replay mode with no file is a clear error, not a recording.
    cassette.unlink()
    result = run(project, False, "Paris", "--tool-cassettes=replay", "-k", "test_forecast")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CassetteError: no cassette at *record it first*"])


def test_the_marker_is_registered_and_the_option_documented(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGINS, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.tool_cassette(path=None, mode=None, order=None*"])
    result = project.runpytest(*PLUGINS, "--help")
    result.stdout.fnmatch_lines(["*--tool-cassettes=*"])


def test_the_package_registers_the_plugin_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plugins = project["entry-points"]["pytest11"]
    assert plugins == {"aiotoolcache.pytest_plugin": "aiotoolcache.pytest_plugin"}
