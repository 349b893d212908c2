"""Policy files: tool policies written in TOML, read with the standard library.

A policy file holds one table per ``"<server_id>/<tool pattern>"`` key (or
``"*"``, every tool) under ``tools``; its fields are ``ToolPolicy``'s::

    [tools."retail/get_*"]
    cache = true
    ttl = 300

    [tools."retail/cancel_pending_order"]
    cache = false
    invalidates = ["*"]

Every mistake is a ``ConfigurationError`` naming the file, the line and the
field. ``tomllib`` gives no positions for values, so the line is found in the
file's text: the table's header, then the field's line inside the table.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.policy import ToolPolicies, ToolPolicy

__all__ = ["FIELDS", "read_policy_file"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


# Each field: the check of its value, and what the check wants (for the message).
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "cache": (lambda v: isinstance(v, bool), "true or false"),
    "ttl": (lambda v: _is_number(v) and v > 0, "a number of seconds above 0"),
    "key_args": (_names, "a list of argument names"),
    "min_load_time": (lambda v: _is_number(v) and v >= 0, "a number of seconds, 0 or more"),
    "invalidates": (_names, 'a list of tool-name patterns (["*"]: all of the server\'s tools)'),
    "max_value_bytes": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "a whole number of bytes above 0",
    ),
    "client_directives": (lambda v: isinstance(v, bool), "true or false"),
    "invalidates_partitions": (lambda v: v in ("own", "all"), '"own" or "all"'),
}
"""The ToolPolicy fields a table may hold."""


def read_policy_file(path: str | os.PathLike[str]) -> ToolPolicies:
    """Return the ToolPolicies a TOML policy file declares.

    Raises ConfigurationError, naming the file, the line and the field, when
    the file cannot be read, is not TOML, or holds an unknown field or a bad value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the policy file: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not a valid TOML file: {exc}") from None
    where = _Locator(str(path), text)
    for name in document:
        if name != "tools":
            raise where.error(
                where.top_level(name), f"unknown table or key {name!r}: policies go under [tools.…]"
            )
    tables = document.get("tools", {})
    if not isinstance(tables, dict):
        raise where.error(where.top_level("tools"), 'tools must be a table of "<server>/<tool>"')
    patterns: dict[str, ToolPolicy] = {}
    for key, table in tables.items():
        header = where.header(key)
        if not isinstance(table, dict):
            raise where.error(header, f'tools."{key}" must be a table of ToolPolicy fields')
        fields: dict[str, Any] = {}
        for name, value in table.items():
            line = where.field(key, name, header)
            if name not in FIELDS:
                known = ", ".join(FIELDS)
                raise where.error(line, f'tools."{key}": unknown field {name!r} (known: {known})')
            check, wanted = FIELDS[name]
            if not check(value):
                raise where.error(line, f'tools."{key}".{name}: expected {wanted}, got {value!r}')
            fields[name] = value
        try:
            patterns[key] = ToolPolicy(**fields)
            ToolPolicies({key: patterns[key]})  # checks the key, naming its line
        except ConfigurationError as exc:
            raise where.error(header, f'tools."{key}": {exc}') from None
    return ToolPolicies(patterns)


class _Locator:
    """_Locator finds the line of a table or a field in a policy file's text (1-based)."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def error(self, line: int | None, message: str) -> ConfigurationError:
        return ConfigurationError(f"{self.path}:{line if line else '?'}: {message}")

    def top_level(self, name: str) -> int | None:
        for number, line in enumerate(self.lines, start=1):
            parsed = _parse_line(line)
            if parsed is not None and name in parsed:
                return number
        return None

    def header(self, key: str) -> int | None:
        """The line of the ``[tools."<key>"]`` header, or of the first line naming the key."""
        for number, line in enumerate(self.lines, start=1):
            if line.lstrip().startswith("[") and _parse_line(line) == {"tools": {key: {}}}:
                return number
        return self._first_naming(key, 1)

    def field(self, key: str, name: str, header: int | None) -> int | None:
        """The line assigning ``name`` inside the table of ``key`` (its header if not found)."""
        assigns = re.compile(
            rf"""^\s*(?:{re.escape(name)}|"{re.escape(name)}"|'{re.escape(name)}')\s*="""
        )
        start = header or 1
        for number in range(start, len(self.lines) + 1):
            line = self.lines[number - 1]
            if number > start and line.lstrip().startswith("["):
                break  # the next table: the field is not on a line of its own here
            if assigns.match(line):
                return number
        found = self._first_naming(name, start)  # an inline table, or a dotted key
        return found if found is not None else header

    def _first_naming(self, text: str, start: int) -> int | None:
        for number in range(start, len(self.lines) + 1):
            if text in self.lines[number - 1]:
                return number
        return None


def _parse_line(line: str) -> dict[str, Any] | None:
    """The document one line makes on its own, or None when it is not one."""
    try:
        return tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return None
