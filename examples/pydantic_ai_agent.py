"""A Pydantic AI agent whose tool results and embeddings are cached by aiotoolcache.

Needs the pydantic-ai extra: pip install "aiotoolcache[pydantic-ai]"

Runs offline: ``FunctionModel`` stands in for the LLM and ``TestEmbeddingModel``
for the embedding model.

    python examples/pydantic_ai_agent.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

try:
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
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"{missing}: this example needs the pydantic-ai extra: "
        'pip install "aiotoolcache[pydantic-ai]"',
        name=missing.name,
    ) from missing

import aiotoolcache as atc
from aiotoolcache.integrations.pydantic_ai import CachedEmbeddingModel, ToolCacheCapability

stock_lookups = 0


@dataclass
class Deps:
    tenant: str


def fake_llm(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Calls the tool once, then answers with what it returned."""
    last = messages[-1]
    if isinstance(last, ModelRequest):
        for part in last.parts:
            if isinstance(part, ToolReturnPart):
                return ModelResponse(parts=[TextPart(f"In stock: {part.content}")])
    return ModelResponse(parts=[ToolCallPart("stock_level", {"sku": "A-1", "warehouse": "east"})])


async def main() -> None:
    async with (
        atc.ToolCache() as cache
    ):  # embedded default; ToolCache.from_url("redis://…") to share
        agent = Agent(
            FunctionModel(fake_llm),
            deps_type=Deps,
            capabilities=[
                ToolCacheCapability(cache, ttl=60, partition=lambda ctx: ctx.deps.tenant)
            ],
        )

        @agent.tool_plain
        async def stock_level(sku: str, warehouse: str) -> int:
            """Units of a SKU in a warehouse."""
            global stock_lookups
            stock_lookups += 1
            await asyncio.sleep(0.2)  # a slow inventory service
            return 42

        for tenant in ("acme", "acme", "globex"):
            result = await agent.run("How many A-1 in east?", deps=Deps(tenant))
            print(f"{tenant}: {result.output}")
        print(
            f"Three questions (acme twice, globex once) ran the inventory tool {stock_lookups} "
            "times: results are cached per tenant, so acme's second answer was a hit and "
            "globex never sees acme's entry."
        )

        inner = TestEmbeddingModel(dimensions=8)
        embedder = Embedder(CachedEmbeddingModel(inner, cache))
        await embedder.embed_documents(["red", "green"])
        second = await embedder.embed_documents(["green", "red", "blue"])
        print(
            f"Embedding red, green, then green, red, blue paid {second.usage.input_tokens} "
            "token(s) on the second call: only the new text, blue, was sent to the model."
        )


if __name__ == "__main__":
    asyncio.run(main())
