"""ToolCacheCapability never shares a context-bound result, nor one a human approved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import (
    Agent,
    ApprovalRequired,
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
)
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

import aiotoolcache as atc
from aiotoolcache.integrations.pydantic_ai import ToolCacheCapability
from tests.integrations.helpers import Counter


@dataclass
class Deps:
    user: str


def calling(name: str, args: dict[str, Any]) -> FunctionModel:
    """A model that calls ``name`` once, then answers with what the tool returned."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        parts = last.parts if isinstance(last, ModelRequest) else []
        for part in parts:
            if isinstance(part, ToolReturnPart):
                return ModelResponse(parts=[TextPart(str(part.content))])
        return ModelResponse(parts=[ToolCallPart(name, args)])

    return FunctionModel(respond)


def orders_agent(counter: Counter, capability: ToolCacheCapability) -> Agent[Deps, str]:
    agent: Agent[Deps, str] = Agent(
        calling("my_orders", {}), deps_type=Deps, capabilities=[capability]
    )

    @agent.tool
    def my_orders(ctx: RunContext[Deps]) -> str:
        """The current user's orders."""
        counter.n += 1
        return f"orders of {ctx.deps.user}"

    return agent


# -- context ------------------------------------------------------------------------------


async def test_a_tool_taking_run_context_is_not_cached_by_default(
    cache: atc.ToolCache, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    agent = orders_agent(counter, ToolCacheCapability(cache))
    with caplog.at_level(logging.WARNING, "aiotoolcache.integrations.pydantic_ai"):
        alice = await agent.run("my orders", deps=Deps("alice"))
        bob = await agent.run("my orders", deps=Deps("bob"))
        again = await agent.run("my orders", deps=Deps("bob"))
    assert (alice.output, bob.output, again.output) == (
        "orders of alice",
        "orders of bob",
        "orders of bob",
    )
    assert counter.n == 3
    notices = [r.getMessage() for r in caplog.records if "my_orders" in r.getMessage()]
    assert len(notices) == 1  # once per tool, naming the option that caches it
    assert "RunContext" in notices[0] and "partition=lambda ctx" in notices[0]


async def test_a_partition_read_from_the_context_caches_the_tool_per_caller(
    cache: atc.ToolCache, counter: Counter
) -> None:
    capability = ToolCacheCapability(cache, partition=lambda ctx: ctx.deps.user)
    agent = orders_agent(counter, capability)
    outputs = [(await agent.run("go", deps=Deps(u))).output for u in ("alice", "bob", "alice")]
    assert outputs == ["orders of alice", "orders of bob", "orders of alice"]
    assert counter.n == 2  # alice's second run was a hit in alice's partition


# -- approvals ----------------------------------------------------------------------------


def approval_agent(counter: Counter, capability: ToolCacheCapability) -> Agent[Deps, Any]:
    agent: Agent[Deps, Any] = Agent(
        calling("read_record", {"rid": 7}),
        deps_type=Deps,
        output_type=[str, DeferredToolRequests],
        capabilities=[capability],
    )

    @agent.tool
    def read_record(ctx: RunContext[Deps], rid: int) -> str:
        """A record; a human approves each read."""
        if not ctx.tool_call_approved:
            raise ApprovalRequired()
        counter.n += 1
        return f"record {rid}"

    @agent.tool_plain(requires_approval=True)
    def delete_record(rid: int) -> str:
        """Always approved by a human first."""
        counter.n += 1
        return f"deleted {rid}"

    return agent


async def approve(agent: Agent[Deps, Any], asked: Any) -> Any:
    assert isinstance(asked.output, DeferredToolRequests)
    approvals = {call.tool_call_id: True for call in asked.output.approvals}
    return await agent.run(
        message_history=asked.all_messages(),
        deferred_tool_results=DeferredToolResults(approvals=approvals),
        deps=Deps("alice"),
    )


async def test_a_result_a_human_approved_is_not_stored_so_the_next_call_asks_again(
    cache: atc.ToolCache, counter: Counter
) -> None:
    # The partition opts the context tool in: only the approval keeps it out.
    agent = approval_agent(counter, ToolCacheCapability(cache, partition=lambda ctx: "one"))
    asked = await agent.run("show record 7", deps=Deps("alice"))
    approved = await approve(agent, asked)
    assert approved.output == "record 7"
    fresh = await agent.run("show record 7 again", deps=Deps("alice"))
    assert isinstance(fresh.output, DeferredToolRequests)  # asked again, not a hit
    assert (await approve(agent, fresh)).output == "record 7"
    assert counter.n == 2


async def test_a_tool_requiring_approval_is_never_served_from_the_cache(
    cache: atc.ToolCache, counter: Counter
) -> None:
    agent = approval_agent(counter, ToolCacheCapability(cache))
    for _ in range(2):
        asked = await agent.run(
            "delete record 7", model=calling("delete_record", {"rid": 7}), deps=Deps("a")
        )
        assert isinstance(asked.output, DeferredToolRequests)
        assert (await approve(agent, asked)).output == "deleted 7"
    assert counter.n == 2
