"""Writes invalidate reads across real worker processes, through every integration."""

from __future__ import annotations

import pytest
import redis

from tests.integrations.file_agents import INTEGRATIONS, POLICIES, agent
from tests.workers import Worker, run_workers

for module in ("fastmcp", "mcp.client.caching", "langchain", "pydantic_ai", "agents"):
    pytest.importorskip(module)


async def ask(worker: Worker, *command: object) -> dict[str, object]:
    worker.send(command)
    reply: dict[str, object] = await worker.recv()
    return reply


async def test_a_write_makes_the_next_read_in_another_worker_run_the_tool(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        for integration in INTEGRATIONS:
            client.set(f"files:{integration}.txt", "v1")
    async with run_workers(
        2, redis_url, agent, list(INTEGRATIONS), namespace="agents", tool_policies=POLICIES
    ) as (reader, writer):
        for worker in (reader, writer):
            assert await worker.recv(within=300) == "set up"
        for integration in INTEGRATIONS:
            path = f"{integration}.txt"
            assert await ask(reader, "read", integration, path) == {"content": "v1", "ran": True}
            # The other worker is served the same entry through Redis: the tool does not run.
            assert await ask(writer, "read", integration, path) == {"content": "v1", "ran": False}

            generations = await ask(writer, "write", integration, path, "v2")
            assert all(isinstance(g, int) and g > 0 for g in generations.values()), integration
            reader.send(("sync", generations))
            assert await reader.recv() == "synced"

            after = await ask(reader, "read", integration, path)
            assert after == {"content": "v2", "ran": True}, integration
            # The writer's own stale copy is gone too; it reads the reader's fresh fill.
            assert await ask(writer, "read", integration, path) == {"content": "v2", "ran": False}
        for worker in (reader, writer):
            worker.send(("stop",))
            await worker.result()
