"""ToolCacheMiddleware on FastMCP servers and proxies, in process (no network)."""

from __future__ import annotations

import importlib
import sys
import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest

pytest.importorskip("fastmcp")

import mcp_types
from fastmcp import Client, Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.prompts.base import Message
from fastmcp.resources.base import ResourceContent, ResourceResult
from fastmcp.server import create_proxy
from fastmcp.server.middleware.middleware import MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, Tool, ToolResult
from mcp_types import Icon, ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware
from aiotoolcache.integrations.mcp import list_changed_handler
from tests.integrations.fastmcp_helpers import RequestCounter, signed_in

READ_ONLY = ToolAnnotations(read_only_hint=True)
IDEMPOTENT = ToolAnnotations(idempotent_hint=True)


def make_server(
    cache: atc.ToolCache, name: str = "weather", **options: Any
) -> tuple[FastMCP, dict[str, int]]:
    """A server whose tools count how often their bodies run."""
    runs: dict[str, int] = {}

    def ran(tool: str) -> None:
        runs[tool] = runs.get(tool, 0) + 1

    server = FastMCP(name)
    server.add_middleware(ToolCacheMiddleware(cache, **options))

    @server.tool(annotations=READ_ONLY)
    def forecast(city: str, days: int = 1) -> dict[str, Any]:
        ran("forecast")
        return {"city": city, "days": days}

    @server.tool(annotations=IDEMPOTENT)
    def set_units(units: str) -> str:
        ran("set_units")
        return units

    @server.tool
    def book(city: str) -> str:
        ran("book")
        return f"booked {city}"

    @server.tool(annotations=READ_ONLY)
    def flaky(city: str) -> str:
        ran("flaky")
        raise ToolError(f"upstream down for {city}")

    @server.tool(annotations=READ_ONLY)
    def soft_error(city: str) -> ToolResult:
        ran("soft_error")
        return ToolResult(content=f"no data for {city}", is_error=True)

    return server, runs


# -- tool results --------------------------------------------------------------------------


async def test_second_identical_call_is_served_from_cache(cache: atc.ToolCache) -> None:
    server, runs = make_server(cache)
    async with Client(server) as client:
        first = await client.call_tool_mcp("forecast", {"city": "Paris", "days": 2})
        second = await client.call_tool_mcp("forecast", {"city": "Paris", "days": 2})
    assert runs == {"forecast": 1}
    assert first == second
    assert first.structured_content == {"city": "Paris", "days": 2}


async def test_argument_order_does_not_matter(cache: atc.ToolCache) -> None:
    server, runs = make_server(cache)
    async with Client(server) as client:
        await client.call_tool("forecast", {"city": "Paris", "days": 2})
        await client.call_tool("forecast", {"days": 2, "city": "Paris"})
        await client.call_tool("forecast", {"days": 3, "city": "Paris"})
    assert runs == {"forecast": 2}


async def test_idempotent_tools_are_writes_not_cached(cache: atc.ToolCache) -> None:
    # Idempotent is not read-only: a tool that sets state must not be served from the cache.
    server, runs = make_server(cache)
    async with Client(server) as client:
        for _ in range(3):
            assert (await client.call_tool("set_units", {"units": "metric"})).data == "metric"
    assert runs == {"set_units": 3}


async def test_a_tool_without_read_only_or_idempotent_hints_is_not_cached(
    cache: atc.ToolCache,
) -> None:
    server, runs = make_server(cache)
    async with Client(server) as client:
        await client.call_tool("book", {"city": "Paris"})
        await client.call_tool("book", {"city": "Paris"})
    assert runs == {"book": 2}


async def test_allow_and_deny_lists(cache: atc.ToolCache) -> None:
    server, runs = make_server(cache, allow_tools=["book"], deny_tools=["forecast"])
    async with Client(server) as client:
        for _ in range(2):
            await client.call_tool("book", {"city": "Paris"})
            await client.call_tool("forecast", {"city": "Paris"})
    assert runs == {"book": 1, "forecast": 2}


async def test_errors_are_never_cached(cache: atc.ToolCache) -> None:
    server, runs = make_server(cache)
    async with Client(server) as client:
        for _ in range(2):
            raised = await client.call_tool_mcp("flaky", {"city": "Paris"})
            assert raised.is_error
            returned = await client.call_tool_mcp("soft_error", {"city": "Paris"})
            assert returned.is_error
    assert runs == {"flaky": 2, "soft_error": 2}
    assert cache.stats().layers["results"].skipped_writes >= 2


async def test_switching_tool_caching_off(cache: atc.ToolCache) -> None:
    server, runs = make_server(cache, call_tool=False)
    async with Client(server) as client:
        await client.call_tool("forecast", {"city": "Paris"})
        await client.call_tool("forecast", {"city": "Paris"})
    assert runs == {"forecast": 2}


async def test_auth_partitions_are_isolated(cache: atc.ToolCache) -> None:
    server = FastMCP("who")
    server.add_middleware(ToolCacheMiddleware(cache))
    runs: list[str] = []

    @server.tool(annotations=READ_ONLY)
    def whoami() -> str:
        from fastmcp.server.dependencies import get_access_token

        token = get_access_token()
        runs.append(token.token if token else "anonymous")
        return runs[-1]

    answers = []
    for token in ["alice-token", "bob-token", "alice-token", "bob-token"]:
        with signed_in(token):
            async with Client(server) as client:
                answers.append((await client.call_tool("whoami", {})).data)
    async with Client(server) as client:
        answers.append((await client.call_tool("whoami", {})).data)
        answers.append((await client.call_tool("whoami", {})).data)
    assert answers == [
        "alice-token",
        "bob-token",
        "alice-token",
        "bob-token",
        "anonymous",
        "anonymous",
    ]
    assert runs == ["alice-token", "bob-token", "anonymous"]


async def test_custom_partition_function(cache: atc.ToolCache) -> None:
    tenant = {"current": "a"}
    server, runs = make_server(cache, partition=lambda context: tenant["current"])
    async with Client(server) as client:
        for current in ["a", "b", "a", "b"]:
            tenant["current"] = current
            await client.call_tool("forecast", {"city": "Paris"})
    assert runs == {"forecast": 2}


async def test_results_round_trip_exactly(cache: atc.ToolCache) -> None:
    server = FastMCP("media")
    server.add_middleware(ToolCacheMiddleware(cache))
    runs: list[int] = []

    @server.tool(annotations=READ_ONLY)
    def everything() -> ToolResult:
        runs.append(1)
        return ToolResult(
            content=[
                mcp_types.TextContent(type="text", text="hello", _meta={"k": "v"}),
                mcp_types.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png"),
                mcp_types.AudioContent(type="audio", data="aGVsbG8=", mime_type="audio/wav"),
                mcp_types.ResourceLink(type="resource_link", name="doc", uri="file:///doc.txt"),
                mcp_types.EmbeddedResource(
                    type="resource",
                    resource=mcp_types.BlobResourceContents(
                        uri="file:///blob.bin", blob="AAEC", mime_type="application/octet-stream"
                    ),
                ),
            ],
            structured_content={"n": 1, "f": 1.5, "nested": {"list": [1, None, "x"]}},
            meta={"trace": "abc", "nested": {"k": [1, 2]}},
        )

    async with Client(server) as client:
        first = await client.call_tool_mcp("everything", {})
        second = await client.call_tool_mcp("everything", {})
    assert runs == [1]
    assert first == second
    assert first.meta is not None and first.meta["trace"] == "abc"
    assert len(first.content) == 5


async def test_component_version_and_meta_are_part_of_the_key(cache: atc.ToolCache) -> None:
    server = FastMCP("versions")
    server.add_middleware(ToolCacheMiddleware(cache))
    runs: list[str] = []

    @server.tool(name="convert", version="1.0", annotations=READ_ONLY, meta={"rev": 1})
    def convert_v1(x: int) -> str:
        runs.append("v1")
        return f"v1:{x}"

    @server.tool(name="convert", version="2.0", annotations=READ_ONLY, meta={"rev": 2})
    def convert_v2(x: int) -> str:
        runs.append("v2")
        return f"v2:{x}"

    async with Client(server) as client:
        assert (await client.call_tool("convert", {"x": 1})).data == "v2:1"
        assert (await client.call_tool("convert", {"x": 1}, version="1.0")).data == "v1:1"
        assert (await client.call_tool("convert", {"x": 1}, version="1.0")).data == "v1:1"
        assert (await client.call_tool("convert", {"x": 1})).data == "v2:1"
    assert runs == ["v2", "v1"]


# -- discovery ----------------------------------------------------------------------------


async def test_tool_list_is_cached_and_round_trips(cache: atc.ToolCache) -> None:
    server, _ = make_server(cache)
    counter = RequestCounter()
    server.add_middleware(counter)

    @server.tool(
        title="Fancy",
        annotations=ToolAnnotations(read_only_hint=True, title="fancy"),
        icons=[Icon(src="https://example.com/icon.png", mime_type="image/png", sizes=["48x48"])],
        meta={"team": "weather"},
        tags={"a", "b"},
        output_schema={"type": "object", "properties": {"x": {"type": "integer"}}},
    )
    def fancy() -> dict[str, int]:
        return {"x": 1}

    async with Client(server) as client:
        first = await client.list_tools_mcp()
        second = await client.list_tools_mcp()
    assert counter.count("tools/list") == 1
    assert first == second
    fancy_tool = next(tool for tool in second.tools if tool.name == "fancy")
    assert fancy_tool.icons == [
        Icon(src="https://example.com/icon.png", mime_type="image/png", sizes=["48x48"])
    ]
    assert fancy_tool.meta is not None and fancy_tool.meta["team"] == "weather"


async def test_an_empty_tool_list_is_cached(cache: atc.ToolCache) -> None:
    server = FastMCP("empty")
    server.add_middleware(ToolCacheMiddleware(cache))
    counter = RequestCounter()
    server.add_middleware(counter)
    async with Client(server) as client:
        assert await client.list_tools() == []
        assert await client.list_tools() == []
    assert counter.count("tools/list") == 1


async def test_list_changed_invalidates_discovery(cache: atc.ToolCache) -> None:
    server, _ = make_server(cache)

    @server.tool
    async def add_tool(ctx: Context) -> str:
        server.add_tool(Tool.from_function(lambda: "new", name="brand_new"))
        await ctx.send_notification(mcp_types.ToolListChangedNotification())
        return "added"

    handler = list_changed_handler(cache, "weather")
    async with Client(server, message_handler=handler) as client:
        before = {tool.name for tool in await client.list_tools()}
        await client.call_tool("add_tool", {})
        after = {tool.name for tool in await client.list_tools()}
    assert "brand_new" not in before
    assert after == before | {"brand_new"}


async def test_invalidate_drops_the_server(cache: atc.ToolCache) -> None:
    middleware = ToolCacheMiddleware(cache, server_id="weather")
    server = FastMCP("weather")
    server.add_middleware(middleware)
    counter = RequestCounter()
    server.add_middleware(counter)
    server.add_tool(Tool.from_function(lambda: "x", name="early"))
    async with Client(server) as client:
        for _ in range(2):
            assert [tool.name for tool in await client.list_tools()] == ["early"]
        assert counter.count("tools/list") == 1  # the second was served from the cache
        await middleware.invalidate()
        assert [tool.name for tool in await client.list_tools()] == ["early"]
    assert counter.count("tools/list") == 2


async def test_listing_switches_and_ttls(cache: atc.ToolCache) -> None:
    server, _ = make_server(cache, list_tools=False, list_prompts_ttl=0.05)
    counter = RequestCounter()
    server.add_middleware(counter)

    @server.prompt
    def hello() -> str:
        return "hi"

    async with Client(server) as client:
        await client.list_tools()
        await client.list_tools()
        await client.list_prompts()
        await client.list_prompts()
    assert counter.count("tools/list") == 2
    assert counter.count("prompts/list") == 1


# -- resources and prompts ---------------------------------------------------------------


async def test_resources_and_prompts_are_cached(cache: atc.ToolCache) -> None:
    server = FastMCP("docs")
    server.add_middleware(ToolCacheMiddleware(cache))
    runs: list[str] = []

    @server.resource("data://text", mime_type="text/markdown", icons=[Icon(src="https://e.x/i")])
    def text() -> ResourceResult:
        runs.append("text")
        return ResourceResult(
            contents=[
                ResourceContent("# title", mime_type="text/markdown", meta={"lang": "en"}),
                ResourceContent(b"\x00\x01binary"),
            ],
            meta={"etag": "1"},
        )

    @server.resource("data://item/{item_id}")
    def item(item_id: str) -> str:
        runs.append(f"item:{item_id}")
        return f"item {item_id}"

    @server.prompt
    def review(code: str, language: str = "python") -> list[Message]:
        runs.append("review")
        return [Message(f"Review this {language}: {code}"), Message("ok", role="assistant")]

    async with Client(server) as client:
        reads = [await client.read_resource_mcp("data://text") for _ in range(2)]
        items = [await client.read_resource_mcp("data://item/7") for _ in range(2)]
        prompts = [
            await client.get_prompt_mcp("review", {"code": "x", "language": "go"}),
            await client.get_prompt_mcp("review", {"language": "go", "code": "x"}),
        ]
        listings = [await client.list_resources_mcp() for _ in range(2)]
        templates = [await client.list_resource_templates_mcp() for _ in range(2)]
        prompt_lists = [await client.list_prompts_mcp() for _ in range(2)]
    assert runs == ["text", "item:7", "review"]
    assert reads[0] == reads[1]
    assert reads[0].meta is not None and reads[0].meta["etag"] == "1"
    assert isinstance(reads[0].contents[1], mcp_types.BlobResourceContents)
    assert items[0] == items[1]
    assert prompts[0] == prompts[1]
    assert [message.role for message in prompts[0].messages] == ["user", "assistant"]
    assert listings[0] == listings[1]
    assert listings[0].resources[0].icons == [Icon(src="https://e.x/i")]
    assert templates[0] == templates[1] and templates[0].resource_templates
    assert prompt_lists[0] == prompt_lists[1]


async def test_resource_and_prompt_switches(cache: atc.ToolCache) -> None:
    server = FastMCP("docs")
    server.add_middleware(ToolCacheMiddleware(cache, read_resource=False, get_prompt=False))
    runs: list[str] = []

    @server.resource("data://live")
    def live() -> str:
        runs.append("live")
        return "now"

    @server.prompt
    def fresh() -> str:
        runs.append("fresh")
        return "hi"

    async with Client(server) as client:
        for _ in range(2):
            await client.read_resource("data://live")
            await client.get_prompt("fresh")
    assert runs == ["live", "fresh", "live", "fresh"]


# -- what is never cached ---------------------------------------------------------------------


async def test_input_required_and_task_results_are_not_cached(cache: atc.ToolCache) -> None:
    server, _ = make_server(cache)
    middleware = ToolCacheMiddleware(cache)
    outcomes: list[Any] = [
        InputRequiredToolResult(mcp_types.InputRequiredResult(request_state="ask")),
        mcp_types.CreateTaskResult.model_construct(),
    ]
    calls: list[int] = []

    async def call_next(context: MiddlewareContext[Any]) -> Any:
        calls.append(1)
        return outcomes[(len(calls) - 1) % 2]

    fake_ctx = SimpleNamespace(fastmcp=server, input_responses=None, request_state=None)
    context = MiddlewareContext(
        message=mcp_types.CallToolRequestParams(name="forecast", arguments={"city": "Paris"}),
        fastmcp_context=cast(Any, fake_ctx),
        method="tools/call",
    )
    for _ in range(4):
        result = await middleware.on_call_tool(context, call_next)
        assert result is outcomes[(len(calls) - 1) % 2]
    assert len(calls) == 4


async def test_continuation_legs_bypass_the_cache(cache: atc.ToolCache) -> None:
    server, _ = make_server(cache)
    middleware = ToolCacheMiddleware(cache)
    calls: list[int] = []

    async def call_next(context: MiddlewareContext[Any]) -> ToolResult:
        calls.append(1)
        return ToolResult(content="answered")

    fake_ctx = SimpleNamespace(fastmcp=server, input_responses={"q": {}}, request_state="s")
    context = MiddlewareContext(
        message=mcp_types.CallToolRequestParams(name="forecast", arguments={"city": "Paris"}),
        fastmcp_context=cast(Any, fake_ctx),
        method="tools/call",
    )
    for _ in range(2):
        await middleware.on_call_tool(context, call_next)
    assert len(calls) == 2


# -- proxies ----------------------------------------------------------------------------------


async def test_caching_proxy_in_front_of_another_server(cache: atc.ToolCache) -> None:
    backend, runs = make_server(atc.ToolCache(), name="backend", call_tool=False, list_tools=False)
    backend_counter = RequestCounter()
    backend.add_middleware(backend_counter)
    proxy = create_proxy(backend, name="front")
    proxy.add_middleware(ToolCacheMiddleware(cache, server_id="backend"))
    async with Client(proxy) as client:
        first_listing = await client.list_tools_mcp()
        second_listing = await client.list_tools_mcp()
        first = await client.call_tool_mcp("forecast", {"city": "Oslo"})
        second = await client.call_tool_mcp("forecast", {"city": "Oslo"})
        await client.call_tool("book", {"city": "Oslo"})
        await client.call_tool("book", {"city": "Oslo"})
        for _ in range(2):
            assert (await client.call_tool_mcp("soft_error", {"city": "Oslo"})).is_error
    assert first_listing == second_listing
    assert first == second
    assert runs == {"forecast": 1, "book": 2, "soft_error": 2}
    annotations = {tool.name: tool.annotations for tool in first_listing.tools}
    assert annotations["forecast"] == READ_ONLY


async def test_replicas_share_entries_through_redis(redis_url: str) -> None:
    namespace = f"fastmcp-{uuid.uuid4().hex}"
    async with (
        atc.ToolCache.from_url(redis_url, namespace=namespace) as first,
        atc.ToolCache.from_url(redis_url, namespace=namespace) as second,
    ):
        replica_a, runs_a = make_server(first)
        replica_b, runs_b = make_server(second)
        async with Client(replica_a) as client:
            a = await client.call_tool_mcp("forecast", {"city": "Rome", "days": 1})
            tools_a = await client.list_tools_mcp()
        async with Client(replica_b) as client:
            b = await client.call_tool_mcp("forecast", {"days": 1, "city": "Rome"})
            tools_b = await client.list_tools_mcp()
        assert a == b
        assert tools_a == tools_b
        assert runs_a == {"forecast": 1}
        assert runs_b == {}


# -- packaging -----------------------------------------------------------------------------------


def test_missing_fastmcp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastmcp.server.middleware.middleware", None)
    monkeypatch.delitem(sys.modules, "aiotoolcache.integrations.fastmcp")
    with pytest.raises(ImportError, match=r"pip install 'aiotoolcache\[fastmcp\]'"):
        importlib.import_module("aiotoolcache.integrations.fastmcp")
