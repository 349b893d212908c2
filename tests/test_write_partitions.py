"""A write drops the cached results of its own partition, unless its policy says every partition."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import aiotoolcache as atc
from aiotoolcache.policy import EVERY_PARTITION, partition_tag
from tests.workers import eventually

POLICIES = {
    "crm/note": atc.ToolPolicy(invalidates=["*"]),
    "crm/import_catalog": atc.ToolPolicy(invalidates=["*"], invalidates_partitions="all"),
    "crm/rename": atc.ToolPolicy(invalidates=["report", "list_*"]),
}


def test_read_tags_carry_the_partition_form_of_every_tag_a_write_bumps() -> None:
    policies = atc.ToolPolicies(POLICIES)
    plain = policies.read_tags("crm", "list_users")
    assert plain == ["server:crm", "tool:crm/list_users", "reads:crm", "reads:crm:list_*"]
    assert policies.read_tags("crm", "list_users", EVERY_PARTITION) == plain
    scoped = policies.read_tags("crm", "list_users", "tenant-a")
    assert scoped == plain + [partition_tag(tag, "tenant-a") for tag in plain[1:]]
    assert partition_tag("reads:crm", "tenant-a") != partition_tag("reads:crm", "tenant-b")
    assert partition_tag("reads:crm", None) == "reads:crm@p:-"
    assert "tenant-a" not in partition_tag("reads:crm", "tenant-a")  # no partition in clear


def test_write_tags_are_the_partitions_unless_the_policy_says_all() -> None:
    policies = atc.ToolPolicies(POLICIES)
    note, catalog = policies.resolve("crm", "note"), policies.resolve("crm", "import_catalog")
    rename = policies.resolve("crm", "rename")
    assert policies.write_tags("crm", note, "tenant-b") == [partition_tag("reads:crm", "tenant-b")]
    assert policies.write_tags("crm", note, None) == [partition_tag("reads:crm", None)]
    assert policies.write_tags("crm", note) == ["reads:crm"]  # partition not known: every one
    assert policies.write_tags("crm", catalog, "tenant-b") == ["reads:crm"]
    assert policies.write_tags("crm", rename, "t") == sorted(
        [partition_tag("reads:crm:list_*", "t"), partition_tag("tool:crm/report", "t")]
    )
    with pytest.raises(atc.ConfigurationError, match="invalidates_partitions"):
        atc.ToolPolicy(invalidates_partitions="everyone")  # type: ignore[arg-type]


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[atc.ToolCache]:
    async with atc.ToolCache(redis_url, tool_policies=POLICIES) as tool_cache:
        yield tool_cache


def tool(runs: list[str], name: str) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        runs.append(name)
        return f"{name} #{len(runs)}"

    return run


async def report(cache: atc.ToolCache, partition: str | None, runs: list[str]) -> str:
    return await cache.call_tool("crm", "report", {}, tool(runs, "report"), partition=partition)


async def test_one_tenants_write_leaves_another_tenants_results(cache: atc.ToolCache) -> None:
    runs: list[str] = []
    first = await report(cache, "tenant-a", runs)
    await cache.call_tool("crm", "note", {"t": 1}, tool([], "note"), partition="tenant-b")
    await cache.call_tool("crm", "note", {"t": 1}, tool([], "note"), partition=None)
    assert await report(cache, "tenant-a", runs) == first and runs == ["report"]
    # Its own write drops them.
    await cache.call_tool("crm", "note", {"t": 1}, tool([], "note"), partition="tenant-a")
    assert await report(cache, "tenant-a", runs) != first and len(runs) == 2


async def test_a_write_to_every_partition_drops_every_tenants_results(
    cache: atc.ToolCache, redis_url: str
) -> None:
    runs: list[str] = []
    for partition in ("tenant-a", None):
        await report(cache, partition, runs)
    async with atc.ToolCache(redis_url, tool_policies=POLICIES) as other_worker:
        await other_worker.call_tool(
            "crm", "import_catalog", {}, tool([], "import"), partition="tenant-b"
        )
        field = "tag:reads:crm"
        await eventually(lambda: cache.bus.generation(field) >= other_worker.bus.generation(field))
    for partition in ("tenant-a", None):
        await report(cache, partition, runs)
    assert len(runs) == 4


async def test_an_mcp_client_write_stays_in_its_partition(cache: atc.ToolCache) -> None:
    pytest.importorskip("fastmcp")
    from fastmcp import Client, FastMCP
    from mcp_types import ToolAnnotations

    from aiotoolcache.integrations.mcp import ToolCallCache

    server = FastMCP("crm")
    runs: list[str] = []

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def summary(tenant: str) -> str:
        runs.append(tenant)
        return f"summary for {tenant}"

    @server.tool
    def note(text: str) -> str:  # no annotations: a write
        return "noted"

    a = ToolCallCache(cache, server_id="crm", partition="tenant-a")
    b = ToolCallCache(cache, server_id="crm", partition="tenant-b")
    async with Client(server) as client:
        await a.call_tool(client, "summary", {"tenant": "a"})
        await b.call_tool(client, "note", {"text": "hi"})
        await a.call_tool(client, "summary", {"tenant": "a"})
        assert runs == ["a"]
        await a.call_tool(client, "note", {"text": "mine"})
        await a.call_tool(client, "summary", {"tenant": "a"})
    assert runs == ["a", "a"]
