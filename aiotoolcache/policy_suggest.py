"""Suggested tool policies for a server that declares nothing: reads and writes, with reasons.

``classify`` decides from what a tool listing says, without I/O: annotations
first (``readOnlyHint``, ``destructiveHint``); otherwise the verb its name
starts with (``get_order`` reads, ``cancel_order`` writes), then a verb
anywhere in its name, then the verb its description starts with. A tool it
cannot classify is a write: never cached, and its success drops the
server's cached reads. ``render_policy_file`` writes the suggestions as a
commented TOML policy file (``ToolPolicies.from_file`` reads it).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["READ_VERBS", "WRITE_VERBS", "Suggestion", "classify", "render_policy_file"]

READ_VERBS = frozenset(
    {"get", "list", "search", "find", "read", "lookup", "calculate", "fetch", "retrieve",
     "describe", "view"}
)  # fmt: skip
"""Verbs that name a tool which only reads."""

WRITE_VERBS = frozenset(
    {"book", "cancel", "update", "modify", "send", "create", "delete", "transfer", "exchange",
     "return", "reset", "set", "add", "remove", "write", "post", "put", "insert", "upload",
     "submit", "pay", "refund", "edit", "change", "move", "rename", "purchase"}
)  # fmt: skip
"""Verbs that name a tool which changes state, or acts outside the server."""

# "Returns the …" describes what a read gives back: not a write in a description.
_DESCRIPTION_IS_NOT_A_VERB = frozenset({"return"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Suggestion is what ``classify`` made of one tool, and what it based the choice on."""

    name: str
    kind: Literal["read", "write"]
    reason: str
    classified: bool = True  # False: nothing decided, so a write to be safe

    @property
    def reads(self) -> bool:
        return self.kind == "read"


def _words(text: str) -> list[str]:
    """The lower-case words of a name or sentence (snake_case, camelCase, kebab-case)."""
    return [word.lower() for word in _WORD.findall(text)]


def _verb_form(word: str) -> str:
    """The verb a description's first word is a form of: "Gets" → "get", "Searches" → "search"."""
    for suffix, base in (("ches", "ch"), ("shes", "sh"), ("ies", "y"), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            stem = word[: -len(suffix)] + base
            if stem in READ_VERBS or stem in WRITE_VERBS:
                return stem
    return word


def _hint(annotations: Any, camel: str, snake: str) -> bool | None:
    if annotations is None:
        return None
    if isinstance(annotations, Mapping):
        value = annotations.get(camel, annotations.get(snake))
    elif hasattr(annotations, snake):  # the MCP SDK's names; the old ones warn when read
        value = getattr(annotations, snake)
    else:
        value = getattr(annotations, camel, None)
    return value if isinstance(value, bool) else None


def classify(name: str, description: str | None = None, annotations: Any = None) -> Suggestion:
    """Return whether a tool reads or writes, and why; a tool it cannot classify writes.

    ``annotations`` may be MCP ``ToolAnnotations`` or a mapping of its fields.
    """
    read_only = _hint(annotations, "readOnlyHint", "read_only_hint")
    destructive = _hint(annotations, "destructiveHint", "destructive_hint")
    if read_only is True:
        return Suggestion(name, "read", "annotations: readOnlyHint is true")
    if read_only is False or destructive is True:
        hint = "readOnlyHint is false" if read_only is False else "destructiveHint is true"
        return Suggestion(name, "write", f"annotations: {hint}")
    words = _words(name)
    if words and words[0] in READ_VERBS:
        return Suggestion(name, "read", f'no annotations; the name starts with "{words[0]}"')
    if words and words[0] in WRITE_VERBS:
        return Suggestion(name, "write", f'no annotations; the name starts with "{words[0]}"')
    # A verb later in the name ("user_lookup", "order_cancel"): a write verb wins.
    for kind in ("write", "read"):
        verbs = WRITE_VERBS if kind == "write" else READ_VERBS
        found = next((word for word in words[1:] if word in verbs), None)
        if found is not None:
            return Suggestion(name, kind, f'no annotations; the name contains "{found}"')
    first = _verb_form(_words(description or "")[0]) if _words(description or "") else ""
    if first in READ_VERBS:
        return Suggestion(name, "read", f'no annotations; the description starts with "{first}"')
    if first in WRITE_VERBS and first not in _DESCRIPTION_IS_NOT_A_VERB:
        return Suggestion(name, "write", f'no annotations; the description starts with "{first}"')
    return Suggestion(
        name,
        "write",
        "not classified: no annotations, and neither its name nor its description starts "
        "with a known verb; a write to be safe (never cached, drops the server's reads)",
        classified=False,
    )


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """One comment line's text: no line breaks, at most 100 characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= 100 else flat[:99] + "…"


def render_policy_file(
    server_id: str,
    suggestions: Iterable[Suggestion],
    descriptions: Mapping[str, str] | None = None,
    source: str | None = None,
) -> str:
    """Return a commented TOML policy file: reads cached, writes never, each with its reason.

    A read gets ``cache = true``; a write ``cache = false`` and
    ``invalidates = ["*"]`` (its success drops all of the server's cached reads).
    """
    chosen = list(suggestions)
    reads = sum(1 for suggestion in chosen if suggestion.reads)
    lines = [
        f"# Tool policies for the MCP server {json.dumps(server_id)}, suggested by",
        "# `aiotoolcache policy suggest`"
        + (f" from {_comment(source)}" if source else "")
        + f": {reads} reads, {len(chosen) - reads} writes.",
        "# A read is cached (cache = true). A write is never cached, and once it succeeds",
        '# it drops every cached read of the server (invalidates = ["*"]). Review before use:',
        "# a tool that changes anything, or acts outside the server, must stay a write.",
        "# Load it with ToolCache(tool_policies=PATH) or ToolPolicies.from_file(PATH).",
    ]
    for suggestion in chosen:
        lines.append("")
        reason = textwrap.wrap(f"{suggestion.kind}: {suggestion.reason}", 88)
        lines.extend(f"# {part}" for part in reason)  # whole: it is what a reviewer checks
        description = (descriptions or {}).get(suggestion.name)
        if description:
            lines.append(f"# description: {_comment(description)}")
        lines.append(f"[tools.{toml_string(f'{server_id}/{suggestion.name}')}]")
        if suggestion.reads:
            lines.append("cache = true")
        else:
            lines.append("cache = false")
            lines.append('invalidates = ["*"]')
    return "\n".join(lines) + "\n"
