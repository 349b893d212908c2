"""Connecting the command line to a shared cache: its URL, a strict ToolCache, budgeted calls."""

from __future__ import annotations

import argparse
import ipaddress
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiotoolcache.cli.output import EXIT_USAGE, CLIError, one_line, redact_url
from aiotoolcache.errors import BackendError

__all__ = [
    "add_command",
    "add_connection_options",
    "cache_url",
    "call",
    "is_loopback",
    "open_cache",
    "reach",
]

T = TypeVar("T")


def add_command(commands: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """Add subcommand ``name`` whose ``--help`` ends with ``example`` (one or more lines)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary[:1].upper() + summary[1:] + ".",
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_connection_options(sub: argparse.ArgumentParser, namespace: bool = True) -> None:
    """Add ``--url``, ``--namespace`` and ``--json`` to a command that talks to Redis."""
    sub.add_argument("--url", help="cache URL (default: $AIOTOOLCACHE_URL)")
    if namespace:
        sub.add_argument(
            "--namespace", help="key namespace (default: $AIOTOOLCACHE_NAMESPACE or atc)"
        )
    sub.add_argument("--json", action="store_true", help="print indented JSON")


def cache_url(args: argparse.Namespace) -> str:
    """Return ``--url`` or ``$AIOTOOLCACHE_URL``; a usage error when neither is set."""
    url: str | None = args.url or os.environ.get("AIOTOOLCACHE_URL")
    if not url:
        raise CLIError("no cache URL: pass --url redis://… or set AIOTOOLCACHE_URL", EXIT_USAGE)
    return url


def is_loopback(host: str | None) -> bool:
    """Return whether ``host`` (a URL's hostname; None for none) is this machine."""
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_cache(url: str, namespace: str | None, secret: str | None = None) -> Any:
    """Return a strict ToolCache for command-line use (not started: no subscriber yet).

    The CLI is not a worker: it takes part in no fleet reporting.
    """
    from aiotoolcache.settings import parse_backend_url
    from aiotoolcache.toolcache import ToolCache

    kind, _ = parse_backend_url(url)
    if kind in ("memory", "file"):
        raise CLIError(
            f"{kind}:// caches live inside one process; this command needs a shared "
            "Redis URL (redis://, rediss:// or unix://)"
        )
    from aiotoolcache.fleet import no_reporting_options

    options: dict[str, Any] = {"namespace": namespace, "secret": secret, "strict": True}
    options.update(budget=2.0, failure_threshold=1_000, **no_reporting_options())
    return ToolCache.from_url(url, **options)


async def call(cache: Any, operation: Callable[[], Awaitable[T]], budget: float = 3.0) -> T:
    """Run one backend operation through the cache's breaker, within ``budget`` seconds."""
    result: T = await cache.breaker.call(operation, budget=budget)
    return result


async def reach(cache: Any, url: str) -> float:
    """PING through the cache's pool; return the round trip or raise a one-line CLIError."""
    client = cache.client
    started = time.perf_counter()
    try:
        await call(cache, lambda: client.ping())
    except BackendError as exc:
        raise CLIError(
            f"cannot reach {redact_url(url)}: {one_line(exc)}", kind=type(exc).__name__
        ) from None
    return time.perf_counter() - started
