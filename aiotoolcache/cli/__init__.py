"""The ``aiotoolcache`` command: demo, stats, invalidate, doctor and inspect.

Built on argparse so it works with the core install alone; ``rich`` (when
installed) only adds the demo's progress bar. Every failure is one line on
stderr (``aiotoolcache: error: …``) and a non-zero exit status, never a
traceback. ``--json`` prints machine-readable output instead of tables.

Exit status: 0 success, 1 error (or a doctor warning with ``--strict``),
2 bad usage, 3 ``inspect`` found no entry that would be served, 130 interrupted.

One module per concern: :mod:`~aiotoolcache.cli.output` (errors, tables, JSON),
:mod:`~aiotoolcache.cli.connection` (reaching the cache), and one module per
command (:mod:`~aiotoolcache.cli.demo`, :mod:`~aiotoolcache.cli.stats` with
``invalidate``, :mod:`~aiotoolcache.cli.doctor`, :mod:`~aiotoolcache.cli.inspect`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

from aiotoolcache.cli.cassette import add_cassette_parser, cmd_cassette
from aiotoolcache.cli.connection import open_cache
from aiotoolcache.cli.demo import cmd_demo, render_demo
from aiotoolcache.cli.doctor import Checks, cmd_doctor
from aiotoolcache.cli.inspect import LAYER_OF_HELPER, cmd_inspect, parse_key_part, resolve_key
from aiotoolcache.cli.output import (
    EXIT_ABSENT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CLIError,
    one_line,
    redact_url,
    render_table,
)
from aiotoolcache.cli.stats import cmd_invalidate, cmd_stats, render_fleet
from aiotoolcache.errors import ToolCacheError

__all__ = [
    "EXIT_ABSENT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LAYER_OF_HELPER",
    "PROG",
    "CLIError",
    "Checks",
    "build_parser",
    "main",
    "open_cache",
    "parse_key_part",
    "redact_url",
    "render_demo",
    "render_fleet",
    "render_table",
    "resolve_key",
]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from aiotoolcache import __version__

    parser = _Parser(
        prog=PROG,
        description="Async tiered cache for AI agents and MCP servers: demo, stats, "
        "invalidation, diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def connection(sub: argparse.ArgumentParser, namespace: bool = True) -> None:
        sub.add_argument("--url", help="cache URL (default: $AIOTOOLCACHE_URL)")
        if namespace:
            sub.add_argument(
                "--namespace", help="key namespace (default: $AIOTOOLCACHE_NAMESPACE or atc)"
            )
        sub.add_argument("--json", action="store_true", help="print JSON")

    demo = commands.add_parser(
        "demo", help="run a simulated agent without and with the cache and compare"
    )
    demo.add_argument("--requests", type=int, default=100, help="agent requests (100)")
    demo.add_argument("--distinct", type=int, default=20, help="distinct tasks asked (20)")
    demo.add_argument("--speed", type=float, default=50.0, help="latency speed-up (50)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed (7)")
    demo.add_argument("--concurrency", type=int, default=1, help="requests in parallel (1)")
    demo.add_argument("--servers", type=int, default=3, help="servers listed per request (3)")
    demo.add_argument("--url", help="use this Redis instead of the embedded cache")
    demo.add_argument("--namespace", help="namespace (default: a fresh one, removed after)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--json", action="store_true", help="print JSON")

    stats = commands.add_parser("stats", help="fleet-wide per-layer counters of a namespace")
    connection(stats)
    stats.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    stats.add_argument("--count", type=int, default=0, help="with --watch: stop after N")

    inv = commands.add_parser("invalidate", help="invalidate a layer, tag, server or all")
    connection(inv)
    target = inv.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", help="every entry of one layer")
    target.add_argument("--tag", action="append", help="every entry carrying TAG (repeatable)")
    target.add_argument("--server", help="everything cached about one tool server")
    target.add_argument("--all", action="store_true", help="everything in the namespace")

    doctor = commands.add_parser("doctor", help="check that a Redis suits the cache")
    connection(doctor)
    doctor.add_argument("--strict", action="store_true", help="exit 1 on warnings too")

    insp = commands.add_parser("inspect", help="show the entry of a key (never its value)")
    connection(insp)
    insp.add_argument("--layer", help="layer (implied for list_tools/search_tools/call_tool/embed)")
    insp.add_argument("--label", help="key label (implied for the domain helpers' keys)")
    insp.add_argument("--partition", help="partition (tenant) the entry was cached for")
    insp.add_argument("--secret", help="signing secret (default: $AIOTOOLCACHE_SECRET)")
    insp.add_argument("--raw", action="store_true", help="take every key part as a string")
    insp.add_argument(
        "keyparts", nargs="+", metavar="KEYPART", help="key parts; JSON values are parsed"
    )
    add_cassette_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "demo":
            return cmd_demo(args, out)
        if args.command == "cassette":
            return cmd_cassette(args, out)
        runner = {
            "stats": cmd_stats,
            "invalidate": cmd_invalidate,
            "doctor": cmd_doctor,
            "inspect": cmd_inspect,
        }[args.command]
        return asyncio.run(runner(args, out))
    except CLIError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.status
    except ToolCacheError as exc:  # configuration: bad URL scheme, unknown layer, …
        sys.stderr.write(f"{PROG}: error: {one_line(exc)}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "watch", None) else EXIT_INTERRUPTED
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{PROG}: error: {one_line(exc)}\n")
        return EXIT_ERROR
