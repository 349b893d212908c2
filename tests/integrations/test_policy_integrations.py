"""Tool policies in the integrations: denies annotations cannot loosen, client directives."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastmcp")

from fastmcp import Client, FastMCP
from mcp_types import ToolAnnotations

import aiotoolcache as atc
from aiotoolcache.control import META_KEY
from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware
from aiotoolcache.integrations.mcp import ToolCallCache


def make_server(cache: atc.ToolCache | None, runs: dict[str, int], **options: Any) -> FastMCP:
    server = FastMCP("weather")
    if cache is not None:
        server.add_middleware(ToolCacheMiddleware(cache, server_id="weather", **options))

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def forecast(city: str) -> str:
        runs["forecast"] = runs.get("forecast", 0) + 1
        return f"{city} #{runs['forecast']}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def secret(city: str) -> str:
        runs["secret"] = runs.get("secret", 0) + 1
        return city

    return server


def policed(redis_url: str, **policies: atc.ToolPolicy) -> atc.ToolCache:
    return atc.ToolCache.from_url(
        redis_url,
        namespace="pi",
        tool_policies={f"weather/{tool}": policy for tool, policy in policies.items()},
    )


async def test_fastmcp_annotations_cannot_loosen_a_deny(redis_url: str) -> None:
    runs: dict[str, int] = {}
    async with policed(redis_url, secret=atc.ToolPolicy(cache=False, invalidates=[])) as cache:
        server = make_server(cache, runs)
        async with Client(server) as client:
            for _ in range(2):
                await client.call_tool("secret", {"city": "Oslo"})
                await client.call_tool("forecast", {"city": "Oslo"})
        assert runs == {"secret": 2, "forecast": 1}
    # The same with the middleware's deny list, which read-only annotations do not override.
    runs.clear()
    async with atc.ToolCache.from_url(redis_url, namespace="pi2") as cache:
        server = make_server(cache, runs, deny_tools=["forecast"])
        async with Client(server) as client:
            for _ in range(2):
                await client.call_tool("forecast", {"city": "Oslo"})
    assert runs == {"forecast": 2}


async def test_mcp_client_annotations_cannot_loosen_a_deny_or_be_trusted_blindly(
    redis_url: str,
) -> None:
    runs: dict[str, int] = {}
    server = make_server(None, runs)
    async with policed(redis_url, forecast=atc.ToolPolicy(cache=False)) as cache:
        calls = ToolCallCache(cache, server_id="weather")
        async with Client(server) as client:
            for _ in range(2):
                await calls.call_tool(client, "forecast", {"city": "Oslo"})
                await calls.call_tool(client, "secret", {"city": "Oslo"})
        assert runs == {"forecast": 2, "secret": 1}

        runs.clear()
        untrusting = ToolCallCache(
            cache, server_id="weather-3p", trust_annotations=False, allow_tools=["secret"]
        )
        async with Client(server) as client:
            for _ in range(2):
                await untrusting.call_tool(client, "secret", {"city": "Bergen"})
            for _ in range(2):
                await untrusting.call_tool(client, "forecast", {"city": "Bergen"})
            # A read-only claim from an untrusted server caches nothing; the allow list does.
            assert runs == {"forecast": 2, "secret": 1}
            # Not proven read-only, forecast is a write: it dropped the cached secret.
            await untrusting.call_tool(client, "secret", {"city": "Bergen"})
        assert runs == {"forecast": 2, "secret": 2}


async def test_fastmcp_client_directives_only_where_the_policy_allows(redis_url: str) -> None:
    runs: dict[str, int] = {}
    refresh = {META_KEY: "refresh"}
    async with policed(redis_url, forecast=atc.ToolPolicy(client_directives=True)) as cache:
        server = make_server(cache, runs)
        async with Client(server) as client:
            first = await client.call_tool("forecast", {"city": "Oslo"})
            again = await client.call_tool("forecast", {"city": "Oslo"}, meta=refresh)
            after = await client.call_tool("forecast", {"city": "Oslo"})
            assert (first.data, again.data, after.data) == ("Oslo #1", "Oslo #2", "Oslo #2")

            await client.call_tool("secret", {"city": "Oslo"})
            await client.call_tool("secret", {"city": "Oslo"}, meta=refresh)  # ignored
            assert runs == {"forecast": 2, "secret": 1}

            only = {META_KEY: "only-if-cached"}
            result = await client.call_tool(
                "forecast", {"city": "Paris"}, meta=only, raise_on_error=False
            )
            assert result.is_error and runs["forecast"] == 2
