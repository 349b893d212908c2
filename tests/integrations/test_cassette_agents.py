"""An agent run through each integration, recorded to a cassette and replayed offline.

Each scenario runs a real framework in process. The replay runs the same
scenario with every tool body and embedder raising if called: the results
must be identical and no loader may run.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import aiotoolcache as atc


class World:
    """The outside world of a run: live, it answers (and counts); offline, it raises."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.runs = 0

    def reach(self) -> int:
        if not self.live:
            raise AssertionError("a tool ran during a replay")
        self.runs += 1
        return self.runs


Scenario = Callable[[atc.ToolCache, World], Awaitable[Any]]


async def record_then_replay(tmp_path: Path, scenario: Scenario) -> tuple[Any, int]:
    """Record ``scenario``, replay it offline, check the results match; return them."""
    path = tmp_path / "agent.jsonl"
    live = World(live=True)
    async with atc.ToolCache(cassette=path, mode="record") as cache:
        recorded = await scenario(cache, live)
        assert cache.cassette is not None
        calls = cache.cassette.recorded
    assert live.runs > 0 and calls > 0
    offline = World(live=False)
    async with atc.ToolCache(cassette=path, mode="replay") as cache:
        replayed = await scenario(cache, offline)
        assert cache.cassette is not None
        assert cache.cassette.misses == []
        assert cache.cassette.replayed == calls
        assert sum(s.loads for s in cache.stats().layers.values()) == 0
    assert offline.runs == 0
    assert replayed == recorded
    return replayed, calls


# -- FastMCP middleware ----------------------------------------------------------------------


async def test_fastmcp_middleware_run_replays(tmp_path: Path) -> None:
    pytest.importorskip("fastmcp")
    from fastmcp import Client, FastMCP
    from mcp_types import ToolAnnotations

    from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware

    async def scenario(cache: atc.ToolCache, world: World) -> Any:
        server = FastMCP("weather")
        server.add_middleware(ToolCacheMiddleware(cache))

        @server.tool(annotations=ToolAnnotations(read_only_hint=True))
        def forecast(city: str, days: int = 1) -> dict[str, Any]:
            return {"city": city, "days": days, "reading": world.reach()}

        async with Client(server) as client:
            names = [tool.name for tool in await client.list_tools()]
            results = [
                await client.call_tool_mcp("forecast", args)
                for args in ({"city": "Paris", "days": 2}, {"city": "Oslo"},
                             {"days": 2, "city": "Paris"})
            ]  # fmt: skip
        return names, [(r.structured_content, r.content, r.is_error) for r in results]

    (names, results), _ = await record_then_replay(tmp_path, scenario)
    assert names == ["forecast"]
    # The repeated call replays what the live run saw the second time, not the first.
    assert [r[0]["reading"] for r in results] == [1, 2, 3]


# -- MCP client adapter ----------------------------------------------------------------------


async def test_mcp_client_adapter_run_replays(tmp_path: Path) -> None:
    pytest.importorskip("mcp.client.caching")
    pytest.importorskip("fastmcp")
    from fastmcp import Client, FastMCP
    from mcp_types import ToolAnnotations

    from aiotoolcache.integrations.mcp import ToolCallCache

    async def scenario(cache: atc.ToolCache, world: World) -> Any:
        server = FastMCP("weather")

        @server.tool(annotations=ToolAnnotations(read_only_hint=True))
        def forecast(city: str) -> dict[str, Any]:
            return {"city": city, "reading": world.reach()}

        calls = ToolCallCache(cache, server_id="weather")
        async with Client(server) as client:
            tools = [tool.name for tool in await calls.list_tools(client)]
            results = [
                await calls.call_tool(client, "forecast", {"city": city})
                for city in ("Paris", "Oslo", "Paris")
            ]
        return tools, [r.model_dump() for r in results]

    (tools, results), _ = await record_then_replay(tmp_path, scenario)
    assert tools == ["forecast"]
    assert [r["structured_content"]["city"] for r in results] == ["Paris", "Oslo", "Paris"]


# -- LangChain -------------------------------------------------------------------------------


async def test_langchain_agent_run_replays(tmp_path: Path) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool

    from aiotoolcache.integrations.langchain import ToolCacheMiddleware

    class ScriptedChatModel(GenericFakeChatModel):
        def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
            return self

    def turn(*tool_calls: tuple[str, dict[str, Any]]) -> AIMessage:
        return AIMessage(
            content="",
            tool_calls=[
                {"name": name, "args": args, "id": f"call-{i}", "type": "tool_call"}
                for i, (name, args) in enumerate(tool_calls)
            ],
        )

    async def scenario(cache: atc.ToolCache, world: World) -> Any:
        @tool
        async def add(a: int, b: int) -> str:
            """Add two numbers."""
            world.reach()
            return str(a + b)

        @tool
        async def clock(zone: str) -> str:
            """The time somewhere."""
            return f"{zone} reading {world.reach()}"

        script = [
            turn(("add", {"a": 2, "b": 3}), ("clock", {"zone": "UTC"})),
            turn(("clock", {"zone": "UTC"})),
            AIMessage(content="done"),
        ]
        agent = create_agent(
            ScriptedChatModel(messages=iter(script)),
            [add, clock],
            middleware=[ToolCacheMiddleware(cache)],
        )
        state = await agent.ainvoke({"messages": [HumanMessage("go")]})
        messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
        return [(m.name, m.content, m.tool_call_id, m.status) for m in messages]

    messages, _ = await record_then_replay(tmp_path, scenario)
    assert [content for _, content, _, _ in messages] == ["5", "UTC reading 2", "UTC reading 3"]


# -- Pydantic AI -----------------------------------------------------------------------------


async def test_pydantic_ai_agent_and_embedder_run_replays(tmp_path: Path) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent, Embedder
    from pydantic_ai.embeddings.test import TestEmbeddingModel
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from aiotoolcache.integrations.pydantic_ai import CachedEmbeddingModel, ToolCacheCapability

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        parts = last.parts if isinstance(last, ModelRequest) else []
        returns = [p for p in parts if isinstance(p, ToolReturnPart)]
        if returns:
            return ModelResponse(parts=[TextPart(" | ".join(str(p.content) for p in returns))])
        calls = [("add", {"a": 2, "b": 3}), ("clock", {"zone": "UTC"})]
        return ModelResponse(
            parts=[ToolCallPart(n, a, tool_call_id=f"c{i}") for i, (n, a) in enumerate(calls)]
        )

    class WorldEmbeddingModel(TestEmbeddingModel):
        def __init__(self, world: World) -> None:
            super().__init__(dimensions=4)
            self.world = world

        async def embed(self, inputs: Any, *, input_type: Any, settings: Any = None) -> Any:
            self.world.reach()
            return await super().embed(inputs, input_type=input_type, settings=settings)

    async def scenario(cache: atc.ToolCache, world: World) -> Any:
        agent: Agent[None, str] = Agent(capabilities=[ToolCacheCapability(cache)])

        @agent.tool_plain
        async def add(a: int, b: int) -> int:
            """Add two numbers."""
            world.reach()
            return a + b

        @agent.tool_plain
        async def clock(zone: str) -> str:
            """The time somewhere."""
            return f"{zone} reading {world.reach()}"

        outputs = [(await agent.run("go", model=FunctionModel(respond))).output for _ in "ab"]
        embedder = Embedder(CachedEmbeddingModel(WorldEmbeddingModel(world), cache))
        first = await embedder.embed_documents(["alpha", "beta"])
        second = await embedder.embed_documents(["beta", "gamma"])
        return outputs, first.embeddings, second.embeddings

    (outputs, *_), calls = await record_then_replay(tmp_path, scenario)
    assert outputs == ["5 | UTC reading 2", "5 | UTC reading 4"]
    assert calls == 4 + 4  # four tool calls, four embedded texts (beta twice)


# -- OpenAI Agents ---------------------------------------------------------------------------


async def test_openai_agents_run_replays(tmp_path: Path) -> None:
    pytest.importorskip("agents")
    from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    from aiotoolcache.integrations.openai_agents import cached_function_tool

    set_tracing_disabled(True)

    class ScriptedModel(Model):
        async def get_response(
            self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
        ) -> Any:
            items = input if isinstance(input, list) else []
            outputs = [
                str(item.get("output"))
                for item in items
                if isinstance(item, dict) and item.get("type") == "function_call_output"
            ]
            if outputs:
                text = ResponseOutputText(text=" | ".join(outputs), type="output_text",
                                          annotations=[])  # fmt: skip
                message = ResponseOutputMessage(
                    id="m", content=[text], role="assistant", status="completed", type="message"
                )
                return ModelResponse(output=[message], usage=Usage(), response_id=None)
            calls = [("add", {"a": 2, "b": 3}), ("clock", {"zone": "UTC"})]
            output = [
                ResponseFunctionToolCall(arguments=json.dumps(args), call_id=f"c{i}", name=name,
                                         type="function_call", id=f"f{i}", status="completed")
                for i, (name, args) in enumerate(calls)
            ]  # fmt: skip
            return ModelResponse(output=output, usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    async def scenario(cache: atc.ToolCache, world: World) -> Any:
        @function_tool
        async def add(a: int, b: int) -> int:
            """Add two numbers."""
            world.reach()
            return a + b

        @function_tool
        async def clock(zone: str) -> str:
            """The time somewhere."""
            return f"{zone} reading {world.reach()}"

        tools = [cached_function_tool(t, cache) for t in (add, clock)]
        agent = Agent[None](name="a", tools=tools, model=ScriptedModel())
        config = RunConfig(tracing_disabled=True)
        return [str((await Runner.run(agent, "go", run_config=config)).final_output)
                for _ in "ab"]  # fmt: skip

    outputs, _ = await record_then_replay(tmp_path, scenario)
    assert outputs == ["5 | UTC reading 2", "5 | UTC reading 4"]
