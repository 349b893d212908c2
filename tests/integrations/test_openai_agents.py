"""cached_function_tool serves OpenAI Agents SDK tool calls from the cache in real Runner runs."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    FunctionTool,
    RunConfig,
    RunContextWrapper,
    Runner,
    ToolOutputText,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

import aiotoolcache as atc
from aiotoolcache.integrations.openai_agents import cached_function_tool, cached_function_tools
from tests.integrations.helpers import Counter
from tests.servers import RedisServer

set_tracing_disabled(True)


class ScriptedModel(Model):
    """Calls the scripted tools in one turn, then answers with the tool outputs joined."""

    def __init__(self, *calls: tuple[str, dict[str, Any] | str]) -> None:
        self.calls = calls

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = input if isinstance(input, list) else []
        outputs = [
            item.get("output")
            for item in items
            if isinstance(item, dict) and item.get("type") == "function_call_output"
        ]
        if outputs:
            text = " | ".join(o if isinstance(o, str) else json.dumps(o) for o in outputs)
            message = ResponseOutputMessage(
                id="msg",
                content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
                role="assistant",
                status="completed",
                type="message",
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)
        calls = [
            ResponseFunctionToolCall(
                arguments=args if isinstance(args, str) else json.dumps(args),
                call_id=f"call-{i}",
                name=name,
                type="function_call",
                id=f"fc-{i}",
                status="completed",
            )
            for i, (name, args) in enumerate(self.calls)
        ]
        return ModelResponse(output=list(calls), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


@dataclass
class Ctx:
    user: str


def make_tools(counter: Counter) -> dict[str, FunctionTool]:
    @function_tool
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        counter.n += 1
        await asyncio.sleep(0.01)
        return a + b

    @function_tool
    async def clock(zone: str) -> str:
        """The time somewhere."""
        counter.n += 1
        return f"time in {zone}"

    @function_tool
    async def boom(x: int) -> str:
        """Raises; the SDK turns it into an error message for the model."""
        counter.n += 1
        raise RuntimeError("boom")

    @function_tool(failure_error_function=None)
    async def fatal(x: int) -> str:
        """Raises and fails the run."""
        counter.n += 1
        raise RuntimeError("fatal")

    @function_tool
    def shout(text: str) -> ToolOutputText:
        """A sync tool returning a structured output."""
        counter.n += 1
        return ToolOutputText(text=text.upper())

    return {t.name: t for t in (add, clock, boom, fatal, shout)}


async def run(tools: list[Any], *calls: tuple[str, dict[str, Any] | str], user: str = "u") -> str:
    agent = Agent[Ctx](name="a", tools=tools, model=ScriptedModel(*calls))
    result = await Runner.run(
        agent, "go", context=Ctx(user), run_config=RunConfig(tracing_disabled=True)
    )
    return str(result.final_output)


@pytest.fixture
def tools(counter: Counter) -> dict[str, FunctionTool]:
    return make_tools(counter)


async def test_second_identical_call_is_served_from_cache(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    add = cached_function_tool(tools["add"], cache)
    assert add is not tools["add"] and add.name == "add"
    assert add.params_json_schema == tools["add"].params_json_schema
    assert await run([add], ("add", {"a": 2, "b": 3})) == "5"
    assert await run([add], ("add", {"a": 2, "b": 3})) == "5"
    assert counter.n == 1
    # The original tool is untouched and still runs its body.
    assert await run([tools["add"]], ("add", {"a": 2, "b": 3})) == "5"
    assert counter.n == 2


async def test_arguments_in_another_order_hit(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    add = cached_function_tool(tools["add"], cache)
    await run([add], ("add", '{"a": 1, "b": 2}'))
    assert await run([add], ("add", '{"b": 2,  "a": 1}')) == "3"
    assert counter.n == 1


async def test_parallel_identical_calls_run_the_tool_once(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    add = cached_function_tool(tools["add"], cache)
    out = await run([add], ("add", {"a": 4, "b": 4}), ("add", {"b": 4, "a": 4}))
    assert out == "8 | 8"
    assert counter.n == 1


async def test_errors_are_not_cached(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    boom = cached_function_tool(tools["boom"], cache)
    for _ in range(2):
        out = await run([boom], ("boom", {"x": 1}))
        assert "error" in out.lower()
    assert counter.n == 2

    fatal = cached_function_tool(tools["fatal"], cache)
    for _ in range(2):
        with pytest.raises(Exception, match="fatal"):
            await run([fatal], ("fatal", {"x": 1}))
    assert counter.n == 4


async def test_hand_built_tool_with_returned_errors(cache: atc.ToolCache, counter: Counter) -> None:
    async def invoke(ctx: Any, args: str) -> str:
        counter.n += 1
        data = json.loads(args)
        return "ERROR: no such city" if data["city"] == "nowhere" else f"sunny in {data['city']}"

    weather = FunctionTool(
        name="weather",
        description="Weather.",
        params_json_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        on_invoke_tool=invoke,
    )
    # A hand-built invoker always gets the context: ``lambda ctx: None`` says none of it matters.
    cached = cached_function_tool(
        weather,
        cache,
        partition=lambda ctx: None,
        should_cache=lambda out: not str(out).startswith("ERROR"),
    )
    for _ in range(2):
        assert await run([cached], ("weather", {"city": "paris"})) == "sunny in paris"
        assert await run([cached], ("weather", {"city": "nowhere"})) == "ERROR: no such city"
    assert counter.n == 3


async def test_structured_outputs_and_sync_tools(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    shout = cached_function_tool(tools["shout"], cache)
    first = await run([shout], ("shout", {"text": "hi"}))
    second = await run([shout], ("shout", {"text": "hi"}))
    assert counter.n == 1
    assert first == second


async def test_tool_excluded_by_policy_is_not_cached(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    # Excluded tools are wrapped too: they are writes, run uncached.
    wrapped = cached_function_tools(list(tools.values()), cache, deny_tools=["clock"])
    assert wrapped[1] is not tools["clock"] and wrapped[0] is not tools["add"]
    for _ in range(2):
        await run(wrapped, ("clock", {"zone": "UTC"}))
    assert counter.n == 2

    only_add = cached_function_tools([tools["add"], tools["clock"]], cache, allow_tools="add")
    by_predicate = cached_function_tools(
        [tools["clock"]], cache, allow_tools=lambda t: t.name != "clock"
    )
    for _ in range(2):
        await run(by_predicate, ("clock", {"zone": "UTC"}))
    assert counter.n == 4
    for _ in range(2):
        await run(only_add, ("add", {"a": 5, "b": 5}))
    assert counter.n == 5

    with pytest.raises(TypeError, match="FunctionTool"):
        cached_function_tool(object(), cache)  # type: ignore[arg-type]


async def test_partitions_are_isolated(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    add = cached_function_tool(tools["add"], cache, partition=lambda ctx: ctx.context.user)
    await run([add], ("add", {"a": 1, "b": 1}), user="alice")
    await run([add], ("add", {"a": 1, "b": 1}), user="bob")
    assert counter.n == 2
    await run([add], ("add", {"a": 1, "b": 1}), user="alice")
    await run([add], ("add", {"a": 1, "b": 1}), user="bob")
    assert counter.n == 2
    fixed = cached_function_tool(tools["add"], cache, partition="carol")
    await run([fixed], ("add", {"a": 1, "b": 1}))
    assert counter.n == 3


async def test_invalidate_server(
    cache: atc.ToolCache, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    add = cached_function_tool(tools["add"], cache, server_id="weather-svc")
    await run([add], ("add", {"a": 3, "b": 3}))
    await cache.invalidate_server("weather-svc")
    await run([add], ("add", {"a": 3, "b": 3}))
    assert counter.n == 2


async def test_direct_invocation_keeps_context_semantics(
    cache: atc.ToolCache, counter: Counter
) -> None:
    @function_tool
    async def whoami(ctx: RunContextWrapper[Ctx], greeting: str) -> str:
        """Uses the run context."""
        counter.n += 1
        return f"{greeting} {ctx.context.user}"

    cached = cached_function_tool(whoami, cache, partition=lambda ctx: ctx.context.user)
    assert await run([cached], ("whoami", {"greeting": "hi"}), user="ann") == "hi ann"
    assert await run([cached], ("whoami", {"greeting": "hi"}), user="bo") == "hi bo"
    assert await run([cached], ("whoami", {"greeting": "hi"}), user="ann") == "hi ann"
    assert counter.n == 2


async def test_a_tool_taking_the_run_context_is_not_cached_by_default(
    cache: atc.ToolCache, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    @function_tool
    async def my_orders(ctx: RunContextWrapper[Ctx]) -> str:
        """The current user's orders."""
        counter.n += 1
        return f"orders of {ctx.context.user}"

    with caplog.at_level(logging.WARNING, "aiotoolcache.integrations.openai_agents"):
        cached = cached_function_tool(my_orders, cache)
    assert "partition=lambda ctx" in caplog.text and "my_orders" in caplog.text
    seen = [await run([cached], ("my_orders", {}), user=u) for u in ("ann", "bo", "bo")]
    assert seen == ["orders of ann", "orders of bo", "orders of bo"]
    assert counter.n == 3


async def test_a_hand_built_tool_is_not_cached_without_a_partition_function(
    cache: atc.ToolCache, counter: Counter
) -> None:
    async def invoke(ctx: Any, args: str) -> str:
        counter.n += 1
        return f"orders of {ctx.context.user}"

    orders = FunctionTool(
        name="orders",
        description="The current user's orders.",
        params_json_schema={"type": "object", "properties": {}, "additionalProperties": False},
        on_invoke_tool=invoke,
    )
    cached = cached_function_tool(orders, cache, partition="shared")  # a fixed value: not enough
    seen = [await run([cached], ("orders", {}), user=u) for u in ("ann", "bo")]
    assert seen == ["orders of ann", "orders of bo"]
    assert counter.n == 2


async def test_a_cached_output_never_skips_a_needs_approval_gate(
    cache: atc.ToolCache, counter: Counter
) -> None:
    @function_tool(needs_approval=True)
    async def read_record(rid: int) -> str:
        """A record; a human approves each read."""
        counter.n += 1
        return f"record {rid}"

    cached = cached_function_tool(read_record, cache)
    agent = Agent[Ctx](name="a", tools=[cached], model=ScriptedModel(("read_record", {"rid": 7})))
    config = RunConfig(tracing_disabled=True)
    for _ in range(2):
        asked = await Runner.run(agent, "go", context=Ctx("u"), run_config=config)
        assert len(asked.interruptions) == 1  # asked on every run, the cache comes after
        state = asked.to_state()
        state.approve(asked.interruptions[0])
        approved = await Runner.run(agent, state, run_config=config)
        assert approved.final_output == "record 7"
    assert counter.n == 1  # the second approved call was a hit


async def test_results_shared_between_workers_through_redis(
    own_redis: RedisServer, counter: Counter, tools: dict[str, FunctionTool]
) -> None:
    async with (
        atc.ToolCache.from_url(own_redis.url, namespace="oa") as one,
        atc.ToolCache.from_url(own_redis.url, namespace="oa") as two,
    ):
        await run([cached_function_tool(tools["add"], one)], ("add", {"a": 9, "b": 1}))
        out = await run([cached_function_tool(tools["add"], two)], ("add", {"b": 1, "a": 9}))
        assert out == "10" and counter.n == 1
        other = cached_function_tool(tools["add"], two, partition="t2")
        await run([other], ("add", {"a": 9, "b": 1}))
        assert counter.n == 2
