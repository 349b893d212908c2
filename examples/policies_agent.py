"""Two worker processes share one Redis: a write in one makes the next read in the other fresh.

A file-editing agent's tools: ``read_file`` and ``list_dir`` are reads,
cached; ``write_file`` is a write. Its policy names what it invalidates,
so the agent's next ``read_file`` in *any* worker runs the tool again
instead of returning the old content.

Needs nothing beyond the core install (pip install aiotoolcache) and a
Redis server. Run with its URL (default ``redis://127.0.0.1:6379/0``):
``AIOTOOLCACHE_URL=redis://... python examples/policies_agent.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from typing import Any

import aiotoolcache as atc

POLICIES = {
    "files/read_file": atc.ToolPolicy(ttl=600, key_args=["path"]),
    "files/list_dir": atc.ToolPolicy(ttl=60),
    "files/write_*": atc.ToolPolicy(invalidates=["read_file", "list_dir"]),
}


def tool_body(disk: Any, tool: str, args: dict[str, Any], ran: list[str]) -> Any:
    """The tool itself: reads or writes a "file" kept in Redis, noting that it ran."""

    async def read_file() -> str:
        ran.append(tool)
        content = await disk.get(f"disk:{args['path']}")
        return (content or b"").decode()

    async def write_file() -> str:
        ran.append(tool)
        await disk.set(f"disk:{args['path']}", args["content"])
        return "ok"

    return read_file if tool == "read_file" else write_file


async def agent(name: str, url: str, namespace: str, inbox: Any, outbox: Any) -> None:
    """One worker: runs the tool calls it is sent, and says whether each tool body ran."""
    async with atc.ToolCache.from_url(url, namespace=namespace, tool_policies=POLICIES) as cache:
        disk = cache.redis  # the "file system" every worker sees
        while (step := await asyncio.to_thread(inbox.get)) is not None:
            tool, args = step
            ran: list[str] = []
            # call_tool works out from the policy that write_file is a write.
            result = await cache.call_tool("files", tool, args, tool_body(disk, tool, args, ran))
            if tool == "write_file":
                # Other workers hear of it over pub/sub; wait for it so the demo is exact.
                await asyncio.sleep(0.05)
            outbox.put(f"{name}: {tool}({args['path']}) -> {result!r}  [tool ran: {bool(ran)}]")


def run_agent(name: str, url: str, namespace: str, inbox: Any, outbox: Any) -> None:
    asyncio.run(agent(name, url, namespace, inbox, outbox))


def main() -> None:
    url = os.environ.get("AIOTOOLCACHE_URL", "redis://127.0.0.1:6379/0")
    namespace = f"policies-{uuid.uuid4().hex[:8]}"
    spawn = multiprocessing.get_context("spawn")
    outbox = spawn.Queue()
    inboxes = {name: spawn.Queue() for name in ("worker-1", "worker-2")}
    workers = [
        spawn.Process(target=run_agent, args=(name, url, namespace, inbox, outbox))
        for name, inbox in inboxes.items()
    ]
    for worker in workers:
        worker.start()
    script = [
        ("worker-1", "write_file", {"path": "notes.txt", "content": "buy milk"}),
        ("worker-1", "read_file", {"path": "notes.txt"}),  # runs the tool, then cached
        ("worker-2", "read_file", {"path": "notes.txt"}),  # served from Redis
        ("worker-2", "write_file", {"path": "notes.txt", "content": "buy oat milk"}),
        ("worker-1", "read_file", {"path": "notes.txt"}),  # fresh: the tool runs again
        ("worker-2", "read_file", {"path": "notes.txt"}),  # served worker-1's fresh copy
    ]
    print("Two workers share one Redis; write_file invalidates the cached reads it affects.")
    try:
        for name, tool, args in script:
            inboxes[name].put((tool, args))
            print(outbox.get(timeout=60))
        print(
            "After worker-2's write, worker-1's read ran the tool again and got the new "
            "content: no worker served the old file."
        )
    finally:
        for inbox in inboxes.values():
            inbox.put(None)
        for worker in workers:
            worker.join(30)


if __name__ == "__main__":
    main()
