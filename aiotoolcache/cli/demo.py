"""``aiotoolcache demo``: run the simulated agent without and with the cache, and compare.

The simulation itself is :mod:`aiotoolcache.demo`; this module parses its options, shows
progress and renders the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, TypeVar

from aiotoolcache.cli.connection import add_command
from aiotoolcache.cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    Screen,
    format_percent,
    format_seconds,
    one_line,
    print_json,
    redact_url,
    render_table,
)
from aiotoolcache.errors import BackendError

__all__ = ["cmd_demo", "demo_sections", "register", "render_demo", "show_sections"]

# A report section: a line of text, or a table (title, headers, rows, align).
Section = str | tuple[str, list[str], list[list[str]], str]


def register(commands: Any) -> None:
    """Add ``demo`` to the command line."""
    demo = add_command(
        commands,
        "demo",
        "run a simulated agent without and with the cache and compare",
        "aiotoolcache demo                 # one process, embedded cache\n"
        "aiotoolcache demo --workers 3     # three processes sharing one Redis",
    )
    demo.add_argument("--requests", type=int, default=100, help="agent requests (100)")
    demo.add_argument("--distinct", type=int, default=20, help="distinct tasks asked (20)")
    demo.add_argument("--speed", type=float, default=50.0, help="latency speed-up (50)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed (7)")
    demo.add_argument("--concurrency", type=int, default=1, help="requests in parallel (1)")
    demo.add_argument("--servers", type=int, default=3, help="servers listed per request (3)")
    demo.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing one Redis (1); without --url a private "
        "server is started (redis-server, else the bundled valkey-server)",
    )
    demo.add_argument("--url", help="use this Redis instead of the embedded cache")
    demo.add_argument("--namespace", help="namespace (default: a fresh one, removed after)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--json", action="store_true", help="print indented JSON")
    demo.set_defaults(run=cmd_demo)


T = TypeVar("T")


def _progress_factory(enabled: bool) -> tuple[Any, Callable[[str, int], Callable[[], None]] | None]:
    if not enabled:
        return contextlib.nullcontext(), None
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        return contextlib.nullcontext(), None
    bar = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )

    def start(label: str, total: int) -> Callable[[], None]:
        task = bar.add_task(label, total=total)
        return lambda: bar.advance(task)

    return bar, start


def demo_sections(report: Any) -> list[Section]:
    """Return the sections of a one-process demo report: lines and tables, one figure per cell."""
    from aiotoolcache.demo import STEPS

    cfg = report.config
    off, on = report.uncached, report.cached
    stats = on.stats or {}
    layers: dict[str, dict[str, Any]] = stats.get("layers", {})
    scale = cfg.speed
    sections: list[Section] = [
        f"aiotoolcache demo: a simulated agent answers {cfg.requests} requests drawn from "
        f"{cfg.distinct} distinct tasks",
        f"(seed {cfg.seed}, concurrency {cfg.concurrency}). Each request lists the tools of "
        f"{cfg.servers_per_request} MCP servers, embeds the query,",
        f"searches the tools and calls the best one: {cfg.request_seconds:g} s and "
        f"${cfg.request_cost:.2f} when nothing is cached,",
        f"simulated {scale:g}x faster here. Cache: {report.backend}.",
        "",
    ]
    rows = []
    for step, (layer, _, _) in STEPS.items():
        s = layers.get(layer, {})
        rows.append(
            [
                step,
                layer,
                str(off.calls[step]),
                str(on.calls[step]),
                str(s.get("l1_hits", 0)),
                str(s.get("l2_hits", 0)),
                str(s.get("coalesced", 0)),
                str(s.get("misses", 0)),
                format_percent(s.get("hit_rate", 0.0)),
            ]
        )
    sections.append(
        (
            "Loader calls per step, and what the cache did with each lookup:",
            [
                "step",
                "layer",
                "loads without",
                "loads with",
                "L1 hits",
                "L2 hits",
                "coalesced",
                "misses",
                "hit rate",
            ],
            rows,
            "llrrrrrrr",
        )
    )
    per_off, per_on = off.total_cost / off.requests, on.total_cost / on.requests
    rows = [
        [
            "mean time / request",
            format_seconds(off.mean_latency),
            format_seconds(on.mean_latency),
            format_percent(report.time_saved_fraction),
        ],
        [
            "p95 time / request",
            format_seconds(off.percentile(0.95)),
            format_seconds(on.percentile(0.95)),
            format_percent(1 - on.percentile(0.95) / off.percentile(0.95))
            if off.percentile(0.95)
            else "",
        ],
        [
            "cost / request",
            f"${per_off:.4f}",
            f"${per_on:.4f}",
            format_percent(report.cost_saved_fraction),
        ],
        [
            f"wall time, all {cfg.requests}",
            format_seconds(off.wall_seconds),
            format_seconds(on.wall_seconds),
            format_percent(1 - on.wall_seconds / off.wall_seconds) if off.wall_seconds else "",
        ],
        [
            f"cost, all {cfg.requests}",
            f"${off.total_cost:.2f}",
            f"${on.total_cost:.2f}",
            f"${off.total_cost - on.total_cost:.2f}",
        ],
    ]
    sections += [
        "",
        ("Measured:", ["measured", "without cache", "with cache", "saved"], rows, "lrrr"),
    ]
    saved_seconds = sum(float(s.get("saved_seconds", 0.0)) for s in layers.values())
    saved_cost = sum(float(s.get("saved_cost", 0.0)) for s in layers.values())
    sections += [
        "",
        f"At real latency (x{scale:g}) a request takes {format_seconds(off.mean_latency * scale)} "
        f"on average without the cache and {format_seconds(on.mean_latency * scale)} with it.",
        f"cache.stats() counted: {format_seconds(saved_seconds)} of loader time saved "
        f"({format_seconds(saved_seconds * scale)} at real latency) and ${saved_cost:.2f} saved.",
        f"Answers identical with and without the cache: {report.identical_answers}/{cfg.requests}.",
    ]
    if report.cleanup:
        sections.append(f"Removed the {len(report.cleanup)} keys the demo wrote to Redis.")
    return sections


def fleet_sections(report: Any) -> list[Section]:
    """Return the sections of a ``--workers`` demo report; every row adds up to its requests."""
    cfg = report.config
    workers = report.workers
    totals = report.layer_totals()
    headers = ["requests", "L1 hits", "L2 hits", "coalesced", "loads", "hit rate"]

    def cells(row: Any) -> list[str]:
        return [
            str(row.requests),
            str(row.l1_hits),
            str(row.l2_hits),
            str(row.coalesced),
            str(row.loads),
            format_percent(row.hit_rate),
        ]

    first = (
        f"aiotoolcache demo: {len(workers)} worker processes share one Redis ({report.redis})."
        if report.reachable
        else f"aiotoolcache demo: {len(workers)} worker processes were pointed at a Redis "
        f"that did not answer ({report.redis}); each cached in its own process only."
    )
    sections: list[Section] = [
        first,
        f"Each answers the same {cfg.requests} agent requests ({cfg.distinct} distinct tasks, "
        f"seed {cfg.seed}) at the same time,",
        "so a value one worker loads is served to the others from Redis (L2 hits), and a "
        "worker that",
        "finds another already loading a value waits for it instead of loading it again "
        "(coalesced).",
        "Every lookup is exactly one of: L1 hit, L2 hit, coalesced, or load.",
        "",
        (
            "Fleet totals per layer:",
            ["layer", *headers],
            [[name, *cells(row)] for name, row in totals.items()],
            "lrrrrrr",
        ),
        "",
        (
            "Per worker (all layers):",
            ["worker", "pid", *headers, "invalidation seen"],
            [
                [
                    str(w.index),
                    str(w.pid),
                    *cells(w.total),
                    "no"
                    if w.invalidation_seen_after is None
                    else f"after {format_seconds(w.invalidation_seen_after)}",
                ]
                for w in workers
            ],
            "rrrrrrrrl",
        ),
        "",
    ]
    seen = [w for w in workers if w.invalidation_seen_after is not None]
    reloads = sum(bool(w.reloaded_after_invalidation) for w in seen)
    sections.append(
        f"Invalidation: the coordinator called invalidate_server({report.invalidated_server!r}); "
        f"{len(seen)} of {len(workers)} workers heard it over pub/sub"
        + (
            f" (the slowest after {format_seconds(max(w.invalidation_seen_after for w in seen))})."
            if seen
            else "."
        )
    )
    if seen:
        sections.append(
            f"Listing {report.invalidated_server}'s tools again then ran the loader "
            f"{reloads} time{'' if reloads == 1 else 's'} for the whole fleet; the other workers "
            "got the fresh list from Redis."
        )
    without = sum(row.requests for row in totals.values())
    loads = sum(row.loads for row in totals.values())
    if without:
        sections.append(
            f"Without the cache the fleet would have run {without} loads; with it, {loads} "
            f"({format_percent(1 - loads / without)} fewer)."
        )
    if not report.reachable:
        errors = sum(w.total.backend_errors for w in workers)
        sections.append(
            f"Redis did not answer: each worker ran in-process only (L1), with {errors} "
            "backend errors counted; no L2 hit or cross-worker coalescing was possible."
        )
    return sections


def render_sections(sections: list[Section]) -> str:
    """Return report sections as plain text."""
    lines: list[str] = []
    for section in sections:
        if isinstance(section, str):
            lines.append(section)
        else:
            title, headers, rows, align = section
            lines += [title, render_table(headers, rows, align)]
    return "\n".join(lines)


def show_sections(sections: list[Section], screen: Screen) -> None:
    """Write report sections to ``screen`` (rich tables on a terminal)."""
    for section in sections:
        if isinstance(section, str):
            screen.line(section)
        else:
            title, headers, rows, align = section
            screen.table(headers, rows, align, title=title)


def render_demo(report: Any) -> str:
    """Return the human-readable comparison of a demo's two runs."""
    return render_sections(demo_sections(report))


def _fallback_note(reason: str) -> str:
    return f"--workers needs Redis: {reason}; falling back to one process on the embedded cache."


def cmd_demo(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache demo``; return the exit status."""
    from aiotoolcache.demo import DemoConfig, run_demo

    if args.workers < 1:
        raise CLIError("--workers must be at least 1", EXIT_USAGE)
    try:
        config = DemoConfig(
            requests=args.requests,
            distinct=args.distinct,
            speed=args.speed,
            seed=args.seed,
            concurrency=args.concurrency,
            servers_per_request=args.servers,
            url=args.url,
            namespace=args.namespace,
        )
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    if config.url is not None:
        from aiotoolcache.settings import parse_backend_url

        parse_backend_url(config.url)
    screen = Screen(out)
    if args.workers > 1:
        from aiotoolcache.local_server import INSTALL_HINT, find_server

        if config.url is not None or find_server() is not None:
            return _fleet_demo(args, config, screen)
        note = _fallback_note(
            f"no --url was given and no server is installed ({INSTALL_HINT} bundles one)"
        )
        if args.json:
            sys.stderr.write(note + "\n")
        else:
            screen.line(note, "yellow")
    estimate = config.requests * config.request_seconds / config.speed / config.concurrency
    show = not args.json and not args.no_progress and out.isatty() and estimate > 2.0
    bar, start = _progress_factory(show)
    if not args.json and not show:
        screen.line(f"Running {config.requests} requests without and with the cache...")
        out.flush()
    with bar:
        report = asyncio.run(_guarded_demo(run_demo(config, start), config.url))
    if args.json:
        print_json({"ok": True, "exit_code": EXIT_OK, "workers": 1, **report.to_dict()}, out)
    else:
        show_sections(demo_sections(report), screen)
    return EXIT_OK


def _fleet_demo(args: argparse.Namespace, config: Any, screen: Screen) -> int:
    from aiotoolcache.demo_fleet import private_redis, run_fleet_demo
    from aiotoolcache.local_server import require_server

    binary = None if config.url is not None else require_server()

    async def run() -> Any:
        if binary is None:
            return await run_fleet_demo(config, args.workers, config.url, redact_url(config.url))
        async with private_redis(binary.path) as url:
            where = url.removeprefix("redis://")
            label = (
                f"a private {binary.flavour} {binary.version} server at {where}, stopped afterwards"
            )
            return await run_fleet_demo(config, args.workers, url, label)

    if not args.json:
        on = redact_url(config.url) if binary is None else f"a private {binary}"
        screen.line(f"Starting {args.workers} worker processes on {on}...")
        screen.out.flush()
    with screen.status(f"{args.workers} workers answering {config.requests} requests each…"):
        report = asyncio.run(_guarded_demo(run(), config.url))
    if args.json:
        print_json({"ok": True, "exit_code": EXIT_OK, **report.to_dict()}, screen.out)
    else:
        show_sections(fleet_sections(report), screen)
    return EXIT_OK


async def _guarded_demo(work: Awaitable[T], url: str | None) -> T:
    try:
        return await work
    except BackendError as exc:  # only with a strict cache; kept for clear reporting
        raise CLIError(f"cache backend failed: {one_line(exc)}") from None
    except OSError as exc:
        where = f" ({redact_url(url)})" if url else ""
        raise CLIError(f"cache backend failed{where}: {one_line(exc)}") from None
