"""Output of the ``aiotoolcache`` command: one-line errors, tables, JSON and durations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "EXIT_ABSENT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "format_seconds",
    "one_line",
    "print_json",
    "redact_url",
    "render_table",
]

PROG = "aiotoolcache"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_ABSENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CLIError(Exception):
    """CLIError is a failure reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> str:
    """Return a plain-text table; ``align`` has one ``l`` or ``r`` per column."""
    columns = len(headers)
    align = (align or "l" * columns).ljust(columns, "l")
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if align[i] == "r" else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def print_json(data: Any, out: IO[str]) -> None:
    """Write ``data`` to ``out`` as one line of JSON with sorted keys."""
    out.write(json.dumps(data, sort_keys=True, default=str) + "\n")


def format_seconds(value: float) -> str:
    """Return a duration in the largest unit that reads well (h, min, s, ms or us)."""
    if abs(value) >= 3600:
        return f"{value / 3600:.1f} h"
    if abs(value) >= 60:
        return f"{value / 60:.1f} min"
    if abs(value) >= 1:
        return f"{value:.2f} s"
    if abs(value) >= 0.001 or value == 0:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} us"


def one_line(exc: BaseException) -> str:
    """Return an exception's message on one line of at most 400 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]
