"""ToolCacheMiddleware caches LangChain tool calls inside a real create_agent loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, ToolException, tool

import aiotoolcache as atc
from aiotoolcache.integrations.langchain import ToolCacheMiddleware
from tests.integrations.helpers import Counter
from tests.servers import RedisServer


class ScriptedChatModel(GenericFakeChatModel):
    """A fake chat model that replays scripted AI messages and accepts tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def calls(*tool_calls: tuple[str, dict[str, Any], str]) -> list[AIMessage]:
    """One AI turn making ``tool_calls`` (name, args, id), then a final answer."""
    return [
        AIMessage(
            content="",
            tool_calls=[
                {"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in tool_calls
            ],
        ),
        AIMessage(content="done"),
    ]


async def run(
    tools: Sequence[BaseTool],
    middleware: ToolCacheMiddleware,
    script: list[AIMessage],
    context: Any = None,
) -> list[ToolMessage]:
    """Run one agent turn and return the ToolMessages it produced."""
    agent = create_agent(
        ScriptedChatModel(messages=iter(script)), list(tools), middleware=[middleware]
    )
    state = await agent.ainvoke(
        {"messages": [HumanMessage("go")]}, **({"context": context} if context else {})
    )
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def make_tools(counter: Counter) -> dict[str, BaseTool]:
    @tool
    async def add(a: int, b: int) -> str:
        """Add two numbers."""
        counter.n += 1
        await asyncio.sleep(0.01)
        return str(a + b)

    @tool
    async def now(zone: str) -> str:
        """The time somewhere."""
        counter.n += 1
        return f"time in {zone}"

    @tool
    async def flaky(x: int) -> str:
        """Fails with a tool error."""
        counter.n += 1
        raise ToolException("upstream is down")

    flaky.handle_tool_error = True  # the tool answers with an error ToolMessage

    @tool
    async def boom(x: int) -> str:
        """Raises."""
        counter.n += 1
        raise RuntimeError("boom")

    return {t.name: t for t in (add, now, flaky, boom)}


@pytest.fixture
def tools(counter: Counter) -> dict[str, BaseTool]:
    return make_tools(counter)


async def test_second_identical_call_is_served_from_cache_with_current_call_id(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    mw = ToolCacheMiddleware(cache)
    first = await run([tools["add"]], mw, calls(("add", {"a": 2, "b": 3}, "call-1")))
    second = await run([tools["add"]], mw, calls(("add", {"a": 2, "b": 3}, "call-2")))
    assert counter.n == 1
    assert [m.content for m in first] == ["5"] and [m.content for m in second] == ["5"]
    assert first[0].tool_call_id == "call-1"
    assert second[0].tool_call_id == "call-2"
    assert second[0].name == "add" and second[0].status == "success"
    # The hit is a new message, not the stored one: its id is the agent's, not call-1's.
    assert second[0].id != first[0].id
    assert cache.stats()["results"].hits >= 1


async def test_arguments_in_another_order_hit(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    mw = ToolCacheMiddleware(cache)
    await run([tools["add"]], mw, calls(("add", {"a": 1, "b": 2}, "c1")))
    out = await run([tools["add"]], mw, calls(("add", {"b": 2, "a": 1}, "c2")))
    assert counter.n == 1
    assert out[0].content == "3" and out[0].tool_call_id == "c2"
    await run([tools["add"]], mw, calls(("add", {"a": 2, "b": 1}, "c3")))
    assert counter.n == 2  # different values: a different key


async def test_parallel_identical_calls_run_once_each_with_its_own_id(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    mw = ToolCacheMiddleware(cache)
    out = await run(
        [tools["add"]],
        mw,
        calls(("add", {"a": 4, "b": 4}, "p1"), ("add", {"b": 4, "a": 4}, "p2")),
    )
    assert counter.n == 1
    assert sorted((m.tool_call_id, m.content) for m in out) == [("p1", "8"), ("p2", "8")]


async def test_error_tool_messages_are_not_cached(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    mw = ToolCacheMiddleware(cache)
    for i in range(2):
        out = await run([tools["flaky"]], mw, calls(("flaky", {"x": 1}, f"f{i}")))
        assert out[0].status == "error" and out[0].tool_call_id == f"f{i}"
    assert counter.n == 2


async def test_exceptions_are_not_cached(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    mw = ToolCacheMiddleware(cache)
    for i in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            await run([tools["boom"]], mw, calls(("boom", {"x": 1}, f"b{i}")))
    assert counter.n == 2


async def test_tool_excluded_by_policy_is_not_cached(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    denied = ToolCacheMiddleware(cache, deny_tools=["now"])
    for i in range(2):
        await run([tools["now"]], denied, calls(("now", {"zone": "UTC"}, f"n{i}")))
    assert counter.n == 2

    allow_only_add = ToolCacheMiddleware(cache, allow_tools=["add"], server_id="other")
    for i in range(2):
        await run([tools["now"]], allow_only_add, calls(("now", {"zone": "CET"}, f"m{i}")))
    assert counter.n == 4

    one_name = ToolCacheMiddleware(cache, allow_tools="add", deny_tools="now")
    assert one_name.is_cached("add") and not one_name.is_cached("a")

    by_predicate = ToolCacheMiddleware(cache, allow_tools=lambda name: name != "now", server_id="p")
    assert by_predicate.is_cached("add") and not by_predicate.is_cached("now")
    for i in range(2):
        await run([tools["now"]], by_predicate, calls(("now", {"zone": "EST"}, f"q{i}")))
    assert counter.n == 6


async def test_partitions_are_isolated(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    alice = ToolCacheMiddleware(cache, partition="alice")
    bob = ToolCacheMiddleware(cache, partition="bob")
    await run([tools["add"]], alice, calls(("add", {"a": 1, "b": 1}, "a1")))
    await run([tools["add"]], bob, calls(("add", {"a": 1, "b": 1}, "b1")))
    assert counter.n == 2
    await run([tools["add"]], alice, calls(("add", {"a": 1, "b": 1}, "a2")))
    await run([tools["add"]], bob, calls(("add", {"a": 1, "b": 1}, "b2")))
    assert counter.n == 2


async def test_partition_read_from_the_runtime_context(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    def per_user(request: Any) -> str | None:
        return str(request.runtime.context["user"])

    mw = ToolCacheMiddleware(cache, partition=per_user)
    for user, expected in (("u1", 1), ("u2", 2), ("u1", 2), ("u2", 2)):
        script = calls(("add", {"a": 5, "b": 5}, f"id-{user}"))
        out = await run([tools["add"]], mw, script, context={"user": user})
        assert out[0].content == "10"
        assert counter.n == expected


async def test_invalidate_server_drops_cached_results(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    mw = ToolCacheMiddleware(cache, server_id="lc")
    await run([tools["add"]], mw, calls(("add", {"a": 7, "b": 7}, "i1")))
    await cache.invalidate_server("lc")
    await run([tools["add"]], mw, calls(("add", {"a": 7, "b": 7}, "i2")))
    assert counter.n == 2


async def test_cache_result_predicate_and_unplain_artifacts(
    cache: atc.ToolCache, counter: Counter
) -> None:
    @tool(response_format="content_and_artifact")
    async def with_artifact(q: str) -> tuple[str, Any]:
        """Returns an artifact that is not plain data."""
        counter.n += 1
        return "found", object()

    mw = ToolCacheMiddleware(cache)
    for i in range(2):
        await run([with_artifact], mw, calls(("with_artifact", {"q": "x"}, f"w{i}")))
    assert counter.n == 2

    @tool
    async def empty(q: str) -> str:
        """Returns nothing useful."""
        counter.n += 1
        return ""

    picky = ToolCacheMiddleware(cache, cache_result=lambda m: bool(m.content))
    for i in range(2):
        await run([empty], picky, calls(("empty", {"q": "x"}, f"e{i}")))
    assert counter.n == 4


@pytest.mark.parametrize(
    "planted",
    [{"v": 1, "message": "not a message"}, {"v": 1}, {"v": 99, "message": {}}],
    ids=["bad-message", "no-message", "other-format"],
)
async def test_an_unreadable_stored_result_is_a_counted_miss(
    cache: atc.ToolCache, counter: Counter, planted: dict[str, Any]
) -> None:
    async def junk() -> dict[str, Any]:
        return planted

    await cache.call_tool("langchain", "add", {"a": 1, "b": 2}, junk)
    tools = make_tools(counter)
    messages = await run(
        [tools["add"]], ToolCacheMiddleware(cache), calls(("add", {"a": 1, "b": 2}, "c1"))
    )
    assert [m.content for m in messages] == ["3"]
    assert counter.n == 1
    assert cache.stats()["results"].corrupt == 1


async def test_sync_path_raises_a_clear_error_or_bypasses(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    @tool
    def mul(a: int, b: int) -> str:
        """Multiply."""
        counter.n += 1
        return str(a * b)

    def invoke(mw: ToolCacheMiddleware, call_id: str) -> Any:
        agent = create_agent(
            ScriptedChatModel(messages=iter(calls(("mul", {"a": 2, "b": 2}, call_id)))),
            [mul],
            middleware=[mw],
        )
        return agent.invoke({"messages": [HumanMessage("go")]})

    with pytest.raises(NotImplementedError, match="ainvoke"):
        await asyncio.to_thread(invoke, ToolCacheMiddleware(cache), "s1")
    assert counter.n == 0
    state = await asyncio.to_thread(invoke, ToolCacheMiddleware(cache, sync="bypass"), "s2")
    assert [m.content for m in state["messages"] if isinstance(m, ToolMessage)] == ["4"]
    # A denied tool is a write, and invalidating needs the async path too...
    with pytest.raises(NotImplementedError, match="invalidates"):
        await asyncio.to_thread(invoke, ToolCacheMiddleware(cache, deny_tools=["mul"]), "s3")
    assert counter.n == 1
    # ...unless its policy invalidates nothing.
    policies = {"langchain/mul": atc.ToolPolicy(cache=False, invalidates=[])}
    async with atc.ToolCache(tool_policies=policies) as quiet:
        await asyncio.to_thread(invoke, ToolCacheMiddleware(quiet), "s4")
    assert counter.n == 2


def test_bad_sync_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="sync"):
        ToolCacheMiddleware(atc.ToolCache(), sync="maybe")  # type: ignore[arg-type]


async def test_results_shared_between_workers_through_redis(
    own_redis: RedisServer, counter: Counter, tools: dict[str, BaseTool]
) -> None:
    def make() -> atc.ToolCache:
        return atc.ToolCache.from_url(own_redis.url, namespace="lc-test")

    async with make() as one, make() as two:
        await run([tools["add"]], ToolCacheMiddleware(one), calls(("add", {"a": 9, "b": 1}, "r1")))
        out = await run(
            [tools["add"]], ToolCacheMiddleware(two), calls(("add", {"b": 1, "a": 9}, "r2"))
        )
        assert counter.n == 1
        assert out[0].content == "10" and out[0].tool_call_id == "r2"
        # Partitions stay apart on Redis too.
        await run(
            [tools["add"]],
            ToolCacheMiddleware(two, partition="t2"),
            calls(("add", {"a": 9, "b": 1}, "r3")),
        )
        assert counter.n == 2
