"""A LangChain agent whose tool calls and embeddings are cached by aiotoolcache.

Needs the langchain extra: pip install "aiotoolcache[langchain]"
(the embeddings part also uses langchain-classic when it is installed).

Runs offline: a scripted chat model stands in for the LLM and a deterministic
fake stands in for the embedding model.

    python examples/langchain_agent.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

try:
    from langchain.agents import create_agent
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f'{missing}: this example needs the langchain extra: pip install "aiotoolcache[langchain]"',
        name=missing.name,
    ) from missing

import aiotoolcache as atc
from aiotoolcache.integrations.langchain import ToolCacheByteStore, ToolCacheMiddleware

weather_lookups = 0


@tool
async def get_weather(city: str, unit: str = "C") -> str:
    """Current weather for a city."""
    global weather_lookups
    weather_lookups += 1
    await asyncio.sleep(0.2)  # a slow upstream API
    return f"18°{unit} and clear in {city}"


class ScriptedModel(GenericFakeChatModel):
    """Stands in for an LLM: replays scripted messages, accepts any tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def script(call_id: str, args: dict[str, Any]) -> ScriptedModel:
    return ScriptedModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[{"name": "get_weather", "args": args, "id": call_id}]),
                AIMessage("Looks like a nice day."),
            ]
        )
    )


async def main() -> None:
    async with (
        atc.ToolCache() as cache
    ):  # embedded default; ToolCache.from_url("redis://…") to share
        middleware = ToolCacheMiddleware(cache, ttl=300, deny_tools=["send_email"])
        for call_id, args in [
            ("call-1", {"city": "Lisbon", "unit": "C"}),
            ("call-2", {"unit": "C", "city": "Lisbon"}),  # same call, other order: a hit
        ]:
            agent = create_agent(script(call_id, args), [get_weather], middleware=[middleware])
            state = await agent.ainvoke({"messages": [HumanMessage("Weather in Lisbon?")]})
            reply = next(m for m in state["messages"] if isinstance(m, ToolMessage))
            print(f"{reply.tool_call_id}: {reply.content}")
        print(
            f"The agent asked for Lisbon's weather twice; the weather API ran {weather_lookups} "
            "time, the second answer came from the cache."
        )

        try:
            from langchain_classic.embeddings import CacheBackedEmbeddings
        except ImportError:
            print("install langchain-classic for the CacheBackedEmbeddings part")
            return
        store = ToolCacheByteStore(cache, namespace="fake-embedding-16")
        embedder = CacheBackedEmbeddings.from_bytes_store(
            DeterministicFakeEmbedding(size=16), store, namespace="fake-16:", key_encoder="blake2b"
        )
        await embedder.aembed_documents(["cached", "vectors"])
        await embedder.aembed_documents(["vectors", "are", "cached"])
        stored = len([k async for k in store.ayield_keys(prefix="fake-16:")])
        print(
            f"Embedding 5 texts, 3 of them distinct, stored {stored} vectors: "
            "repeated texts were read back from the cache, not embedded again."
        )


if __name__ == "__main__":
    asyncio.run(main())
