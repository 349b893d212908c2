"""An OpenAI Agents SDK function tool whose results are cached by aiotoolcache.

Needs the openai-agents extra: pip install "aiotoolcache[openai-agents]"

Runs offline: a scripted ``Model`` stands in for the LLM, and tracing is off.

    python examples/openai_agents_tool.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

try:
    from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"{missing}: this example needs the openai-agents extra: "
        'pip install "aiotoolcache[openai-agents]"',
        name=missing.name,
    ) from missing

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
            print(f"agent answered: {result.final_output}")
        print(
            f"Two runs called search_docs with the same arguments; the search backend ran "
            f"{searches} time, the second result came from the cache."
        )


if __name__ == "__main__":
    asyncio.run(main())
