"""A file-editing agent run in real worker processes, through each integration.

Each worker answers commands from the test over its link:
``("read", integration, path)`` runs ``read_file`` and replies
``{"content": ..., "ran": bool}`` (whether the tool body ran in this worker);
``("write", integration, path, content)`` runs ``write_file`` (a write) and
replies the generations it bumped; ``("sync", generations)`` waits until this
worker has seen them (invalidations travel over pub/sub); ``("stop",)`` ends.
The "files" live in Redis, so every worker sees the same truth.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiotoolcache as atc
from aiotoolcache.policy import partition_tag
from tests.workers import Link, eventually

READ_ONLY = {"readOnlyHint": True}

POLICIES = {
    # The frameworks with no read-only marker learn that write_file is a write here.
    "*/write_file": atc.ToolPolicy(cache=False),
}

INTEGRATIONS = ("call_tool", "fastmcp", "mcp", "langchain", "pydantic_ai", "openai_agents")


def server_of(integration: str) -> str:
    return f"{integration}-files"


class Files:
    """The agent's file system, in Redis; ``runs`` counts read_file bodies run here."""

    def __init__(self, cache: atc.ToolCache) -> None:
        assert cache.redis is not None
        self.redis = cache.redis
        self.runs = 0

    async def read(self, path: str) -> str:
        self.runs += 1
        value = await self.redis.get(f"files:{path}")
        return "" if value is None else value.decode()

    async def write(self, path: str, content: str) -> str:
        await self.redis.set(f"files:{path}", content)
        return "ok"


Tool = Callable[[str, dict[str, Any]], Awaitable[str]]


async def via_call_tool(cache: atc.ToolCache, files: Files) -> Tool:
    server = server_of("call_tool")

    async def call(name: str, args: dict[str, Any]) -> str:
        if name == "read_file":
            return await cache.call_tool(server, name, args, lambda: files.read(args["path"]))
        return await cache.call_tool(
            server, name, args, lambda: files.write(args["path"], args["content"]), writes=True
        )

    return call


def fastmcp_server(cache: atc.ToolCache | None, files: Files, name: str) -> Any:
    from fastmcp import FastMCP
    from mcp_types import ToolAnnotations

    from aiotoolcache.integrations.fastmcp import ToolCacheMiddleware

    server = FastMCP(name)
    if cache is not None:
        server.add_middleware(ToolCacheMiddleware(cache, server_id=name))

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def read_file(path: str) -> str:
        return await files.read(path)

    @server.tool
    async def write_file(path: str, content: str) -> str:
        return await files.write(path, content)

    return server


async def via_fastmcp(cache: atc.ToolCache, files: Files) -> Tool:
    from fastmcp import Client

    server = fastmcp_server(cache, files, server_of("fastmcp"))

    async def call(name: str, args: dict[str, Any]) -> str:
        async with Client(server) as client:
            result = await client.call_tool(name, args)
        return str(result.data)

    return call


async def via_mcp(cache: atc.ToolCache, files: Files) -> Tool:
    from fastmcp import Client

    from aiotoolcache.integrations.mcp import ToolCallCache

    server = fastmcp_server(None, files, "plain")
    calls = ToolCallCache(cache, server_id=server_of("mcp"))

    async def call(name: str, args: dict[str, Any]) -> str:
        async with Client(server) as client:
            result = await calls.call_tool(client, name, args)
        block = result.content[0]
        return str(getattr(block, "text", ""))

    return call


async def via_langchain(cache: atc.ToolCache, files: Files) -> Tool:
    from langchain_core.messages import ToolMessage
    from langgraph.prebuilt.tool_node import ToolCallRequest

    from aiotoolcache.integrations.langchain import ToolCacheMiddleware

    # The requests below name no tool object: the partition says nothing in the context matters.
    middleware = ToolCacheMiddleware(
        cache, server_id=server_of("langchain"), partition=lambda request: None
    )

    async def call(name: str, args: dict[str, Any]) -> str:
        request = ToolCallRequest(
            tool_call={"name": name, "args": args, "id": "call-1", "type": "tool_call"},
            tool=None,
            state=None,
            runtime=None,  # type: ignore[arg-type]
        )

        async def handler(_request: ToolCallRequest) -> ToolMessage:
            if name == "read_file":
                content = await files.read(args["path"])
            else:
                content = await files.write(args["path"], args["content"])
            return ToolMessage(content, tool_call_id="call-1")

        message = await middleware.awrap_tool_call(request, handler)
        assert isinstance(message, ToolMessage)
        return str(message.content)

    return call


async def via_pydantic_ai(cache: atc.ToolCache, files: Files) -> Tool:
    from pydantic_ai import RunContext
    from pydantic_ai.messages import ToolCallPart
    from pydantic_ai.models.test import TestModel
    from pydantic_ai.tools import ToolDefinition
    from pydantic_ai.usage import RunUsage

    from aiotoolcache.integrations.pydantic_ai import ToolCacheCapability

    # Outside an agent run no tool manager says which tools take a RunContext:
    # the partition says nothing in the context matters.
    capability = ToolCacheCapability(
        cache, server_id=server_of("pydantic_ai"), partition=lambda ctx: None
    )

    async def call(name: str, args: dict[str, Any]) -> str:
        async def handler(arguments: dict[str, Any]) -> str:
            if name == "read_file":
                return await files.read(arguments["path"])
            return await files.write(arguments["path"], arguments["content"])

        result = await capability.wrap_tool_execute(
            RunContext(deps=None, model=TestModel(), usage=RunUsage()),
            call=ToolCallPart(tool_name=name, args=args),
            tool_def=ToolDefinition(name=name),
            args=args,
            handler=handler,
        )
        return str(result)

    return call


async def via_openai_agents(cache: atc.ToolCache, files: Files) -> Tool:
    from agents import function_tool
    from agents.tool_context import ToolContext

    from aiotoolcache.integrations.openai_agents import cached_function_tools

    @function_tool
    async def read_file(path: str) -> str:
        """Read a file."""
        return await files.read(path)

    @function_tool
    async def write_file(path: str, content: str) -> str:
        """Write a file."""
        return await files.write(path, content)

    wrapped = cached_function_tools(
        [read_file, write_file], cache, server_id=server_of("openai_agents")
    )
    by_name = {tool.name: tool for tool in wrapped}

    async def call(name: str, args: dict[str, Any]) -> str:
        text = json.dumps(args)
        ctx = ToolContext(context=None, tool_name=name, tool_call_id="call-1", tool_arguments=text)
        return str(await by_name[name].on_invoke_tool(ctx, text))

    return call


FACTORIES = {
    "call_tool": via_call_tool,
    "fastmcp": via_fastmcp,
    "mcp": via_mcp,
    "langchain": via_langchain,
    "pydantic_ai": via_pydantic_ai,
    "openai_agents": via_openai_agents,
}


def seen(cache: atc.ToolCache, generations: dict[str, int]) -> bool:
    """True once this worker has received every one of ``generations``."""
    return all(cache.bus.generation(field) >= g for field, g in generations.items())


async def agent(cache: atc.ToolCache, link: Link, integrations: list[str]) -> None:
    """Serve read/write/sync commands from the test until told to stop."""
    files = Files(cache)
    tools = {name: await FACTORIES[name](cache, files) for name in integrations}
    link.send("set up")  # every framework imported: slow on a busy machine, and untimed
    while True:
        command = await link.recv()
        if command[0] == "stop":
            return
        if command[0] == "sync":
            await eventually(lambda wanted=command[1]: seen(cache, wanted))
            link.send("synced")
        elif command[0] == "read":
            _, integration, path = command
            before = files.runs
            content = await tools[integration]("read_file", {"path": path})
            link.send({"content": content, "ran": files.runs > before})
        elif command[0] == "write":
            _, integration, path, content = command
            await tools[integration]("write_file", {"path": path, "content": content})
            # A write bumps the tag of its partition, or the plain one when its
            # integration does not tell the partition: either reaches the reads.
            tag = f"reads:{server_of(integration)}"
            fields = (f"tag:{tag}", f"tag:{partition_tag(tag, None)}")
            bumped = {field: cache.bus.generation(field) for field in fields}
            link.send({field: g for field, g in bumped.items() if g > 0})
