"""``aiotoolcache inspect``: show the entry a key would be served from (never its value)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

from aiotoolcache.cli.connection import cache_url, call, open_cache, reach
from aiotoolcache.cli.output import (
    EXIT_ABSENT,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    format_seconds,
    one_line,
    print_json,
)
from aiotoolcache.errors import BackendError

__all__ = ["LAYER_OF_HELPER", "cmd_inspect", "parse_key_part", "resolve_key"]

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
    except BackendError as exc:
        raise CLIError(f"cannot read the entry: {one_line(exc)}") from None
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
    if args.json:
        print_json(report, out)
    else:
        out.write(_render_inspect(report) + "\n")
    return EXIT_OK if report.get("served") else EXIT_ABSENT


def _render_inspect(report: dict[str, Any]) -> str:
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
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
