"""``aiotoolcache inspect``: show the entry a key would be served from (never its value)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

from aiotoolcache.cli.connection import (
    add_command,
    add_connection_options,
    cache_url,
    call,
    open_cache,
    reach,
)
from aiotoolcache.cli.output import (
    EXIT_ABSENT,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    Screen,
    format_seconds,
    one_line,
    print_json,
)
from aiotoolcache.errors import BackendError

__all__ = [
    "LAYER_OF_HELPER",
    "cmd_inspect",
    "inspect_rows",
    "parse_key_part",
    "register",
    "resolve_key",
]


def register(commands: Any) -> None:
    """Add ``inspect`` to the command line."""
    insp = add_command(
        commands,
        "inspect",
        "show the entry of a key (never its value)",
        "aiotoolcache inspect --url redis://localhost:6379/0 "
        'call_tool github search_issues \'{"q": "bug"}\'',
    )
    add_connection_options(insp)
    insp.add_argument("--layer", help="layer (implied for list_tools/search_tools/call_tool/embed)")
    insp.add_argument("--label", help="key label (implied for the domain helpers' keys)")
    insp.add_argument("--partition", help="partition (tenant) the entry was cached for")
    insp.add_argument("--secret", help="signing secret (default: $AIOTOOLCACHE_SECRET)")
    insp.add_argument("--raw", action="store_true", help="take every key part as a string")
    insp.add_argument(
        "keyparts", nargs="+", metavar="KEYPART", help="key parts; JSON values are parsed"
    )
    insp.set_defaults(run=cmd_inspect)


LAYER_OF_HELPER = {
    # first key part → (layer, index of the part used as label, fixed label)
    "list_tools": ("discovery", 1, None),
    "search_tools": ("search", None, "search"),
    "call_tool": ("results", 2, None),
    "embed": ("embeddings", 1, None),
}


def parse_key_part(text: str, raw: bool) -> Any:
    """Return a key part: JSON when ``text`` is valid JSON (and not ``raw``), else the text."""
    if raw:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def resolve_key(
    parts: Sequence[Any], layer: str | None, label: str | None
) -> tuple[Any, str, str | None]:
    """Return ``(key, layer, label)``; the domain helpers' keys imply their layer and label."""
    key: Any = parts[0] if len(parts) == 1 else list(parts)
    helper = LAYER_OF_HELPER.get(parts[0]) if isinstance(parts[0], str) else None
    if helper is not None and len(parts) > 1:
        implied_layer, index, fixed = helper
        layer = layer or implied_layer
        if label is None:
            label = fixed if index is None else (str(parts[index]) if index < len(parts) else None)
    if layer is None:
        raise CLIError(
            "--layer is required unless the key starts with list_tools, search_tools, "
            "call_tool or embed",
            EXIT_USAGE,
        )
    return key, layer, label


async def cmd_inspect(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache inspect``; return the exit status (3: nothing served)."""
    from aiotoolcache.codec import CorruptValue
    from aiotoolcache.invalidation import RedisBus
    from aiotoolcache.lease import is_marker

    parts = [parse_key_part(part, args.raw) for part in args.keyparts]
    key, layer_name, label = resolve_key(parts, args.layer, args.label)
    url = cache_url(args)
    cache = open_cache(url, args.namespace, args.secret)
    try:
        layer = cache.layer(layer_name)
        await reach(cache, url)
        client = cache.client
        if isinstance(cache.bus, RedisBus):
            await cache.bus.load_generations()  # the key embeds the current generations
        ref = layer.ref(key, args.partition, label)

        async def read() -> tuple[Any, int, int]:
            pipe = client.pipeline(transaction=False)
            pipe.get(ref.value_key)
            pipe.pttl(ref.value_key)
            pipe.pttl(ref.lease_key)
            data, ttl, lease = await pipe.execute()
            return data, int(ttl), int(lease)

        data, ttl_ms, lease_ms = await call(cache, read)
        if data is not None and is_marker(data):  # a miss's lease, parked in the value key
            data, lease_ms = None, max(ttl_ms, 1)
    except BackendError as exc:
        raise CLIError(f"cannot read the entry: {one_line(exc)}", kind=type(exc).__name__) from None
    finally:
        await cache.aclose()
    report: dict[str, Any] = {
        "namespace": cache.namespace,
        "layer": layer_name,
        "key": ref.value_key,
        "digest": ref.digest,
        "exists": data is not None,
        "loading_elsewhere": lease_ms > 0,
    }
    if data is not None:
        now = time.time()
        report.update(
            {
                "stored_bytes": len(data),
                "redis_ttl_seconds": ttl_ms / 1000 if ttl_ms >= 0 else None,
            }
        )
        try:
            envelope = cache.codec.open(ref.value_key, data)
        except CorruptValue as exc:
            report.update({"readable": False, "reason": str(exc)})
        else:
            tags = envelope.tag_generations or {}
            stale = [
                tag for tag, seen in tags.items() if cache.bus.generation(f"tag:{tag}") != seen
            ]
            report.update(
                {
                    "readable": True,
                    "created_at": datetime.fromtimestamp(envelope.created_at, UTC).isoformat(),
                    "age_seconds": now - envelope.created_at,
                    "fresh_for_seconds": envelope.fresh_until - now,
                    "load_seconds": envelope.load_seconds,
                    "payload_bytes": len(envelope.payload),
                    "tags": sorted(tags),
                    "invalidated_tags": sorted(stale),
                    "served": not stale,
                }
            )
    status = EXIT_OK if report.get("served") else EXIT_ABSENT
    if args.json:
        print_json({"ok": True, "exit_code": status, **report}, out)
    else:
        show_inspect(report, Screen(out))
    return status


def show_inspect(report: dict[str, Any], screen: Screen) -> None:
    """Write an inspect report to ``screen``: a two-column table (plain: aligned lines)."""
    rows = inspect_rows(report)
    if screen.rich:
        screen.table(["field", "value"], [list(row) for row in rows], "ll")
    else:
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            screen.line(f"{name:<{width}}  {value}")


def inspect_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (field, value) rows that describe an inspect report."""
    rows = [
        ("layer", report["layer"]),
        ("key", report["key"]),
        ("exists", "yes" if report["exists"] else "no"),
    ]
    if report["loading_elsewhere"]:
        rows.append(("lease", "a worker is loading this entry now"))
    if report["exists"]:
        ttl = report["redis_ttl_seconds"]
        rows.append(("redis ttl", "none" if ttl is None else format_seconds(ttl)))
        rows.append(("size", f"{report['stored_bytes']} bytes stored"))
        if not report["readable"]:
            rows.append(("readable", f"no: {report['reason']}"))
        else:
            fresh = report["fresh_for_seconds"]
            rows += [
                (
                    "age",
                    f"{format_seconds(report['age_seconds'])} (written {report['created_at']})",
                ),
                (
                    "freshness",
                    f"fresh for {format_seconds(fresh)}"
                    if fresh > 0
                    else f"stale for {format_seconds(-fresh)}",
                ),
                ("payload", f"{report['payload_bytes']} bytes"),
                ("load time", format_seconds(report["load_seconds"])),
                ("tags", ", ".join(report["tags"]) or "none"),
                (
                    "served",
                    "yes"
                    if report["served"]
                    else "no: invalidated by " + ", ".join(report["invalidated_tags"]),
                ),
            ]
    return rows
