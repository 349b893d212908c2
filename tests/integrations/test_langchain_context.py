"""ToolCacheMiddleware never shares a context-bound or human-answered result; failed writes drop."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolArg, ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import InjectedState
from langgraph.types import Command, interrupt

import aiotoolcache as atc
from aiotoolcache.integrations._langchain_human import takes_injected_args
from aiotoolcache.integrations.langchain import ToolCacheMiddleware
from tests.integrations.helpers import Counter


@dataclass
class Ctx:
    user: str


class ScriptedChatModel(GenericFakeChatModel):
    """A fake chat model that replays scripted AI messages and accepts tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def calling(name: str, args: dict[str, Any]) -> Iterator[AIMessage]:
    """Turns that call ``name`` with ``args``, then answer, forever (one pair per run)."""
    for i in itertools.count():
        yield AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"c{i}"}])
        yield AIMessage(content="done")


def last_tool_message(state: dict[str, Any]) -> str:
    return str([m for m in state["messages"] if isinstance(m, ToolMessage)][-1].content)


# -- context ------------------------------------------------------------------------------


def orders_tool(counter: Counter) -> BaseTool:
    @tool
    def my_orders(runtime: ToolRuntime[Ctx]) -> str:
        """The current user's orders."""
        counter.n += 1
        return f"orders of {runtime.context.user}"

    return my_orders


async def orders_of(agent: Any, user: str) -> str:
    state = await agent.ainvoke({"messages": [HumanMessage("my orders")]}, context=Ctx(user))
    return last_tool_message(state)


async def test_a_tool_reading_tool_runtime_is_not_cached_by_default(
    cache: atc.ToolCache, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    agent = create_agent(
        ScriptedChatModel(messages=calling("my_orders", {})),
        [orders_tool(counter)],
        context_schema=Ctx,
        middleware=[ToolCacheMiddleware(cache)],
    )
    with caplog.at_level(logging.WARNING, "aiotoolcache.integrations.langchain"):
        seen = [await orders_of(agent, user) for user in ("alice", "bob", "bob")]
    assert seen == ["orders of alice", "orders of bob", "orders of bob"]
    assert counter.n == 3
    notices = [r.getMessage() for r in caplog.records if "my_orders" in r.getMessage()]
    assert len(notices) == 1 and "partition=lambda request" in notices[0]


async def test_a_partition_read_from_the_request_caches_the_tool_per_caller(
    cache: atc.ToolCache, counter: Counter
) -> None:
    middleware = ToolCacheMiddleware(cache, partition=lambda r: r.runtime.context.user)
    agent = create_agent(
        ScriptedChatModel(messages=calling("my_orders", {})),
        [orders_tool(counter)],
        context_schema=Ctx,
        middleware=[middleware],
    )
    seen = [await orders_of(agent, user) for user in ("alice", "bob", "alice")]
    assert seen == ["orders of alice", "orders of bob", "orders of alice"]
    assert counter.n == 2


def test_injected_arguments_of_every_kind_are_found() -> None:
    @tool
    def by_state(q: str, state: Annotated[dict[str, Any], InjectedState]) -> str:
        """Reads the graph state."""
        return q

    @tool
    def by_arg(q: str, user_id: Annotated[str, InjectedToolArg]) -> str:
        """Gets a value the model does not give."""
        return q

    @tool
    def plain(q: str) -> str:
        """Only the model's arguments."""
        return q

    assert takes_injected_args(by_state) and takes_injected_args(by_arg)
    assert takes_injected_args(orders_tool(Counter()))
    assert not takes_injected_args(plain)
    assert takes_injected_args(None)  # an unknown tool is never cached


# -- interrupts ---------------------------------------------------------------------------


async def test_a_result_after_an_answered_interrupt_is_not_stored_so_another_thread_asks(
    cache: atc.ToolCache, counter: Counter
) -> None:
    @tool
    def read_record(rid: int) -> str:
        """A record; a human approves each read."""
        if interrupt({"approve": rid}) != "yes":
            return "denied"
        counter.n += 1
        return f"record {rid}"

    agent = create_agent(
        ScriptedChatModel(messages=calling("read_record", {"rid": 7})),
        [read_record],
        middleware=[ToolCacheMiddleware(cache)],
        checkpointer=InMemorySaver(),
    )
    for thread in ("t1", "t2"):
        config: Any = {"configurable": {"thread_id": thread}}
        asked = await agent.ainvoke({"messages": [HumanMessage("show 7")]}, config)
        assert asked.get("__interrupt__"), f"{thread} was not asked"
        answered = await agent.ainvoke(Command(resume="yes"), config)
        assert last_tool_message(answered) == "record 7"
    assert counter.n == 2
    assert cache.stats().layers["results"].hits == 0


# -- writes -------------------------------------------------------------------------------


async def test_a_write_that_reported_an_error_still_drops_cached_reads(
    cache: atc.ToolCache,
) -> None:
    state = {"v": 1}

    @tool
    def read_value() -> str:
        """The current value."""
        return str(state["v"])

    @tool
    def set_value(v: int) -> str:
        """Stores the value, then fails to notify anyone."""
        state["v"] = v
        raise ToolException("stored, but the notification failed")

    set_value.handle_tool_error = True  # the tool answers with an error ToolMessage

    def agent_calling(name: str, args: dict[str, Any]) -> Any:
        return create_agent(
            ScriptedChatModel(messages=calling(name, args)),
            [read_value, set_value],
            middleware=[ToolCacheMiddleware(cache, deny_tools=["set_value"])],
        )

    async def call(name: str, args: dict[str, Any]) -> Any:
        state_ = await agent_calling(name, args).ainvoke({"messages": [HumanMessage("go")]})
        return [m for m in state_["messages"] if isinstance(m, ToolMessage)][-1]

    assert (await call("read_value", {})).content == "1"
    failed = await call("set_value", {"v": 2})
    assert failed.status == "error"
    assert (await call("read_value", {})).content == "2"
