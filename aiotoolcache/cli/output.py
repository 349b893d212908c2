"""Output of the ``aiotoolcache`` command: one-line errors, tables, JSON and durations.

Human output goes through a :class:`Screen`: rich tables, colour and spinners
on a terminal (rich is imported only then, and only if installed), plain text
when the output is not a terminal or ``NO_COLOR`` is set. ``--json`` output
is indented JSON carrying ``ok`` and ``exit_code``, and on failure an
``error`` object with its ``type`` and ``message``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, ClassVar

from aiotoolcache.urls import mask_url

__all__ = [
    "EXIT_ABSENT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "Screen",
    "error_document",
    "format_percent",
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

    def __init__(
        self,
        message: str,
        status: int = EXIT_ERROR,
        kind: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind or ("UsageError" if status == EXIT_USAGE else "CommandError")
        self.details = details or {}


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
    """Return ``url`` with its password and secret query values replaced by ``***``."""
    return mask_url(url)


def print_json(data: Any, out: IO[str], *, compact: bool = False) -> None:
    """Write ``data`` to ``out`` as indented JSON with sorted keys (``compact``: one line)."""
    indent = None if compact else 2
    out.write(json.dumps(data, sort_keys=True, default=str, indent=indent) + "\n")


def error_document(kind: str, message: str, status: int, **details: Any) -> dict[str, Any]:
    """Return the ``--json`` document of a failed command."""
    return {
        **details,
        "ok": False,
        "exit_code": status,
        "error": {"type": kind, "message": message},
    }


def format_percent(fraction: float) -> str:
    """Return a fraction as a percentage with one decimal (``0.6667`` → ``66.7%``)."""
    return f"{100 * fraction:.1f}%"


_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _rich_console(out: IO[str]) -> Any | None:
    if Screen.console_factory is not None:
        return Screen.console_factory(out)
    if "NO_COLOR" in os.environ or not out.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:  # rich is the optional ``cli`` extra
        return None
    return Console(file=out, highlight=False)


class Screen:
    """Screen writes a command's human output: rich on a terminal, plain text otherwise.

    Pass ``console`` (a rich Console, e.g. one that records for an SVG) to
    force rich output; ``console_factory``, when set, makes every Screen's
    console (``docs/screenshots.py`` records real command runs that way).
    """

    console_factory: ClassVar[Callable[[IO[str]], Any] | None] = None

    def __init__(self, out: IO[str], console: Any | None = None) -> None:
        self.out = out
        self.console = console if console is not None else _rich_console(out)

    @property
    def rich(self) -> bool:
        return self.console is not None

    def line(self, text: str = "", style: str | None = None) -> None:
        """Write one line (``style`` is a rich style, ignored in plain text)."""
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text, style=style or ""))
        else:
            self.out.write(text + "\n")

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        align: str | None = None,
        title: str | None = None,
        status_column: int | None = None,
    ) -> None:
        """Write a table; ``status_column`` holds ok/warn/fail, coloured on a terminal."""
        if self.console is None:
            if title:
                self.out.write(title + "\n")
            self.out.write(render_table(headers, rows, align) + "\n")
            return
        from rich.table import Table
        from rich.text import Text

        align = (align or "").ljust(len(headers), "l")
        table = Table(title=title, title_justify="left", header_style="bold cyan")
        for header, side in zip(headers, align, strict=True):
            table.add_column(header, justify="right" if side == "r" else "left")
        for row in rows:
            cells = [
                Text(cell, style=_STATUS_STYLE.get(cell, ""))
                if index == status_column
                else Text(cell)
                for index, cell in enumerate(row)
            ]
            table.add_row(*cells)
        self.console.print(table)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """Show a spinner with ``message`` while the block runs (on a terminal only)."""
        if self.console is None or self.console.record:  # a recording shows no spinner
            yield
            return
        with self.console.status(message):
            yield


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
