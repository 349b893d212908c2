"""How a call differs from recorded ones: the nearest recorded calls and a readable diff.

Pure functions over the call fields of a cassette (no I/O), shared by
``CassetteMiss`` messages and ``aiotoolcache cassette diff``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["CALL_FIELDS", "call_lines", "diff_calls", "miss_message", "nearest", "title"]

CALL_FIELDS = ("layer", "op", "server", "name", "arguments", "extra", "partition")
"""The fields of a recorded line that say what was called (the rest says what it returned)."""


def call_of(record: dict[str, Any]) -> dict[str, Any]:
    """The call fields of a record, without its result, timing or sequence number."""
    return {name: record.get(name) for name in CALL_FIELDS if record.get(name) is not None}


def call_lines(record: dict[str, Any]) -> list[str]:
    """The call fields of a record as indented, key-sorted JSON lines (diff-friendly)."""
    return json.dumps(call_of(record), indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def title(record: dict[str, Any]) -> str:
    """A short human name of a recorded call: ``results call_tool weather/forecast``."""
    who = "/".join(str(record[k]) for k in ("server", "name") if record.get(k))
    parts = (record.get("layer"), record.get("op"), who)
    return " ".join(str(part) for part in parts if part)


def _kinship(call: dict[str, Any], record: dict[str, Any]) -> int:
    """How many of layer, op and name two calls share."""
    return sum(call.get(k) == record.get(k) for k in ("layer", "op", "name"))


def _likeness(call: dict[str, Any], record: dict[str, Any]) -> float:
    """How alike two calls' arguments read, in [0, 1]."""
    return difflib.SequenceMatcher(
        None,
        json.dumps(call.get("arguments"), sort_keys=True),
        json.dumps(record.get("arguments"), sort_keys=True),
    ).ratio()


def nearest(
    call: dict[str, Any], records: Iterable[dict[str, Any]], count: int = 3
) -> list[dict[str, Any]]:
    """The recorded calls closest to ``call``, closest first: at most ``count``, no two alike.

    Only calls of the closest kind (same layer, op and name when there are
    any) are shown; among them, those whose arguments read most alike.
    """
    distinct: dict[str, dict[str, Any]] = {}
    for record in records:
        distinct.setdefault(json.dumps(call_of(record), sort_keys=True), record)
    if not distinct:
        return []
    closest = max(_kinship(call, record) for record in distinct.values())
    kin = [record for record in distinct.values() if _kinship(call, record) == closest]
    kin.sort(key=lambda record: -_likeness(call, record))
    return kin[:count]


def diff_calls(a: dict[str, Any], b: dict[str, Any], a_name: str, b_name: str) -> list[str]:
    """A unified diff of two calls' fields; empty when they are the same call."""
    return list(
        difflib.unified_diff(call_lines(a), call_lines(b), a_name, b_name, n=2, lineterm="")
    )


def miss_message(
    call: dict[str, Any], reason: str, candidates: Sequence[dict[str, Any]], path: str
) -> str:
    """The message of a CassetteMiss: the call, why it missed, the nearest recorded calls."""
    arguments = json.dumps(call.get("arguments"), sort_keys=True, ensure_ascii=False)
    lines = [f"{title(call)}: {reason} in {path}", f"  arguments: {arguments}"]
    lines += [f"  {k}: {json.dumps(call[k])}" for k in ("extra", "partition") if call.get(k)]
    if not candidates:
        lines.append("  the cassette holds no calls")
        return "\n".join(lines)
    lines.append("  nearest recorded calls:")
    for record in candidates:
        seq = record.get("seq")
        lines.append(f"  #{seq} {title(record)}")
        diff = diff_calls(record, call, f"recorded #{seq}", "this call")
        lines += ["    " + line for line in diff] or ["    (the same call)"]
    return "\n".join(lines)
