"""``aiotoolcache stats`` (fleet-wide counters of a namespace) and ``aiotoolcache invalidate``."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import IO, Any

from aiotoolcache.cli.connection import (
    add_command,
    add_connection_options,
    cache_url,
    open_cache,
    reach,
)
from aiotoolcache.cli.output import (
    EXIT_OK,
    CLIError,
    Screen,
    format_percent,
    format_seconds,
    one_line,
    print_json,
    render_table,
)
from aiotoolcache.errors import BackendError

__all__ = ["cmd_invalidate", "cmd_stats", "fleet_rows", "register", "render_fleet", "show_fleet"]

_FLEET_HEADERS = (
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
)


def register(commands: Any) -> None:
    """Add ``stats`` and ``invalidate`` to the command line."""
    stats = add_command(
        commands,
        "stats",
        "fleet-wide per-layer counters of a namespace",
        "aiotoolcache stats --url redis://localhost:6379/0 --namespace atc --watch 2",
    )
    add_connection_options(stats)
    stats.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    stats.add_argument("--count", type=int, default=0, help="with --watch: stop after N")
    stats.set_defaults(run=cmd_stats)

    inv = add_command(
        commands,
        "invalidate",
        "invalidate a layer, tag, server or all; or purge a namespace's keys",
        "aiotoolcache invalidate --url redis://localhost:6379/0 --server github\n"
        "aiotoolcache invalidate --url redis://localhost:6379/0 --namespace old --purge",
    )
    add_connection_options(inv)
    target = inv.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", help="every entry of one layer")
    target.add_argument("--tag", action="append", help="every entry carrying TAG (repeatable)")
    target.add_argument("--server", help="everything cached about one tool server")
    target.add_argument("--all", action="store_true", help="everything in the namespace")
    target.add_argument(
        "--purge",
        action="store_true",
        help="invalidate everything, then delete every key of the namespace (SCAN + UNLINK)",
    )
    inv.set_defaults(run=cmd_invalidate)


def fleet_rows(stats: Any) -> tuple[str, list[list[str]]]:
    """Return the header line and the per-layer rows of a FleetStats."""
    header = (
        f"namespace {stats.namespace}: {stats.workers_alive} worker"
        f"{'' if stats.workers_alive == 1 else 's'} alive; fleet saved "
        f"{format_seconds(stats.saved_seconds)} of loads and ${stats.saved_cost:.2f}"
    )
    rows = [
        [
            name,
            str(s.l1_hits),
            str(s.l2_hits),
            str(s.misses),
            format_percent(s.hit_rate),
            str(s.loads),
            str(s.load_errors),
            str(s.coalesced + s.remote_coalesced),
            format_seconds(s.mean_load_seconds),
            format_seconds(s.saved_seconds),
            f"${s.saved_cost:.2f}",
        ]
        for name, s in stats.layers.items()
    ]
    return header, rows


_NO_COUNTERS = "no counters reported yet (workers flush every few seconds)"


def render_fleet(stats: Any) -> str:
    """Return the fleet-wide per-layer table of a FleetStats as plain text."""
    header, rows = fleet_rows(stats)
    if not rows:
        return f"{header}\n{_NO_COUNTERS}"
    return f"{header}\n{render_table(_FLEET_HEADERS, rows, 'lrrrrrrrrrr')}"


def show_fleet(stats: Any, screen: Screen) -> None:
    """Write the fleet-wide table of a FleetStats to ``screen``."""
    header, rows = fleet_rows(stats)
    screen.line(header, "bold")
    if rows:
        screen.table(_FLEET_HEADERS, rows, "lrrrrrrrrrr")
    else:
        screen.line(_NO_COUNTERS, "dim")


async def cmd_stats(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache stats``; return the exit status."""
    from aiotoolcache.fleet import fleet_stats

    url = cache_url(args)
    cache = open_cache(url, args.namespace)
    screen = Screen(out)
    try:
        with screen.status(f"reading fleet stats of {cache.namespace}…"):
            await reach(cache, url)
        shown = 0
        while True:
            try:
                stats = await fleet_stats(cache)
            except BackendError as exc:
                raise CLIError(
                    f"cannot read fleet stats: {one_line(exc)}", kind=type(exc).__name__
                ) from None
            if args.json:
                document = {
                    "ok": True,
                    "exit_code": EXIT_OK,
                    "time": datetime.now(UTC).isoformat(),
                    **stats.to_dict(),
                }
                # --watch streams one object per line (JSON Lines), so each is parseable alone.
                print_json(document, out, compact=bool(args.watch))
            else:
                if args.watch and out.isatty():
                    out.write("\x1b[2J\x1b[H")
                if args.watch:
                    screen.line(datetime.now().strftime("%H:%M:%S"), "dim")
                show_fleet(stats, screen)
            out.flush()
            shown += 1
            if not args.watch or (args.count and shown >= args.count):
                return EXIT_OK
            await asyncio.sleep(args.watch)
    finally:
        await cache.aclose()


async def cmd_invalidate(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache invalidate``; return the exit status."""
    from aiotoolcache.purge import purge_namespace

    url = cache_url(args)
    cache = open_cache(url, args.namespace)
    screen = Screen(out)
    removed: int | None = None
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
            await cache.invalidate()  # live workers drop their L1 before the keys go
            what, fields = "everything", ["ns"]
        generations = {field: cache.bus.generation(field) for field in fields}
        if args.purge:
            client = cache.client
            with screen.status(f"deleting the keys of {cache.namespace}…"):
                removed = await cache.breaker.call(
                    lambda: purge_namespace(client, cache.namespace), budget=300.0
                )
            what, generations = "everything and purged its keys", {}
    except BackendError as exc:
        raise CLIError(f"invalidation failed: {one_line(exc)}", kind=type(exc).__name__) from None
    finally:
        await cache.aclose()
    if args.json:
        document: dict[str, Any] = {
            "ok": True,
            "exit_code": EXIT_OK,
            "namespace": cache.namespace,
            "invalidated": what,
            "generations": generations,
        }
        if removed is not None:
            document["keys_deleted"] = removed
        print_json(document, out)
    elif removed is not None:
        screen.line(
            f"invalidated everything in namespace {cache.namespace} and deleted its {removed} keys",
            "green",
        )
    else:
        bumped = ", ".join(f"{f} -> {g}" for f, g in generations.items())
        screen.line(f"invalidated {what} in namespace {cache.namespace} ({bumped})", "green")
    return EXIT_OK
