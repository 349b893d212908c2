"""``aiotoolcache cassette show|diff|redact``: read, compare and scrub recorded tool calls.

Works on the file alone (no cache, no network). ``diff`` exits 0 when the two
cassettes hold the same calls and results, 1 when they differ, like diff(1).
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import IO, Any

from aiotoolcache.cli.connection import add_command
from aiotoolcache.cli.output import (
    EXIT_ERROR,
    EXIT_OK,
    CLIError,
    format_seconds,
    print_json,
    render_table,
)
from aiotoolcache.errors import CassetteError, UnserializableValue
from aiotoolcache.tape import Tape, read_tape, redact, write_atomically
from aiotoolcache.tape_diff import title

__all__ = ["cmd_cassette", "register"]

_VOLATILE = ("seq", "load_seconds", "cost")  # differ between two runs of the same calls
_ARGS_WIDTH = 48


def register(commands: Any) -> None:
    """Add ``cassette`` and its actions (show, diff, redact) to the command line."""
    cassette = add_command(
        commands,
        "cassette",
        "show, compare or redact a tool-call cassette",
        "aiotoolcache cassette show tests/cassettes/test_agent/test_weather.jsonl\n"
        "aiotoolcache cassette diff before.jsonl after.jsonl\n"
        "aiotoolcache cassette redact run.jsonl --field api_key",
    )
    actions = cassette.add_subparsers(dest="cassette_command", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="a table of the calls, with load time and cost")
    show.add_argument("file", help="cassette file (.jsonl)")
    show.add_argument("--json", action="store_true", help="print JSON")
    diff = actions.add_parser("diff", help="the calls that differ between two cassettes")
    diff.add_argument("a", help="first cassette")
    diff.add_argument("b", help="second cassette")
    scrub = actions.add_parser("redact", help="replace the values of a field, in place")
    scrub.add_argument("file", help="cassette file (.jsonl)")
    scrub.add_argument(
        "--field", action="append", required=True, metavar="NAME", help="field (repeatable)"
    )
    cassette.set_defaults(run=cmd_cassette)


def cmd_cassette(args: argparse.Namespace, out: IO[str]) -> int:
    """Run one ``cassette`` action; return the exit status."""
    action = args.cassette_command
    if action == "show":
        return show(_read(args.file), args.json, out)
    if action == "diff":
        return diff(_read(args.a), _read(args.b), args.a, args.b, out)
    return redact_file(Path(args.file), args.field, out)


def _read(path: str) -> Tape:
    try:
        return read_tape(path)
    except FileNotFoundError:
        raise CLIError(f"no cassette at {path}") from None
    except CassetteError as exc:
        raise CLIError(str(exc)) from None


def _outcome(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"error: {record['error'].get('type')}"
    if "unrecordable" in record:
        return f"not recorded: {record['unrecordable']}"
    return "ok"


def show(tape: Tape, as_json: bool, out: IO[str]) -> int:
    """Print a table of the calls on ``tape`` and their total load time and cost."""
    seconds = sum(float(r.get("load_seconds") or 0.0) for r in tape.entries)
    cost = sum(float(r.get("cost") or 0.0) for r in tape.entries)
    if as_json:
        print_json({"header": tape.header, "calls": tape.entries, "load_seconds": seconds,
                    "cost": cost}, out)  # fmt: skip
        return EXIT_OK
    rows = []
    for record in tape.entries:
        arguments = json.dumps(record.get("arguments"), sort_keys=True, ensure_ascii=False)
        arguments = "" if record.get("arguments") is None else arguments
        if len(arguments) > _ARGS_WIDTH:
            arguments = arguments[: _ARGS_WIDTH - 1] + "…"
        rows.append(
            [
                str(record.get("seq", "")),
                title(record),
                arguments,
                record.get("partition") or "",
                format_seconds(float(record.get("load_seconds") or 0.0)),
                f"${float(record.get('cost') or 0.0):.4f}",
                _outcome(record),
            ]
        )
    headers = ["seq", "call", "arguments", "partition", "load time", "cost", "result"]
    out.write(render_table(headers, rows, "rlllrrl") + "\n")
    calls = len(tape.entries)
    out.write(
        f"{calls} call{'' if calls == 1 else 's'}: {format_seconds(seconds)} of load time, "
        f"${cost:.4f}; a replay saves both\n"
    )
    return EXIT_OK


def _stable(record: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in record.items() if k not in _VOLATILE}, sort_keys=True)


def _lines(record: dict[str, Any]) -> list[str]:
    stable = {k: v for k, v in record.items() if k not in _VOLATILE}
    return json.dumps(stable, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def diff(a: Tape, b: Tape, a_name: str, b_name: str, out: IO[str]) -> int:
    """Print the calls that differ (ignoring sequence numbers, timings and costs)."""
    keys_a = [_stable(r) for r in a.entries]
    keys_b = [_stable(r) for r in b.entries]
    matcher = difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False)
    differ = False
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            continue
        differ = True
        pairs = list(zip(range(a1, a2), range(b1, b2), strict=False))
        for i, j in pairs:
            ra, rb = a.entries[i], b.entries[j]
            out.write(f"~ #{ra.get('seq')} {title(ra)}  /  #{rb.get('seq')} {title(rb)}\n")
            lines = difflib.unified_diff(
                _lines(ra), _lines(rb), f"{a_name} #{ra.get('seq')}",
                f"{b_name} #{rb.get('seq')}", n=1, lineterm="",
            )  # fmt: skip
            out.writelines(f"    {line}\n" for line in lines)
        for i in range(a1 + len(pairs), a2):
            out.write(f"- #{a.entries[i].get('seq')} {title(a.entries[i])}  (only in {a_name})\n")
        for j in range(b1 + len(pairs), b2):
            out.write(f"+ #{b.entries[j].get('seq')} {title(b.entries[j])}  (only in {b_name})\n")
    if not differ:
        out.write(f"{len(a.entries)} calls, the same in both\n")
        return EXIT_OK
    return EXIT_ERROR


def redact_file(path: Path, fields: list[str], out: IO[str]) -> int:
    """Replace the values of ``fields`` in every call of the cassette at ``path``, in place."""
    tape = _read(str(path))
    names = {name.lower() for name in fields}

    def secret(name: str) -> bool:
        return name.lower() in names

    replaced = 0
    for number, record in zip(tape.line_numbers, tape.entries, strict=True):
        before = set(record.get("redacted") or ())
        paths = list(before)
        # Every shape a line holds is walked, $dict tags and $msgpack payloads
        # (registered models and dataclasses) included, without their classes.
        for part in ("arguments", "extra", "result"):
            if record.get(part) is not None:
                try:
                    record[part], found = redact(record[part], secret, part)
                except UnserializableValue as exc:
                    raise CLIError(f"{path}:{number}: {exc}") from None
                paths += found
        replaced += len(set(paths) - before)
        if paths:
            record["redacted"] = sorted(set(paths))
    header = dict(tape.header)
    header["redacted_fields"] = sorted({*header.get("redacted_fields", ()), *names})
    write_atomically(path, [header, *tape.entries])
    out.write(f"redacted {replaced} value{'' if replaced == 1 else 's'} in {path}\n")
    return EXIT_OK
