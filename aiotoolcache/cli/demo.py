"""``aiotoolcache demo``: run the simulated agent without and with the cache, and compare.

The simulation itself is :mod:`aiotoolcache.demo`; this module parses its options, shows
progress and renders the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import IO, Any, TypeVar

from aiotoolcache.cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    format_seconds,
    one_line,
    print_json,
    redact_url,
    render_table,
)
from aiotoolcache.errors import BackendError

__all__ = ["cmd_demo", "render_demo"]

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


def render_demo(report: Any) -> str:
    """Return the human-readable comparison of a demo's two runs."""
    from aiotoolcache.demo import STEPS

    cfg = report.config
    off, on = report.uncached, report.cached
    stats = on.stats or {}
    layers: dict[str, dict[str, Any]] = stats.get("layers", {})
    scale = cfg.speed
    lines = [
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
                f"{s.get('l1_hits', 0)}/{s.get('l2_hits', 0)}",
                str(s.get("misses", 0)),
                f"{100 * s.get('hit_rate', 0.0):.1f}%",
            ]
        )
    lines.append(
        render_table(
            ["step", "layer", "loads without", "loads with", "hits L1/L2", "misses", "hit rate"],
            rows,
            "llrrrrr",
        )
    )
    per_off, per_on = off.total_cost / off.requests, on.total_cost / on.requests

    def real(before: float, after: float) -> str:
        return f"{format_seconds(before * scale)} -> {format_seconds(after * scale)}"

    rows = [
        [
            "mean time / request",
            format_seconds(off.mean_latency),
            format_seconds(on.mean_latency),
            f"{100 * report.time_saved_fraction:.1f}%",
            real(off.mean_latency, on.mean_latency),
        ],
        [
            "p95 time / request",
            format_seconds(off.percentile(0.95)),
            format_seconds(on.percentile(0.95)),
            "",
            real(off.percentile(0.95), on.percentile(0.95)),
        ],
        [
            "cost / request",
            f"${per_off:.4f}",
            f"${per_on:.4f}",
            f"{100 * report.cost_saved_fraction:.1f}%",
            "",
        ],
        [
            f"all {cfg.requests} requests",
            f"{format_seconds(off.wall_seconds)}  ${off.total_cost:.2f}",
            f"{format_seconds(on.wall_seconds)}  ${on.total_cost:.2f}",
            f"${off.total_cost - on.total_cost:.2f}",
            real(off.wall_seconds, on.wall_seconds),
        ],
    ]
    lines += [
        "",
        render_table(
            ["measured", "without cache", "with cache", "saved", f"at real latency (x{scale:g})"],
            rows,
            "lrrrl",
        ),
    ]
    saved_seconds = sum(float(s.get("saved_seconds", 0.0)) for s in layers.values())
    saved_cost = sum(float(s.get("saved_cost", 0.0)) for s in layers.values())
    lines += [
        "",
        f"cache.stats() counted: {format_seconds(saved_seconds)} of loader time saved "
        f"({format_seconds(saved_seconds * scale)} at real latency) and ${saved_cost:.2f} saved.",
        f"Answers identical with and without the cache: {report.identical_answers}/{cfg.requests}.",
    ]
    if report.cleanup:
        lines.append(f"Removed the {len(report.cleanup)} keys the demo wrote to Redis.")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache demo``; return the exit status."""
    from aiotoolcache.demo import DemoConfig, run_demo

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
    estimate = config.requests * config.request_seconds / config.speed / config.concurrency
    show = not args.json and not args.no_progress and out.isatty() and estimate > 2.0
    bar, start = _progress_factory(show)
    if not args.json and not show:
        out.write(f"Running {config.requests} requests without and with the cache...\n")
        out.flush()
    with bar:
        report = asyncio.run(_guarded_demo(run_demo(config, start), config.url))
    if args.json:
        print_json(report.to_dict(), out)
    else:
        out.write(render_demo(report) + "\n")
    return EXIT_OK


async def _guarded_demo(work: Awaitable[T], url: str | None) -> T:
    try:
        return await work
    except BackendError as exc:  # only with a strict cache; kept for clear reporting
        raise CLIError(f"cache backend failed: {one_line(exc)}") from None
    except OSError as exc:
        where = f" ({redact_url(url)})" if url else ""
        raise CLIError(f"cache backend failed{where}: {one_line(exc)}") from None
