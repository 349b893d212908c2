"""An OpenAI Agents SDK function tool whose results are cached by aiotoolcache.

Runs offline: a scripted ``Model`` stands in for the LLM, and tracing is off.

    python examples/openai_agents_tool.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

import aiotoolcache as atc
from aiotoolcache.integrations.openai_agents import cached_function_tools

set_tracing_disabled(True)
searches = 0


@function_tool
async def search_docs(query: str, limit: int) -> list[str]:
    """Search the documentation."""
    global searches
    searches += 1
    await asyncio.sleep(0.2)  # a slow search backend
    return [f"{query} result {i}" for i in range(limit)]


@function_tool
async def send_email(to: str, body: str) -> str:
    """Has side effects: never cached."""
    return "sent"


class ScriptedModel(Model):
    """Stands in for an LLM: calls search_docs once, then answers with its output."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        self.arguments = arguments

    async def get_response(self, system_instructions: Any, input: Any, *a: Any, **k: Any) -> Any:
        items = input if isinstance(input, list) else []
        outputs = [i["output"] for i in items if i.get("type") == "function_call_output"]
        if outputs:
            text = ResponseOutputText(text=str(outputs[0]), type="output_text", annotations=[])
            message = ResponseOutputMessage(
                id="m", content=[text], role="assistant", status="completed", type="message"
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)
        call = ResponseFunctionToolCall(
            arguments=json.dumps(self.arguments),
            call_id="c1",
            name="search_docs",
            type="function_call",
            id="f1",
            status="completed",
        )
        return ModelResponse(output=[call], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def main() -> None:
    async with (
        atc.ToolCache() as cache
    ):  # embedded default; ToolCache.from_url("redis://…") to share
        tools = cached_function_tools(
            [search_docs, send_email], cache, ttl=300, deny_tools=["send_email"]
        )
        for arguments in ({"query": "ttl", "limit": 2}, {"limit": 2, "query": "ttl"}):
            agent = Agent(name="docs", tools=tools, model=ScriptedModel(arguments))
            result = await Runner.run(
                agent, "find ttl", run_config=RunConfig(tracing_disabled=True)
            )
            print(result.final_output)
        print(f"search backend calls: {searches}")  # 1


if __name__ == "__main__":
    asyncio.run(main())
