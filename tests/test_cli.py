"""The ``aiotoolcache`` command line, run as a real subprocess against real Redis servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import aiotoolcache as atc
from aiotoolcache.cli.doctor import server_check
from aiotoolcache.fleet import FleetReporter
from aiotoolcache.local_server import require_server
from aiotoolcache.server_info import server_info
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m aiotoolcache ARGS`` (the console script's entry point) in a new process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOTOOLCACHE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "aiotoolcache", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


async def arun_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aiotoolcache: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_the_console_script_is_the_cli_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["aiotoolcache"] == "aiotoolcache.cli:main"
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("aiotoolcache ")


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("demo", "stats", "invalidate", "doctor", "inspect"):
        assert command in result.stdout


# -- doctor -------------------------------------------------------------------------------


def test_doctor_on_a_live_redis(redis_url: str) -> None:
    result = run_cli("doctor", "--url", redis_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for check in ("round trip", "server", "TLS", "cluster mode", "read/write", "pub/sub"):
        assert check in out
    # The test servers run with the Redis default policy, which the doctor warns about.
    assert "warn  maxmemory-policy  noeviction" in out
    report = json.loads(run_cli("doctor", "--url", redis_url, "--json").stdout)
    assert report["ok"] is True
    statuses = {item["check"]: item["status"] for item in report["checks"]}
    assert statuses["pub/sub"] == "ok" and statuses["scripting"] == "ok"
    assert statuses["server"] == "ok"  # the suite's servers are Redis 7 or Valkey 9
    assert statuses["maxmemory-policy"] == "warn"


@pytest.mark.parametrize(
    ("info", "status", "named"),
    [
        ({"redis_version": "6.2.14"}, "warn", "Redis 6.2.14"),
        ({"redis_version": "7.0.15"}, "ok", "Redis 7.0.15"),
        ({"redis_version": "7.2.4", "valkey_version": "9.1.2"}, "ok", "Valkey 9.1.2"),
        ({"redis_version": "x"}, "warn", "unknown"),
    ],
)
def test_doctor_names_the_server_and_recommends_one_that_leases_in_one_command(
    info: dict[str, str], status: str, named: str
) -> None:
    verdict, name, detail = server_check(server_info(info))
    assert (verdict, name) == (status, "server") and named in detail
    assert ("7.0 or newer" in detail) == (status == "warn" and named != "unknown")


def test_doctor_says_which_fast_paths_the_live_server_has(redis_url: str) -> None:
    report = json.loads(run_cli("doctor", "--url", redis_url, "--json").stdout)
    detail = next(item["detail"] for item in report["checks"] if item["check"] == "server")
    server = require_server()
    assert detail.startswith(f"{server.flavour} {server.version} (standalone); SET NX GET on")
    assert "SET IFEQ" in detail


def test_doctor_strict_fails_on_a_warning(redis_url: str) -> None:
    assert_one_line_error(run_cli("doctor", "--url", redis_url, "--strict"), "maxmemory-policy")


def test_doctor_is_happy_with_an_evicting_redis(own_redis) -> None:
    with own_redis.client() as client:
        client.config_set("maxmemory-policy", "allkeys-lru")
    result = run_cli("doctor", "--url", own_redis.url, "--strict")
    assert result.returncode == 0, result.stderr
    assert "ok    maxmemory-policy  allkeys-lru" in result.stdout


def test_doctor_on_a_dead_url_is_one_line_and_non_zero() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli("doctor", "--url", url)
    assert_one_line_error(result, "cannot reach", url)
    assert result.stdout == ""
    as_json = run_cli("doctor", "--url", url, "--json")
    assert_one_line_error(as_json, "cannot reach")
    assert json.loads(as_json.stdout)["ok"] is False


def test_passwords_never_appear_in_messages() -> None:
    result = run_cli("doctor", "--url", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert_one_line_error(result, "redis://:***@127.0.0.1")
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("doctor", "--url", "http://127.0.0.1:1"),
        ("stats", "--url", "mongodb://x"),
        ("invalidate", "--url", "foo://bar", "--all"),
        ("inspect", "--url", "ftp://x", "--layer", "results", "k"),
    ],
)
def test_a_bad_scheme_is_one_line_and_non_zero(args: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli(*args), "unsupported cache URL scheme")


def test_an_embedded_url_is_refused_where_a_shared_one_is_needed() -> None:
    assert_one_line_error(run_cli("stats", "--url", "memory://"), "shared Redis URL")


def test_usage_errors_are_one_line() -> None:
    result = run_cli("invalidate", "--url", "redis://127.0.0.1:1")
    assert_one_line_error(result, "--layer", "--all")
    assert result.returncode == 2
    assert_one_line_error(run_cli("frobnicate"), "invalid choice")
    assert_one_line_error(run_cli("stats"), "AIOTOOLCACHE_URL")


# -- invalidate -----------------------------------------------------------------------------


async def test_invalidate_in_another_process_reaches_this_worker(
    redis_url: str, cache: atc.ToolCache
) -> None:
    loads: list[str] = []

    async def call(server: str) -> str:
        async def load() -> str:
            loads.append(server)
            return f"result of {server}"

        return await cache.call_tool(server, "search", {"q": "x"}, load)

    async def until_reloaded(server: str, expected: int) -> None:
        deadline = time.monotonic() + 5
        while loads.count(server) < expected:
            assert time.monotonic() < deadline, f"{server} was never reloaded"
            await call(server)
            await asyncio.sleep(0.02)

    for server in ("a", "b"):
        await call(server)
        await call(server)
    assert loads == ["a", "b"]

    result = await arun_cli(
        "invalidate", "--url", redis_url, "--namespace", "test", "--server", "a"
    )
    assert result.returncode == 0, result.stderr
    assert "invalidated server a in namespace test" in result.stdout
    await until_reloaded("a", 2)
    await call("b")
    assert loads.count("b") == 1  # only server a's entries were dropped

    result = await arun_cli(
        "invalidate", "--url", redis_url, "--namespace", "test", "--layer", "results", "--json"
    )
    assert result.returncode == 0, result.stderr
    generations = json.loads(result.stdout)["generations"]
    assert list(generations) == ["layer:results"] and generations["layer:results"] > 0
    await until_reloaded("b", 2)

    result = await arun_cli("invalidate", "--url", redis_url, "--namespace", "test", "--all")
    assert result.returncode == 0, result.stderr
    await until_reloaded("a", 3)

    result = await arun_cli(
        "invalidate", "--url", redis_url, "--namespace", "test", "--tag", "tool:b/search"
    )
    assert result.returncode == 0, result.stderr
    await until_reloaded("b", 3)


def test_invalidate_an_unknown_layer_is_one_line(redis_url: str) -> None:
    result = run_cli("invalidate", "--url", redis_url, "--layer", "nope")
    assert_one_line_error(result, "unknown layer 'nope'")


def test_invalidate_on_a_dead_url_fails() -> None:
    result = run_cli("invalidate", "--url", f"redis://127.0.0.1:{free_port()}", "--all")
    assert_one_line_error(result, "cannot reach")


# -- stats ----------------------------------------------------------------------------------


async def test_stats_json_is_parseable_and_fleet_wide(redis_url: str, cache: atc.ToolCache) -> None:
    reporter = FleetReporter(cache, interval=60)
    for _ in range(3):
        await cache.call_tool("s", "t", {}, lambda: asyncio.sleep(0.001, "v"))
    assert await reporter.flush()
    try:
        result = await arun_cli("stats", "--url", redis_url, "--namespace", "test", "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["namespace"] == "test" and data["workers_alive"] == 1
        results = data["layers"]["results"]
        assert (results["l1_hits"], results["misses"], results["loads"]) == (2, 1, 1)
        assert results["hit_rate"] == pytest.approx(2 / 3)

        table = await arun_cli("stats", "--url", redis_url, "--namespace", "test")
        assert table.returncode == 0, table.stderr
        assert "1 worker alive" in table.stdout
        row = next(line for line in table.stdout.splitlines() if line.startswith("results"))
        assert "66.7%" in row

        watched = await arun_cli(
            "stats",
            "--url",
            redis_url,
            "--namespace",
            "test",
            "--json",
            "--watch",
            "0.1",
            "--count",
            "2",
        )
        assert watched.returncode == 0, watched.stderr
        lines = watched.stdout.splitlines()
        assert len(lines) == 2 and all(json.loads(line)["workers_alive"] == 1 for line in lines)
    finally:
        await reporter.aclose()


def test_stats_of_an_empty_namespace(redis_url: str) -> None:
    result = run_cli("stats", "--url", redis_url, "--namespace", "nobody")
    assert result.returncode == 0, result.stderr
    assert "0 workers alive" in result.stdout and "no counters reported yet" in result.stdout


def test_stats_on_a_dead_url_fails() -> None:
    assert_one_line_error(run_cli("stats", "--url", f"redis://127.0.0.1:{free_port()}"))


# -- inspect --------------------------------------------------------------------------------

SECRET_ARGUMENT = "token-s3cr3t-value"


async def test_inspect_an_existing_and_a_missing_entry(
    redis_url: str, cache: atc.ToolCache
) -> None:
    arguments = {"q": SECRET_ARGUMENT, "limit": 5}
    await cache.call_tool("github", "search_issues", arguments, lambda: asyncio.sleep(0.01, "hit"))
    await cache.list_tools("github", lambda: asyncio.sleep(0, ["search_issues"]))
    base = ("inspect", "--url", redis_url, "--namespace", "test")
    call = ("call_tool", "github", "search_issues", json.dumps(arguments))

    found = await arun_cli(*base, *call)
    assert found.returncode == 0, found.stderr
    assert "exists     yes" in found.stdout
    assert "server:github, tool:github/search_issues" in found.stdout
    assert "served     yes" in found.stdout
    assert SECRET_ARGUMENT not in found.stdout  # argument values are never printed

    data = json.loads((await arun_cli(*base, "--json", *call)).stdout)
    ref = cache.results.ref(
        ("call_tool", "github", "search_issues", arguments), label="search_issues"
    )
    assert data["key"] == ref.value_key
    assert data["exists"] and data["readable"] and data["served"]
    assert data["layer"] == "results"
    assert 0 <= data["age_seconds"] < 60
    assert 0 < data["redis_ttl_seconds"] <= 300
    assert data["load_seconds"] >= 0.009
    assert data["stored_bytes"] > 0 and data["payload_bytes"] > 0
    assert SECRET_ARGUMENT not in json.dumps(data)

    listed = await arun_cli(*base, "list_tools", "github")
    assert listed.returncode == 0 and "layer      discovery" in listed.stdout

    missing = await arun_cli(*base, "call_tool", "github", "search_issues", '{"q": "other"}')
    assert missing.returncode == 3
    assert "exists  no" in missing.stdout and missing.stderr == ""

    # After an invalidation the entry is still in Redis but would not be served.
    await cache.invalidate_server("github")
    stale = await arun_cli(*base, "--json", "list_tools", "github")
    assert stale.returncode == 3
    report = json.loads(stale.stdout)
    assert report["exists"] and not report["served"]
    assert report["invalidated_tags"] == ["server:github"]


async def test_inspect_with_an_explicit_layer_and_partition(
    redis_url: str, cache: atc.ToolCache
) -> None:
    await cache.results.set(["custom", 1], "v", partition="tenant-a", label="custom")
    base = ("inspect", "--url", redis_url, "--namespace", "test", "--layer", "results")
    hit = await arun_cli(*base, "--label", "custom", "--partition", "tenant-a", "custom", "1")
    assert hit.returncode == 0, hit.stdout + hit.stderr
    other = await arun_cli(*base, "--label", "custom", "--partition", "tenant-b", "custom", "1")
    assert other.returncode == 3
    raw = await arun_cli(
        *base, "--label", "custom", "--partition", "tenant-a", "--raw", "custom", "1"
    )
    assert raw.returncode == 3  # "1" taken as a string is another key


async def test_inspect_a_signed_entry_needs_the_secret(redis_url: str) -> None:
    async with atc.ToolCache.from_url(redis_url, namespace="signed", secret="k3y") as signed:
        await signed.list_tools("srv", lambda: asyncio.sleep(0, ["t"]))
    base = ("inspect", "--url", redis_url, "--namespace", "signed", "--json")
    without = json.loads((await arun_cli(*base, "list_tools", "srv")).stdout)
    assert without["exists"] and not without["readable"]
    with_secret = json.loads((await arun_cli(*base, "--secret", "k3y", "list_tools", "srv")).stdout)
    assert with_secret["readable"] and with_secret["served"]


async def test_inspect_an_entry_being_loaded(redis_url: str, cache: atc.ToolCache) -> None:
    started, done = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await done.wait()
        return "v"

    loading = asyncio.create_task(cache.results.get_or_load("k", slow))
    await started.wait()
    base = ("inspect", "--url", redis_url, "--namespace", "test", "--layer", "results")
    report = json.loads((await arun_cli(*base, "--json", "--raw", "k")).stdout)
    done.set()
    assert await loading == "v"
    assert report["loading_elsewhere"] and not report["exists"]  # its lease, not a value


def test_inspect_needs_a_layer_for_a_plain_key(redis_url: str) -> None:
    result = run_cli("inspect", "--url", redis_url, "some-key")
    assert_one_line_error(result, "--layer is required")
    result = run_cli("inspect", "--url", redis_url, "--layer", "nope", "some-key")
    assert_one_line_error(result, "unknown layer 'nope'")
