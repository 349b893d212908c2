"""``aiotoolcache stats`` (fleet-wide counters of a namespace) and ``aiotoolcache invalidate``."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import IO, Any

from aiotoolcache.cli.connection import cache_url, open_cache, reach
from aiotoolcache.cli.output import (
    EXIT_OK,
    CLIError,
    format_seconds,
    one_line,
    print_json,
    render_table,
)
from aiotoolcache.errors import BackendError

__all__ = ["cmd_invalidate", "cmd_stats", "render_fleet"]


def render_fleet(stats: Any) -> str:
    """Return the fleet-wide per-layer table of a FleetStats."""
    header = (
        f"namespace {stats.namespace}: {stats.workers_alive} worker"
        f"{'' if stats.workers_alive == 1 else 's'} alive; fleet saved "
        f"{format_seconds(stats.saved_seconds)} of loads and ${stats.saved_cost:.2f}"
    )
    if not stats.layers:
        return header + "\nno counters reported yet (workers flush every few seconds)"
    rows = [
        [
            name,
            str(s.l1_hits),
            str(s.l2_hits),
            str(s.misses),
            f"{100 * s.hit_rate:.1f}%",
            str(s.loads),
            str(s.load_errors),
            str(s.coalesced + s.remote_coalesced),
            format_seconds(s.mean_load_seconds),
            format_seconds(s.saved_seconds),
            f"${s.saved_cost:.2f}",
        ]
        for name, s in stats.layers.items()
    ]
    table = render_table(
        [
            "layer",
            "L1 hits",
            "L2 hits",
            "misses",
            "hit rate",
            "loads",
            "errors",
            "coalesced",
            "mean load",
            "saved time",
            "saved $",
        ],
        rows,
        "lrrrrrrrrrr",
    )
    return f"{header}\n{table}"


async def cmd_stats(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache stats``; return the exit status."""
    from aiotoolcache.fleet import fleet_stats

    url = cache_url(args)
    cache = open_cache(url, args.namespace)
    try:
        await reach(cache, url)
        shown = 0
        while True:
            try:
                stats = await fleet_stats(cache)
            except BackendError as exc:
                raise CLIError(f"cannot read fleet stats: {one_line(exc)}") from None
            if args.json:
                print_json({"time": datetime.now(UTC).isoformat(), **stats.to_dict()}, out)
            else:
                if args.watch and out.isatty():
                    out.write("\x1b[2J\x1b[H")
                if args.watch:
                    out.write(datetime.now().strftime("%H:%M:%S") + "  ")
                out.write(render_fleet(stats) + "\n")
            out.flush()
            shown += 1
            if not args.watch or (args.count and shown >= args.count):
                return EXIT_OK
            await asyncio.sleep(args.watch)
    finally:
        await cache.aclose()


async def cmd_invalidate(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache invalidate``; return the exit status."""
    url = cache_url(args)
    cache = open_cache(url, args.namespace)
    try:
        if args.layer is not None:
            cache.layer(args.layer)  # unknown layer: a one-line error before any write
        await reach(cache, url)
        if args.layer is not None:
            await cache.invalidate(layer=args.layer)
            what, fields = f"layer {args.layer}", [f"layer:{args.layer}"]
        elif args.tag:
            await cache.invalidate(tags=args.tag)
            what, fields = "tag " + ", ".join(args.tag), [f"tag:{t}" for t in args.tag]
        elif args.server is not None:
            await cache.invalidate_server(args.server)
            what, fields = f"server {args.server}", [f"tag:server:{args.server}"]
        else:
            await cache.invalidate()
            what, fields = "everything", ["ns"]
        generations = {field: cache.bus.generation(field) for field in fields}
        if args.json:
            print_json(
                {
                    "ok": True,
                    "namespace": cache.namespace,
                    "invalidated": what,
                    "generations": generations,
                },
                out,
            )
        else:
            bumped = ", ".join(f"{f} -> {g}" for f, g in generations.items())
            out.write(f"invalidated {what} in namespace {cache.namespace} ({bumped})\n")
        return EXIT_OK
    except BackendError as exc:
        raise CLIError(f"invalidation failed: {one_line(exc)}") from None
    finally:
        await cache.aclose()
