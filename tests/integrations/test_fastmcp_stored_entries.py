"""ToolCacheMiddleware and what it stores: every content type round trips, and a stored
entry it cannot read is a counted miss that runs the real handler (FastMCP in process)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("fastmcp")

import mcp_types
from fastmcp import Client, Context, FastMCP
from fastmcp.prompts.base import Message
from mcp_types import ResourceLink, ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations._fastmcp_components import component_set_version
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware

LINK = ResourceLink(type="resource_link", uri="data://docs/guide", name="guide")


def make_server(cache: atc.ToolCache | None, runs: list[str]) -> FastMCP:
    """A server with one tool, resource, template and prompt; ``cache=None``: no middleware."""
    server = FastMCP("docs")
    if cache is not None:
        server.add_middleware(ToolCacheMiddleware(cache))

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(term: str) -> str:
        runs.append("tool")
        return f"{term}: found"

    @server.resource("data://docs/guide")
    def guide() -> str:
        runs.append("resource")
        return "the guide"

    @server.resource("data://docs/page/{n}")
    def page(n: str) -> str:
        return f"page {n}"

    @server.prompt
    def linked(topic: str) -> list[Message]:
        runs.append("prompt")
        return [
            Message(f"Read about {topic}:"),
            Message(LINK),
            Message(
                mcp_types.EmbeddedResource(
                    type="resource",
                    resource=mcp_types.TextResourceContents(uri="data://docs/x", text="x"),
                ),
                role="assistant",
            ),
        ]

    return server


# -- every prompt content type -----------------------------------------------------------------


async def test_a_prompt_with_a_resource_link_is_cached(cache: atc.ToolCache) -> None:
    runs: list[str] = []
    async with Client(make_server(None, [])) as plain:
        expected = await plain.get_prompt_mcp("linked", {"topic": "caching"})
    async with Client(make_server(cache, runs)) as client:
        answers = [await client.get_prompt_mcp("linked", {"topic": "caching"}) for _ in range(3)]
    assert runs == ["prompt"]
    assert all(answer.messages == expected.messages for answer in answers)
    assert answers[0].messages[1].content == LINK
    assert cache.stats()["prompts"].corrupt == 0


async def test_a_tool_result_with_a_resource_link_is_cached(cache: atc.ToolCache) -> None:
    server = FastMCP("links")
    server.add_middleware(ToolCacheMiddleware(cache))
    runs: list[str] = []

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def where() -> list[Any]:
        runs.append("where")
        return ["see:", LINK]

    async with Client(server) as client:
        first = await client.call_tool_mcp("where", {})
        second = await client.call_tool_mcp("where", {})
    assert runs == ["where"]
    assert first == second
    assert LINK in first.content


# -- stored entries that cannot be read ---------------------------------------------------------

# Each cached request: its layer, the key the middleware files it under, its label,
# and how a client makes it.
Request = Callable[[Client[Any]], Awaitable[Any]]
REQUESTS: dict[str, tuple[str, Any, str, Request]] = {
    "tools/list": (
        "discovery",
        ("fastmcp.list_tools", "docs"),
        "docs",
        lambda client: client.list_tools_mcp(),
    ),
    "resources/list": (
        "discovery",
        ("fastmcp.list_resources", "docs"),
        "docs",
        lambda client: client.list_resources_mcp(),
    ),
    "resources/templates/list": (
        "discovery",
        ("fastmcp.list_resource_templates", "docs"),
        "docs",
        lambda client: client.list_resource_templates_mcp(),
    ),
    "prompts/list": (
        "discovery",
        ("fastmcp.list_prompts", "docs"),
        "docs",
        lambda client: client.list_prompts_mcp(),
    ),
    "tools/call": (
        "results",
        ("fastmcp.call_tool", "docs", "lookup", {"term": "ttl"}, None),
        "lookup",
        lambda client: client.call_tool_mcp("lookup", {"term": "ttl"}),
    ),
    "resources/read": (
        "resources",
        ("fastmcp.read_resource", "docs", "data://docs/guide", None),
        "resource",
        lambda client: client.read_resource_mcp("data://docs/guide"),
    ),
    "prompts/get": (
        "prompts",
        ("fastmcp.get_prompt", "docs", "linked", {"topic": "ttl"}, None),
        "linked",
        lambda client: client.get_prompt_mcp("linked", {"topic": "ttl"}),
    ),
}

UNREADABLE: list[Any] = [
    "not a payload",
    {"junk": 1},
    [{"name": 7}],
    # What an older release stored for the prompt before it knew resource links,
    # or a newer one might store for a content type this one does not know.
    {
        "messages": [{"role": "user", "content": {"type": "video", "uri": "data://v"}}],
        "description": None,
        "meta": None,
    },
    {"content": [{"type": "text"}], "structured_content": None, "meta": None, "raw": None},
    {"contents": [{"content": 42, "mime_type": None, "meta": None}], "meta": None},
]


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("planted", UNREADABLE, ids=lambda value: type(value).__name__)
async def test_an_unreadable_entry_is_a_counted_miss_that_runs_the_handler(
    cache: atc.ToolCache, request_name: str, planted: Any
) -> None:
    layer_name, key, label, make_request = REQUESTS[request_name]
    async with Client(make_server(None, [])) as plain:
        expected = await make_request(plain)
    runs: list[str] = []
    server = make_server(cache, runs)  # adds the resources and prompts layers
    if layer_name == "discovery":  # a listing's key ends with the server's component set
        async with Context(fastmcp=server) as ctx:
            key = (*key, await component_set_version(ctx))
    await cache.layer(layer_name).set(key, planted, label=label)
    async with Client(server) as client:
        first = await make_request(client)
        before = cache.stats()[layer_name]
        second = await make_request(client)
        after = cache.stats()[layer_name]
    assert _without_server_meta(first) == _without_server_meta(expected)
    assert second == first
    assert before.corrupt == 1
    assert before.misses >= 1 and before.loads >= 1
    # The entry was replaced: the next request is a hit, with nothing run again.
    assert after.hits == before.hits + 1
    assert after.loads == before.loads
    assert after.corrupt == 1
    assert len(runs) <= 1


async def test_an_unreadable_entry_on_redis_is_replaced_for_every_replica(redis_url: str) -> None:
    namespace = f"fastmcp-unreadable-{uuid.uuid4().hex}"
    _, key, label, make_request = REQUESTS["prompts/get"]
    planted = UNREADABLE[3]
    async with (
        atc.ToolCache.from_url(redis_url, namespace=namespace) as writer,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as first,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as second,
    ):
        make_server(writer, [])
        await writer.layer("prompts").set(key, planted, label=label)
        runs_a: list[str] = []
        runs_b: list[str] = []
        async with Client(make_server(first, runs_a)) as client:
            answer_a = await make_request(client)
        async with Client(make_server(second, runs_b)) as client:
            answer_b = await make_request(client)
        assert runs_a == ["prompt"]
        assert runs_b == []  # the replacement came from Redis
        assert answer_a == answer_b
        assert answer_a.messages[1].content == LINK
        assert first.stats()["prompts"].corrupt == 1
        assert second.stats()["prompts"].corrupt == 0


async def test_an_answer_that_cannot_be_read_back_is_served_but_not_stored(
    cache: atc.ToolCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiotoolcache.integrations import _fastmcp_payloads as payloads

    def unreadable(data: Any) -> Any:
        raise payloads.Undecodable("this release cannot read it")

    monkeypatch.setattr(payloads, "load_prompt_result", unreadable)
    runs: list[str] = []
    async with Client(make_server(cache, runs)) as client:
        for _ in range(2):
            answer = await client.get_prompt_mcp("linked", {"topic": "x"})
            assert answer.messages[1].content == LINK
    assert runs == ["prompt", "prompt"]
    stats = cache.stats()["prompts"]
    assert stats.skipped_writes == 2
    assert stats.corrupt == 0


def _without_server_meta(answer: Any) -> Any:
    """The answer without the serverInfo FastMCP adds to every result's ``_meta``."""
    return answer.model_copy(update={"meta": None}) if hasattr(answer, "meta") else answer
