"""ToolCacheCapability and CachedEmbeddingModel inside real Pydantic AI agents and embedders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic import BaseModel
from pydantic_ai import Agent, Embedder, ModelRetry, RunContext, Tool
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
from pydantic_ai.models.test import TestModel

import aiotoolcache as atc
from aiotoolcache.integrations.pydantic_ai import CachedEmbeddingModel, ToolCacheCapability
from tests.integrations.helpers import Counter
from tests.servers import RedisServer


def scripted(*calls: tuple[str, dict[str, Any]]) -> FunctionModel:
    """A model that makes ``calls`` (all in one turn), then answers with the tool returns."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        returns = [
            p
            for p in (last.parts if isinstance(last, ModelRequest) else [])
            if isinstance(p, ToolReturnPart)
        ]
        if returns:
            return ModelResponse(parts=[TextPart(" | ".join(str(p.content) for p in returns))])
        return ModelResponse(
            parts=[
                ToolCallPart(name, args, tool_call_id=f"call-{i}")
                for i, (name, args) in enumerate(calls)
            ]
        )

    return FunctionModel(respond)


@dataclass
class Deps:
    user: str


class Point(BaseModel):
    x: int
    y: int


def make_agent(counter: Counter, capability: ToolCacheCapability) -> Agent[Deps, str]:
    agent: Agent[Deps, str] = Agent(deps_type=Deps, capabilities=[capability])

    @agent.tool_plain
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        counter.n += 1
        await asyncio.sleep(0.01)
        return a + b

    @agent.tool_plain
    async def clock(zone: str) -> str:
        """The time somewhere."""
        counter.n += 1
        return f"time in {zone}"

    @agent.tool_plain
    async def flaky(x: int) -> str:
        """Always asks the model to retry."""
        counter.n += 1
        raise ModelRetry("try again later")

    @agent.tool_plain
    async def boom(x: int) -> str:
        """Raises."""
        counter.n += 1
        raise RuntimeError("boom")

    @agent.tool_plain
    async def point(x: int, y: int) -> Point:
        """Returns a pydantic model."""
        counter.n += 1
        return Point(x=x, y=y)

    agent.tool_plain(metadata={"cache": False})(_uncached_lookup(counter))
    return agent


def _uncached_lookup(counter: Counter) -> Any:
    async def lookup(q: str) -> str:
        """Marked as never cached through its metadata."""
        counter.n += 1
        return q.upper()

    return lookup


async def run(agent: Agent[Deps, str], *calls: tuple[str, dict[str, Any]], user: str = "u") -> str:
    result = await agent.run("go", model=scripted(*calls), deps=Deps(user))
    return result.output


async def test_second_identical_call_is_served_from_cache(
    cache: atc.ToolCache, counter: Counter
) -> None:
    agent = make_agent(counter, ToolCacheCapability(cache))
    assert await run(agent, ("add", {"a": 2, "b": 3})) == "5"
    assert await run(agent, ("add", {"a": 2, "b": 3})) == "5"
    assert counter.n == 1
    assert cache.stats()["results"].hits >= 1


async def test_arguments_in_another_order_hit(cache: atc.ToolCache, counter: Counter) -> None:
    agent = make_agent(counter, ToolCacheCapability(cache))
    await run(agent, ("add", {"a": 1, "b": 2}))
    assert await run(agent, ("add", {"b": 2, "a": 1})) == "3"
    assert counter.n == 1
    # JSON-string arguments, as most providers send them, hit the same entry.
    assert await run(agent, ("add", '{"b": 2, "a": 1}')) == "3"  # type: ignore[arg-type]
    assert counter.n == 1


async def test_parallel_identical_calls_run_the_tool_once(
    cache: atc.ToolCache, counter: Counter
) -> None:
    agent = make_agent(counter, ToolCacheCapability(cache))
    out = await run(agent, ("add", {"a": 4, "b": 4}), ("add", {"b": 4, "a": 4}))
    assert out == "8 | 8"
    assert counter.n == 1


async def test_errors_are_not_cached(cache: atc.ToolCache, counter: Counter) -> None:
    agent = make_agent(counter, ToolCacheCapability(cache))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            await run(agent, ("boom", {"x": 1}))
    assert counter.n == 2

    counter.n = 0
    # ModelRetry goes back to the model as a retry prompt; the next run runs the tool again.
    agent.model = TestModel(call_tools=["flaky"])
    for _ in range(2):
        with pytest.raises(Exception, match="exceeded max retries"):
            await agent.run("go", deps=Deps("u"))
    assert counter.n >= 4


async def test_tool_excluded_by_policy_is_not_cached(
    cache: atc.ToolCache, counter: Counter
) -> None:
    denied = make_agent(counter, ToolCacheCapability(cache, deny_tools=["clock"]))
    for _ in range(2):
        await run(denied, ("clock", {"zone": "UTC"}))
    assert counter.n == 2

    only_add = make_agent(counter, ToolCacheCapability(cache, allow_tools=["add"], server_id="o"))
    for _ in range(2):
        await run(only_add, ("clock", {"zone": "CET"}))
    assert counter.n == 4

    one_name = ToolCacheCapability(cache, allow_tools="add", deny_tools="clock")
    assert one_name.allow_tools == frozenset({"add"}) and one_name.deny_tools == frozenset(
        {"clock"}
    )

    predicate = ToolCacheCapability(cache, allow_tools=lambda td: td.name != "clock", server_id="p")
    by_predicate = make_agent(counter, predicate)
    for _ in range(2):
        await run(by_predicate, ("clock", {"zone": "EST"}))
    assert counter.n == 6

    default = make_agent(counter, ToolCacheCapability(cache))
    for _ in range(2):
        assert await run(default, ("lookup", {"q": "abc"})) == "ABC"
    assert counter.n == 8  # metadata={"cache": False}


async def test_partitions_are_isolated(cache: atc.ToolCache, counter: Counter) -> None:
    agent = make_agent(counter, ToolCacheCapability(cache, partition=lambda ctx: ctx.deps.user))
    await run(agent, ("add", {"a": 1, "b": 1}), user="alice")
    await run(agent, ("add", {"a": 1, "b": 1}), user="bob")
    assert counter.n == 2
    await run(agent, ("add", {"a": 1, "b": 1}), user="alice")
    await run(agent, ("add", {"a": 1, "b": 1}), user="bob")
    assert counter.n == 2

    fixed = make_agent(counter, ToolCacheCapability(cache, partition="carol"))
    await run(fixed, ("add", {"a": 1, "b": 1}))
    assert counter.n == 3


async def test_model_results_need_jsonable(cache: atc.ToolCache, counter: Counter) -> None:
    plain = make_agent(counter, ToolCacheCapability(cache))
    for _ in range(2):
        await run(plain, ("point", {"x": 1, "y": 2}))
    assert counter.n == 2

    jsonable = make_agent(counter, ToolCacheCapability(cache, jsonable=True, server_id="j"))
    first = await run(jsonable, ("point", {"x": 1, "y": 2}))
    second = await run(jsonable, ("point", {"x": 1, "y": 2}))
    assert counter.n == 3
    assert "1" in first and "2" in second


async def test_cache_result_predicate(cache: atc.ToolCache, counter: Counter) -> None:
    agent = make_agent(counter, ToolCacheCapability(cache, cache_result=lambda r: r != 0))
    for _ in range(2):
        await run(agent, ("add", {"a": 0, "b": 0}))
    assert counter.n == 2


async def test_tools_registered_with_tool_objects_and_context(
    cache: atc.ToolCache, counter: Counter
) -> None:
    async def greet(ctx: RunContext[Deps], name: str) -> str:
        counter.n += 1
        return f"hi {name}"

    # A tool taking a RunContext is cached once the partition says what of it matters.
    capability = ToolCacheCapability(cache, partition=lambda ctx: ctx.deps.user)
    agent: Agent[Deps, str] = Agent(deps_type=Deps, tools=[Tool(greet)], capabilities=[capability])
    for _ in range(2):
        assert await run(agent, ("greet", {"name": "ada"})) == "hi ada"
    assert counter.n == 1


class CountingEmbeddingModel(TestEmbeddingModel):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.texts: list[str] = []

    async def embed(self, inputs: Any, *, input_type: Any, settings: Any = None) -> Any:
        batch = [inputs] if isinstance(inputs, str) else list(inputs)
        self.texts.extend(batch)
        return await super().embed(inputs, input_type=input_type, settings=settings)


async def test_embedding_model_embeds_each_text_once(cache: atc.ToolCache) -> None:
    inner = CountingEmbeddingModel(dimensions=8)
    embedder = Embedder(CachedEmbeddingModel(inner, cache))
    first = await embedder.embed_documents(["alpha", "beta"])
    second = await embedder.embed_documents(["beta", "gamma", "alpha"])
    assert inner.texts == ["alpha", "beta", "gamma"]
    assert second.embeddings[0] == first.embeddings[1]
    assert second.embeddings[2] == first.embeddings[0]
    assert second.inputs == ["beta", "gamma", "alpha"]
    assert len(second.embeddings[1]) == 8
    assert second.usage.input_tokens < first.usage.input_tokens + second.usage.input_tokens

    all_hits = await embedder.embed_documents(["alpha"])
    assert inner.texts == ["alpha", "beta", "gamma"]
    assert all_hits.usage.input_tokens == 0

    # Queries and documents are different inputs to a model: cached apart.
    await embedder.embed_query("alpha")
    assert inner.texts[-1] == "alpha" and len(inner.texts) == 4


async def test_embedding_settings_and_partitions_key_the_vectors(cache: atc.ToolCache) -> None:
    inner = CountingEmbeddingModel(dimensions=8)
    model = CachedEmbeddingModel(inner, cache)
    await model.embed(["x"], input_type="document")
    await model.embed(["x"], input_type="document", settings={"truncate": True})
    await model.embed(["x"], input_type="document", settings={"dimensions": 4})
    assert len(inner.texts) == 3
    await model.embed(["x"], input_type="document", settings={"extra_headers": {"a": "b"}})
    assert len(inner.texts) == 3

    tenant = CachedEmbeddingModel(inner, cache, partition="t1")
    await tenant.embed("x", input_type="document")
    assert len(inner.texts) == 4
    assert tenant.model_name == inner.model_name and tenant.system == inner.system


async def test_tool_results_and_vectors_shared_through_redis(
    own_redis: RedisServer, counter: Counter
) -> None:
    async with (
        atc.ToolCache.from_url(own_redis.url, namespace="pai") as one,
        atc.ToolCache.from_url(own_redis.url, namespace="pai") as two,
    ):
        await run(make_agent(counter, ToolCacheCapability(one)), ("add", {"a": 9, "b": 1}))
        out = await run(make_agent(counter, ToolCacheCapability(two)), ("add", {"b": 1, "a": 9}))
        assert out == "10" and counter.n == 1
        isolated = ToolCacheCapability(two, partition="other")
        await run(make_agent(counter, isolated), ("add", {"a": 9, "b": 1}))
        assert counter.n == 2

        inner = CountingEmbeddingModel(dimensions=8)
        await CachedEmbeddingModel(inner, one).embed(["v"], input_type="query")
        await CachedEmbeddingModel(inner, two).embed(["v"], input_type="query")
        assert inner.texts == ["v"]
