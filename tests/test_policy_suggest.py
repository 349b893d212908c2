"""Suggested policies: the read/write classifier (pure) and ``aiotoolcache policy suggest``."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiotoolcache as atc
from aiotoolcache.cli import main
from aiotoolcache.policy_suggest import classify, render_policy_file

needs_mcp = pytest.mark.skipif(
    importlib.util.find_spec("mcp") is None, reason="the MCP SDK is not installed (mcp extra)"
)
SERVER = f"{sys.executable} {Path(__file__).with_name('policy_server.py')}"


@pytest.mark.parametrize(
    ("name", "description", "kind", "because"),
    [
        ("get_user_details", None, "read", 'name starts with "get"'),
        ("listAllAirports", None, "read", 'name starts with "list"'),
        ("search-flights", None, "read", 'name starts with "search"'),
        ("calculate", "Calculate a sum.", "read", 'name starts with "calculate"'),
        ("book_reservation", "Get a seat.", "write", 'name starts with "book"'),
        ("transfer_to_human_agents", None, "write", 'name starts with "transfer"'),
        ("return_delivered_order_items", None, "write", 'name starts with "return"'),
        ("reset_state", None, "write", 'name starts with "reset"'),
        ("user_lookup", None, "read", 'name contains "lookup"'),
        ("order_find_and_cancel", None, "write", 'name contains "cancel"'),
        ("inventory", "Searches the stock.", "read", 'description starts with "search"'),
        ("inventory", "Lists what is in stock.", "read", 'description starts with "list"'),
        ("refunder", "Cancels an order.", "write", 'description starts with "cancel"'),
        ("report", "Returns the daily report.", "write", "not classified"),
        ("think", None, "write", "not classified"),
        ("", "", "write", "not classified"),
    ],
)
def test_names_and_descriptions_decide_without_annotations(
    name: str, description: str | None, kind: str, because: str
) -> None:
    suggestion = classify(name, description)
    assert (suggestion.kind, suggestion.classified) == (kind, because != "not classified")
    assert because in suggestion.reason


@needs_mcp
def test_annotations_decide_first() -> None:
    assert classify("delete_all", None, {"readOnlyHint": True}).kind == "read"
    assert classify("get_or_create", None, {"readOnlyHint": False}).kind == "write"
    assert classify("get_x", None, {"destructiveHint": True}).kind == "write"
    # An annotation object, as the MCP SDK gives them.
    from mcp_types import ToolAnnotations

    assert classify("purge", None, ToolAnnotations(read_only_hint=True)).reason.startswith(
        "annotations: readOnlyHint is true"
    )
    # Annotations that say nothing about reading leave it to the name.
    assert classify("get_x", None, {"openWorldHint": True}).reason.endswith('starts with "get"')


def test_a_rendered_file_loads_and_says_why_for_every_entry(tmp_path: Path) -> None:
    tools = [("get_a", "Get A."), ("think", "Note a thought."), ('we"ird\\/name', "List it.")]
    text = render_policy_file("s", [classify(n, d) for n, d in tools], dict(tools), "`srv`")
    path = tmp_path / "p.toml"
    path.write_text(text)
    policies = atc.ToolPolicies.from_file(path)
    assert policies.resolve("s", "get_a") == atc.ToolPolicy(cache=True)
    assert policies.resolve("s", "think") == atc.ToolPolicy(cache=False, invalidates=["*"])
    assert policies.resolve("s", 'we"ird\\/name').cache is True
    # Each table is preceded by its reason, whole, however long.
    blocks = text.split("\n\n")[1:]
    assert len(blocks) == 3 and all(block.startswith("# read: ") or block.startswith("# write: ")
                                    for block in blocks)  # fmt: skip
    unclassified = " ".join(line[2:] for line in blocks[1].splitlines() if line.startswith("# "))
    assert "a write to be safe (never cached, drops the server's reads)" in unclassified


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        status = main(list(args))
    finally:
        sys.stdout = stdout
    return status, out.getvalue()


@needs_mcp
def test_suggest_lists_a_stdio_servers_tools_and_writes_a_loadable_file(tmp_path: Path) -> None:
    target = tmp_path / "shop.toml"
    status, out = run_cli(
        "policy", "suggest", "--server-id", "shop", "--stdio", SERVER, "-o", str(target)
    )
    assert status == 0 and out.startswith(f"wrote {target}: 9 tools, 5 reads, 4 writes")
    document = tomllib.loads(target.read_text())
    assert len(document["tools"]) == 9  # both pages of the listing
    policies = atc.ToolPolicies.from_file(target)
    reads = {name for name in policies.patterns if policies.patterns[name].cache}
    assert reads == {
        "shop/get_item",
        "shop/stock_lookup",
        "shop/inventory",
        "shop/delete_preview",
        'shop/odd "name" \\ here',
    }
    assert policies.resolve("shop", "get_or_create_cart").invalidates == ("*",)


@needs_mcp
def test_suggest_prints_the_file_or_json(tmp_path: Path) -> None:
    status, out = run_cli("policy", "suggest", "--server-id", "shop", "--stdio", SERVER, "--json")
    document = json.loads(out)
    assert status == 0 and document["ok"] is True
    think = next(tool for tool in document["tools"] if tool["name"] == "think")
    assert think == {"name": "think", "kind": "write", "classified": False,
                     "reason": think["reason"]}  # fmt: skip
    status, out = run_cli("policy", "suggest", "--server-id", "shop", "--stdio", SERVER)
    assert status == 0 and out.startswith("# Tool policies for the MCP server")
    assert '[tools."shop/book_table"]\ncache = false\ninvalidates = ["*"]' in out


@pytest.fixture
def http_server() -> Iterator[str]:
    """The same server over streamable HTTP; yields its URL."""
    script = str(Path(__file__).with_name("policy_server.py"))
    process = subprocess.Popen(
        [sys.executable, script, "--http"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@needs_mcp
def test_suggest_lists_a_streamable_http_servers_tools(http_server: str) -> None:
    status, out = run_cli("policy", "suggest", "--server-id", "shop", "--url", http_server)
    assert status == 0 and f"from {http_server}: 5 reads, 4 writes." in out
    assert '[tools."shop/delete_preview"]\ncache = true' in out


@needs_mcp
def test_suggest_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    missing = "/nonexistent/mcp-server --flag"
    assert main(["policy", "suggest", "--server-id", "x", "--stdio", missing]) == 1
    assert main(["policy", "suggest", "--server-id", "a/b", "--stdio", SERVER]) == 2
    assert main(["policy", "suggest", "--server-id", "x"]) == 2  # --stdio or --url
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3
    assert errors[0].startswith("aiotoolcache: error: cannot list the tools of `/nonexistent")
    assert "without '/'" in errors[1] and "--stdio" in errors[2]
