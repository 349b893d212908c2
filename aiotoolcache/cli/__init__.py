"""The ``aiotoolcache`` command: demo, stats, invalidate, doctor, inspect, cassette and policy.

Built on argparse so it works with the core install alone; with ``rich``
installed (the ``cli`` extra) a terminal gets tables, colour and spinners,
and anything else (a pipe, a file, ``NO_COLOR``) plain text. Every failure is
one line on stderr (``aiotoolcache: error: …``) and a non-zero exit status,
never a traceback. ``--json`` prints indented JSON instead, on success and on
failure alike: ``ok``, ``exit_code`` and, on failure, ``error`` (``type``,
``message``).

Exit status: 0 success, 1 error (or a doctor warning with ``--strict``),
2 bad usage, 3 ``inspect`` found no entry that would be served, 130 interrupted.

One module per concern: :mod:`~aiotoolcache.cli.output` (errors, tables, JSON),
:mod:`~aiotoolcache.cli.connection` (reaching the cache), and one module per
command, each with a ``register(commands)`` that adds its subcommand(s) to the
parser; :data:`COMMAND_MODULES` lists them, one line each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from aiotoolcache.cli import cassette as cassette_command
from aiotoolcache.cli import demo as demo_command
from aiotoolcache.cli import doctor as doctor_command
from aiotoolcache.cli import inspect as inspect_command
from aiotoolcache.cli import policy as policy_command
from aiotoolcache.cli import stats as stats_command
from aiotoolcache.cli.connection import open_cache
from aiotoolcache.cli.demo import render_demo
from aiotoolcache.cli.doctor import Checks
from aiotoolcache.cli.inspect import LAYER_OF_HELPER, parse_key_part, resolve_key
from aiotoolcache.cli.output import (
    EXIT_ABSENT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CLIError,
    error_document,
    one_line,
    print_json,
    redact_url,
    render_table,
)
from aiotoolcache.cli.stats import render_fleet
from aiotoolcache.errors import ToolCacheError

__all__ = [
    "COMMAND_MODULES",
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

# The commands, in the order --help lists them: each module's register(commands)
# adds its subcommand(s). A new command is one more line here.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    demo_command,
    stats_command,
    doctor_command,
    inspect_command,
    cassette_command,
    policy_command,
)

_EXAMPLES = """examples:
  aiotoolcache demo                                  one process, embedded cache
  aiotoolcache demo --workers 3                      three processes sharing one Redis
  aiotoolcache doctor --url redis://localhost:6379/0
  aiotoolcache stats --url redis://localhost:6379/0 --namespace atc
  aiotoolcache cassette show run.jsonl               the calls a recorded agent run made
  aiotoolcache policy suggest --server-id s --stdio "CMD"   a policy file for a server's tools
  aiotoolcache <command> --help                      options and an example of each command
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become a one-line usage CLIError."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see {self.prog} --help)", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from aiotoolcache import __version__

    parser = _Parser(
        prog=PROG,
        description="Async tiered cache for AI agents and MCP servers: demo, stats, "
        "invalidation, diagnostics.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def _scrub(text: str, argv: Sequence[str]) -> str:
    """Mask a URL's password wherever a message might repeat it (a last safety net)."""
    for arg in argv:
        if "://" in arg and arg != redact_url(arg):
            text = text.replace(arg, redact_url(arg))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv
    out = sys.stdout

    def fail(kind: str, message: str, status: int, details: dict[str, object]) -> int:
        message = _scrub(message, argv)
        sys.stderr.write(f"{PROG}: error: {message}\n")
        if wants_json:
            print_json(error_document(kind, message, status, **details), out)
        return status

    args = None
    try:
        args = build_parser().parse_args(argv)
        result = args.run(args, out)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        status: int = result
        return status
    except CLIError as exc:
        return fail(exc.kind, str(exc), exc.status, exc.details)
    except ToolCacheError as exc:  # configuration: bad URL, unknown layer, …
        return fail(type(exc).__name__, one_line(exc), EXIT_ERROR, {})
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "watch", None) else EXIT_INTERRUPTED
    except (OSError, ValueError) as exc:
        return fail(type(exc).__name__, one_line(exc), EXIT_ERROR, {})
