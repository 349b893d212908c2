"""Tool policies: resolution, decisions, and call_tool under them on a real Redis."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

import aiotoolcache as atc
from aiotoolcache.policy import DEFAULT_POLICY, cacheable, partition_tag, read_only, writes
from tests.workers import eventually

# call_tool without a partition: its writes bump the tags of the no-partition partition.
READS_NOTES = f"tag:{partition_tag('reads:notes', None)}"
LIST_DIR = f"tag:{partition_tag('tool:files/list_dir', None)}"

POLICIES = {
    "weather/forecast": atc.ToolPolicy(ttl=600, key_args=["city", "units"]),
    "files/write_*": atc.ToolPolicy(cache=False, invalidates=["read_*", "list_dir"]),
    "files/wipe": atc.ToolPolicy(cache=False),
    "files/touch": atc.ToolPolicy(invalidates=[]),
    "search/*": atc.ToolPolicy(min_load_time=0.05),
    "search/quick_*": atc.ToolPolicy(ttl=5),
    "big/*": atc.ToolPolicy(max_value_bytes=1000),
    "blobs/*": atc.ToolPolicy(max_value_bytes=16 * 2**20),
}


def counting(value: Any = "v") -> tuple[list[int], Callable[[], Awaitable[Any]]]:
    runs = [0]

    async def load() -> Any:
        runs[0] += 1
        return value if not callable(value) else value(runs[0])

    return runs, load


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[tuple[atc.ToolCache, atc.ToolCache]]:
    """Two ToolCaches with the same policies on one Redis: two workers."""
    async with (
        atc.ToolCache.from_url(redis_url, namespace="pol", tool_policies=POLICIES) as a,
        atc.ToolCache.from_url(redis_url, namespace="pol", tool_policies=POLICIES) as b,
    ):
        yield a, b


# -- resolution and decisions (no I/O) ------------------------------------------------------


def test_exact_name_wins_then_the_longest_pattern() -> None:
    cache = atc.ToolCache(tool_policies=POLICIES)
    assert cache.tool_policy("weather", "forecast").ttl == 600
    assert cache.tool_policy("search", "quick_find").ttl == 5  # longer pattern
    assert cache.tool_policy("search", "slow").min_load_time == 0.05
    assert cache.tool_policy("files", "write_file").invalidates == ("read_*", "list_dir")
    assert cache.tool_policy("weather", "other") is DEFAULT_POLICY
    policies = atc.ToolPolicies({"s/*": atc.ToolPolicy(ttl=1), "s/t": atc.ToolPolicy(ttl=2)})
    assert policies.resolve("s", "t").ttl == 2  # exact over a pattern, whatever the order


def test_bad_policies_are_refused() -> None:
    with pytest.raises(atc.ConfigurationError, match="server_id"):
        atc.ToolPolicies({"forecast": atc.ToolPolicy()})
    with pytest.raises(atc.ConfigurationError, match="key_args"):
        atc.ToolPolicy(key_args="city")
    with pytest.raises(atc.ConfigurationError, match="ttl"):
        atc.ToolPolicy(ttl=0)
    with pytest.raises(atc.ConfigurationError, match="min_load_time"):
        atc.ToolPolicy(min_load_time=-1)


def test_annotations_cannot_loosen_a_deny() -> None:
    deny = atc.ToolPolicy(cache=False)
    assert not cacheable(deny, {"readOnlyHint": True})
    assert not cacheable(deny, {"readOnlyHint": True}, trusted=True)
    # Only cache=True (an allow list) caches a tool its annotations do not mark read-only.
    assert cacheable(atc.ToolPolicy(cache=True), {"readOnlyHint": False})
    assert not cacheable(DEFAULT_POLICY, {"idempotentHint": True})
    assert cacheable(DEFAULT_POLICY, {"readOnlyHint": True})
    # Untrusted annotations can only restrict: read-only claims are not believed.
    assert not cacheable(DEFAULT_POLICY, {"readOnlyHint": True}, trusted=False)
    assert writes(DEFAULT_POLICY, {"readOnlyHint": True}, trusted=False)
    # A policy that names what it invalidates is a write, never cached.
    assert not cacheable(atc.ToolPolicy(cache=True, invalidates=["x"]), {"readOnlyHint": True})
    assert writes(DEFAULT_POLICY, None) and not writes(DEFAULT_POLICY, {"readOnlyHint": True})
    assert read_only({"annotations": {"readOnlyHint": True}})


def test_write_tags() -> None:
    policies = atc.ToolPolicies(POLICIES)
    write = policies.resolve("files", "write_file")
    assert policies.write_tags("files", write) == ["reads:files:read_*", "tool:files/list_dir"]
    assert policies.write_tags("files", policies.resolve("files", "wipe")) == ["reads:files"]
    assert policies.write_tags("files", policies.resolve("files", "touch")) == []
    assert "reads:files:read_*" in policies.read_tags("files", "read_file")
    assert "reads:files:read_*" not in policies.read_tags("files", "stat")


# -- call_tool under policies (real Redis) ---------------------------------------------------


async def test_per_tool_ttls_are_seen_in_redis(
    workers: tuple[atc.ToolCache, atc.ToolCache], redis_url: str
) -> None:
    a, _ = workers
    _, load = counting()
    await a.call_tool("weather", "forecast", {"city": "Oslo"}, load)
    await a.call_tool("weather", "alerts", {"city": "Oslo"}, load)
    async with aioredis.from_url(redis_url) as client:
        [forecast] = await client.keys("pol:results:*:forecast:*")
        [alerts] = await client.keys("pol:results:*:alerts:*")
        forecast_ms, alerts_ms = await client.pttl(forecast), await client.pttl(alerts)
    jitter = atc.DEFAULT_LAYERS["results"].jitter
    assert 600_000 * (1 - jitter) - 5_000 < forecast_ms <= 600_000
    assert 300_000 * (1 - jitter) - 5_000 < alerts_ms <= 300_000  # the results layer's


async def test_key_args_hit_across_irrelevant_arguments(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, b = workers
    runs, load = counting(lambda n: f"forecast {n}")
    first = await a.call_tool("weather", "forecast", {"city": "Oslo", "verbose": True}, load)
    second = await b.call_tool("weather", "forecast", {"city": "Oslo", "trace": "x"}, load)
    assert first == second == "forecast 1" and runs == [1]
    # A missing argument is "absent", not None, and not another value.
    await a.call_tool("weather", "forecast", {"city": "Oslo", "units": None}, load)
    await a.call_tool("weather", "forecast", {"city": "Oslo", "units": "C"}, load)
    assert runs == [3]


async def test_new_key_args_name_the_call_anew(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    runs, load = counting(lambda n: f"forecast {n}")
    a.policies = atc.ToolPolicies.of({"weather/forecast": atc.ToolPolicy(key_args=["city"])})
    assert await a.call_tool("weather", "forecast", {"city": "Oslo", "units": "C"}, load) == (
        "forecast 1"
    )
    assert await a.call_tool("weather", "forecast", {"city": "Oslo", "units": "F"}, load) == (
        "forecast 1"
    )
    # Every argument in the key now: the call remembered under the old policy is a new entry.
    a.policies = atc.ToolPolicies.of({"weather/forecast": atc.ToolPolicy()})
    assert await a.call_tool("weather", "forecast", {"city": "Oslo", "units": "F"}, load) == (
        "forecast 2"
    )
    assert runs == [2]


async def test_equal_arguments_of_other_types_read_their_own_results(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    values: tuple[object, ...] = (1, True, 1.0, 0, False, -0.0, 0.0, "1", None)

    def answer(value: object) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            return repr(value)

        return load

    for _ in range(2):  # the second round reads what the first stored
        for tool in ("alerts", "forecast"):  # all arguments in the key; key_args
            for value in values:
                args = {"city": "Oslo", "units": value}
                assert await a.call_tool("weather", tool, args, answer(value)) == repr(value)
    # A key_args policy leaves "verbose" out, whatever its type.
    for value in values:
        args = {"city": "Bergen", "verbose": value}
        assert await a.call_tool("weather", "forecast", args, answer(value)) == "1"


async def test_min_load_time_stores_only_slow_results(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    fast_runs, fast = counting()
    for _ in range(2):
        await a.call_tool("search", "find", {"q": "x"}, fast)
    assert fast_runs == [2]  # returned, never stored

    slow_runs = [0]

    async def slow() -> str:
        slow_runs[0] += 1
        await asyncio.sleep(0.08)
        return "slow"

    for _ in range(2):
        assert await a.call_tool("search", "find", {"q": "y"}, slow) == "slow"
    assert slow_runs == [1]


async def test_max_value_bytes_caps_one_tools_results(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    big_runs, big = counting("x" * 5000)
    small_runs, small = counting("x" * 10)
    for _ in range(2):
        await a.call_tool("big", "dump", {}, big)
        await a.call_tool("big", "dump", {"small": True}, small)
    assert big_runs == [2] and small_runs == [1]


async def test_a_policy_may_raise_the_layers_size_limit_for_its_tool(
    workers: tuple[atc.ToolCache, atc.ToolCache], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = workers
    blob = os.urandom(5 * 2**20)  # incompressible, above the results layer's 1 MiB
    assert atc.DEFAULT_LAYERS["results"].max_value_bytes < len(blob)
    runs, load = counting(blob)
    with caplog.at_level(logging.WARNING, logger="aiotoolcache"):
        assert await a.call_tool("blobs", "fetch", {"id": 1}, load) == blob
        assert await a.call_tool("blobs", "fetch", {"id": 1}, load) == blob  # from L1
        assert await b.call_tool("blobs", "fetch", {"id": 1}, load) == blob  # from L2
    assert runs == [1] and "max_value_bytes" not in caplog.text
    # The raised limit is the tool's: another tool's result of that size is not stored.
    other_runs, other = counting(blob)
    with caplog.at_level(logging.WARNING, logger="aiotoolcache"):
        for _ in range(2):
            assert await a.call_tool("files", "fetch", {"id": 1}, other) == blob
    assert other_runs == [2] and "max_value_bytes=1048576" in caplog.text


def test_a_star_key_matches_every_servers_tools() -> None:
    policies = atc.ToolPolicies({"*": atc.ToolPolicy(ttl=30), "files/*": atc.ToolPolicy(ttl=9)})
    assert policies.resolve("weather", "forecast").ttl == 30
    assert policies.resolve("a.b", "c/d").ttl == 30
    assert policies.resolve("files", "read").ttl == 9  # a longer pattern still wins
    everything = atc.ToolPolicies({"*": atc.ToolPolicy(invalidates=["read_*"])})
    assert "reads:files:read_*" in everything.read_tags("files", "read_file")
    assert atc.ToolCache(tool_policies={"*": atc.ToolPolicy(cache=False)}).tool_policy(
        "x", "y"
    ) == atc.ToolPolicy(cache=False)


async def test_a_write_drops_the_servers_reads_in_another_worker(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, b = workers
    content = ["v1"]

    async def read() -> str:
        return content[0]

    assert await b.call_tool("notes", "read", {"id": 1}, read) == "v1"
    content[0] = "v2"
    assert await b.call_tool("notes", "read", {"id": 1}, read) == "v1"  # cached

    async def write() -> str:
        return "ok"

    assert await a.call_tool("notes", "save", {"id": 1}, write, writes=True) == "ok"
    await wait_for_generation(b, READS_NOTES, a.bus.generation(READS_NOTES))
    assert await b.call_tool("notes", "read", {"id": 1}, read) == "v2"


async def test_a_write_that_raised_still_invalidates_in_every_worker(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, b = workers
    runs, read = counting()
    await b.call_tool("notes", "read", {"id": 1}, read)

    async def saved_then_failed() -> str:
        raise RuntimeError("saved, then the follow-up step failed")

    with pytest.raises(RuntimeError, match="follow-up"):
        await a.call_tool("notes", "save", {"id": 1}, saved_then_failed, writes=True)
    await wait_for_generation(b, READS_NOTES, a.bus.generation(READS_NOTES))
    await b.call_tool("notes", "read", {"id": 1}, read)
    assert runs == [2]


async def test_a_cancelled_write_still_invalidates(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    runs, read = counting()
    await a.call_tool("notes", "read", {"id": 1}, read)
    started = asyncio.Event()

    async def slow_write() -> str:
        started.set()
        await asyncio.Event().wait()  # never finishes on its own
        return "unreachable"

    write = asyncio.create_task(a.call_tool("notes", "save", {"id": 1}, slow_write, writes=True))
    await started.wait()
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert a.bus.generation(READS_NOTES) > 0
    await a.call_tool("notes", "read", {"id": 1}, read)
    assert runs == [2]


async def test_a_write_refused_under_only_if_cached_invalidates_nothing(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    write_runs, write = counting("ok")
    with atc.cache_control("only-if-cached"), pytest.raises(atc.NotCached):
        await a.call_tool("notes", "save", {"id": 1}, write, writes=True)
    assert write_runs == [0]
    assert a.bus.generation(READS_NOTES) == 0


async def test_invalidates_patterns_narrow_what_a_write_drops(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, b = workers
    counts = {name: counting(name) for name in ("read_file", "read_meta", "list_dir", "stat")}
    for name, (_, load) in counts.items():
        await b.call_tool("files", name, {"path": "a"}, load)

    write_runs, write = counting("ok")
    # files/write_* names read_* and list_dir: a write even without writes=True.
    await a.call_tool("files", "write_file", {"path": "a"}, write)
    await a.call_tool("files", "write_file", {"path": "a"}, write)
    assert write_runs == [2]  # writes are never cached
    await wait_for_generation(b, LIST_DIR, a.bus.generation(LIST_DIR))
    for name, (_, load) in counts.items():
        await b.call_tool("files", name, {"path": "a"}, load)
    assert {name: runs[0] for name, (runs, _) in counts.items()} == {
        "read_file": 2,
        "read_meta": 2,
        "list_dir": 2,
        "stat": 1,
    }

    # invalidates=[] turns a write's invalidation off.
    touch_runs, touch = counting("ok")
    await a.call_tool("files", "touch", {"path": "a"}, touch, writes=True)
    await b.call_tool("files", "stat", {"path": "a"}, counts["stat"][1])
    assert counts["stat"][0] == [1] and touch_runs == [1]


async def test_a_read_in_flight_during_a_write_does_not_store_its_old_value(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, b = workers
    started, release = asyncio.Event(), asyncio.Event()
    content = ["old"]

    async def slow_read() -> str:
        value = content[0]
        started.set()
        await release.wait()
        return value

    reading = asyncio.create_task(b.call_tool("notes", "read", {"id": 2}, slow_read))
    await started.wait()
    content[0] = "new"

    async def write() -> str:
        return "ok"

    await a.call_tool("notes", "save", {"id": 2}, write, writes=True)
    await wait_for_generation(b, READS_NOTES, a.bus.generation(READS_NOTES))
    release.set()
    assert await reading == "old"  # its caller gets what it read...

    async def fresh_read() -> str:
        return content[0]

    # ...but it was not stored: both workers load the new content.
    assert await b.call_tool("notes", "read", {"id": 2}, fresh_read) == "new"
    assert await a.call_tool("notes", "read", {"id": 2}, fresh_read) == "new"


async def test_a_write_under_only_if_cached_never_runs(
    workers: tuple[atc.ToolCache, atc.ToolCache],
) -> None:
    a, _ = workers
    runs, write = counting("ok")
    with atc.cache_control("only-if-cached"), pytest.raises(atc.NotCached):
        await a.call_tool("notes", "save", {"id": 1}, write, writes=True)
    assert runs == [0]


async def wait_for_generation(cache: atc.ToolCache, field: str, at_least: int) -> None:
    """Invalidations reach other workers over pub/sub: wait until this one has it."""
    assert at_least > 0
    await eventually(lambda: cache.bus.generation(field) >= at_least)
