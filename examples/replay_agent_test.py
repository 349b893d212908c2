"""Test an agent offline: record its tool calls once, replay them in every test run after.

As a test module (``pytest examples/replay_agent_test.py``) it uses the
``tool_cassette`` fixture of aiotoolcache's pytest plugin: a ToolCache bound
to ``tests/cassettes/replay_agent_test/<test name>.jsonl``. The first run
records (the tools run live); every run after replays, with no network and
no cost, and fails with CassetteMiss if the agent makes a call the cassette
does not hold.

Run as a script (``python examples/replay_agent_test.py``) it shows that
workflow end to end in a temporary project: record, replay offline, the
cassette's table, and the miss a changed agent meets.

Needs pytest, from the test extra: pip install "aiotoolcache[test]"
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

try:
    import pytest
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f'{missing}: this example needs the test extra: pip install "aiotoolcache[test]"',
        name=missing.name,
    ) from missing

import aiotoolcache as atc

OFFLINE = os.environ.get("AGENT_OFFLINE") == "1"  # set by the script for its replays
CITIES = os.environ.get("AGENT_CITIES", "Oslo,Paris").split(",")


async def fetch_forecast(city: str, api_key: str) -> dict[str, Any]:
    """Stands in for a weather API over the network (slow, metered, never the same twice)."""
    if OFFLINE:
        raise RuntimeError("the network is off: this call should have been replayed")
    await asyncio.sleep(0.05)
    atc.record_cost(0.002)  # what this call cost: the cassette keeps it, a replay saves it
    return {"city": city, "temp_c": {"Oslo": 9, "Paris": 21}.get(city, 15)}


async def plan_trip(cache: atc.ToolCache, cities: list[str]) -> str:
    """The agent under test: asks the forecast of each city and picks the warmest."""
    forecasts = []
    # api_key is redacted in the cassette (its name looks secret) and ignored by matching.
    key = os.environ.get("WEATHER_KEY", "sk-demo")
    for city in cities:
        forecasts.append(
            await cache.call_tool(
                "weather",
                "forecast",
                {"city": city, "api_key": key},
                lambda city=city: fetch_forecast(city, key),
            )
        )
    warmest = max(forecasts, key=lambda forecast: forecast["temp_c"])
    return f"go to {warmest['city']}"


def test_agent_picks_the_warmest_city(tool_cassette: atc.ToolCache) -> None:
    assert asyncio.run(plan_trip(tool_cassette, CITIES)) == "go to Paris"


@pytest.mark.tool_cassette(order="strict")
def test_agent_asks_in_the_recorded_order(tool_cassette: atc.ToolCache) -> None:
    assert asyncio.run(plan_trip(tool_cassette, ["Paris", "Oslo"])) == "go to Paris"


# -- the workflow, end to end ------------------------------------------------------------------


def _pytest(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
        "-p", "aiotoolcache.pytest_plugin", "-c", str(project / "pytest.ini"),
        "--rootdir", str(project), *args,
    ]  # fmt: skip
    # Only this plugin: the temporary project does not need every installed one.
    environment = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **env}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory)
        (project / "pytest.ini").write_text("[pytest]\n")

        print("1. First run: the tools run live and every call is recorded.")
        done = _pytest(project, "--tool-cassettes=record")
        assert done.returncode == 0, done.stdout + done.stderr
        print("   " + done.stdout.strip().splitlines()[-1])

        print("2. Every later run replays offline (the weather API would raise if reached).")
        done = _pytest(project, AGENT_OFFLINE="1")
        assert done.returncode == 0, done.stdout + done.stderr
        print("   " + done.stdout.strip().splitlines()[-1])

        recorded = project / "tests" / "cassettes" / "replay_agent_test"
        cassette = recorded / "test_agent_picks_the_warmest_city.jsonl"
        text = cassette.read_text()
        assert "sk-demo" not in text and "<redacted>" in text
        print(f"3. The cassette {cassette.relative_to(project)}:")
        shown = subprocess.run(
            [sys.executable, "-m", "aiotoolcache", "cassette", "show", str(cassette)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print("\n".join("   " + line for line in shown.stdout.splitlines()))

        print("4. The agent changed (it asks about Lyon): the test fails with a diff.")
        done = _pytest(project, "-k", "warmest", AGENT_OFFLINE="1", AGENT_CITIES="Oslo,Lyon")
        assert done.returncode == 1 and "CassetteMiss" in done.stdout, done.stdout
        lines = done.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if "CassetteMiss: " in line)
        message = "\n".join(line.removeprefix("E") for line in lines[start : start + 24])
        print(textwrap.indent(textwrap.dedent(message), "   "))
        print("   Re-record with: pytest --tool-cassettes=record (or =new to keep the rest).")


if __name__ == "__main__":
    main()
