"""The ``aiotoolcache`` command: demo, stats, invalidate, doctor and inspect.

Built on argparse so it works with the core install alone; ``rich`` (when
installed) only adds the demo's progress bar. Every failure is one line on
stderr (``aiotoolcache: error: …``) and a non-zero exit status, never a
traceback. ``--json`` prints machine-readable output instead of tables.

Exit status: 0 success, 1 error (or a doctor warning with ``--strict``),
2 bad usage, 3 ``inspect`` found no entry that would be served, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from aiotoolcache.errors import BackendError, ToolCacheError

__all__ = ["CLIError", "main", "redact_url", "render_table"]

T = TypeVar("T")
PROG = "aiotoolcache"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_ABSENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LAYER_OF_HELPER = {
    # first key part → (layer, index of the part used as label, fixed label)
    "list_tools": ("discovery", 1, None),
    "search_tools": ("search", None, "search"),
    "call_tool": ("results", 2, None),
    "embed": ("embeddings", 1, None),
}


class CLIError(Exception):
    """CLIError is a failure reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# -- output helpers -------------------------------------------------------------------


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> str:
    """Return a plain-text table; ``align`` has one ``l`` or ``r`` per column."""
    columns = len(headers)
    align = (align or "l" * columns).ljust(columns, "l")
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(widths[i]) if align[i] == "r" else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _print_json(data: Any, out: IO[str]) -> None:
    out.write(json.dumps(data, sort_keys=True, default=str) + "\n")


def _seconds(value: float) -> str:
    if abs(value) >= 3600:
        return f"{value / 3600:.1f} h"
    if abs(value) >= 60:
        return f"{value / 60:.1f} min"
    if abs(value) >= 1:
        return f"{value:.2f} s"
    if abs(value) >= 0.001 or value == 0:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} us"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


# -- connecting -----------------------------------------------------------------------


def _url(args: argparse.Namespace) -> str:
    url: str | None = args.url or os.environ.get("AIOTOOLCACHE_URL")
    if not url:
        raise CLIError("no cache URL: pass --url redis://… or set AIOTOOLCACHE_URL", EXIT_USAGE)
    return url


def open_cache(url: str, namespace: str | None, secret: str | None = None) -> Any:
    """Return a strict ToolCache for command-line use (not started: no subscriber yet).

    The CLI is not a worker: it takes part in no fleet reporting.
    """
    from aiotoolcache.settings import parse_backend_url
    from aiotoolcache.toolcache import ToolCache

    kind, _ = parse_backend_url(url)
    if kind in ("memory", "file"):
        raise CLIError(
            f"{kind}:// caches live inside one process; this command needs a shared "
            "Redis URL (redis://, rediss:// or unix://)"
        )
    from aiotoolcache.fleet import no_reporting_options

    options: dict[str, Any] = {"namespace": namespace, "secret": secret, "strict": True}
    options.update(budget=2.0, failure_threshold=1_000, **no_reporting_options())
    return ToolCache.from_url(url, **options)


async def _call(cache: Any, operation: Callable[[], Awaitable[T]], budget: float = 3.0) -> T:
    result: T = await cache.breaker.call(operation, budget=budget)
    return result


async def _reach(cache: Any, url: str) -> float:
    """PING through the cache's pool; return the round trip or raise a one-line CLIError."""
    client = cache.client
    started = time.perf_counter()
    try:
        await _call(cache, lambda: client.ping())
    except BackendError as exc:
        raise CLIError(f"cannot reach {redact_url(url)}: {_one_line(exc)}") from None
    return time.perf_counter() - started


# -- demo -------------------------------------------------------------------------------


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
        return f"{_seconds(before * scale)} -> {_seconds(after * scale)}"

    rows = [
        [
            "mean time / request",
            _seconds(off.mean_latency),
            _seconds(on.mean_latency),
            f"{100 * report.time_saved_fraction:.1f}%",
            real(off.mean_latency, on.mean_latency),
        ],
        [
            "p95 time / request",
            _seconds(off.percentile(0.95)),
            _seconds(on.percentile(0.95)),
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
            f"{_seconds(off.wall_seconds)}  ${off.total_cost:.2f}",
            f"{_seconds(on.wall_seconds)}  ${on.total_cost:.2f}",
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
        f"cache.stats() counted: {_seconds(saved_seconds)} of loader time saved "
        f"({_seconds(saved_seconds * scale)} at real latency) and ${saved_cost:.2f} saved.",
        f"Answers identical with and without the cache: {report.identical_answers}/{cfg.requests}.",
    ]
    if report.cleanup:
        lines.append(f"Removed the {len(report.cleanup)} keys the demo wrote to Redis.")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace, out: IO[str]) -> int:
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
        _print_json(report.to_dict(), out)
    else:
        out.write(render_demo(report) + "\n")
    return EXIT_OK


async def _guarded_demo(work: Awaitable[T], url: str | None) -> T:
    try:
        return await work
    except BackendError as exc:  # only with a strict cache; kept for clear reporting
        raise CLIError(f"cache backend failed: {_one_line(exc)}") from None
    except OSError as exc:
        where = f" ({redact_url(url)})" if url else ""
        raise CLIError(f"cache backend failed{where}: {_one_line(exc)}") from None


# -- stats ------------------------------------------------------------------------------


def render_fleet(stats: Any) -> str:
    """Return the fleet-wide per-layer table of a FleetStats."""
    header = (
        f"namespace {stats.namespace}: {stats.workers_alive} worker"
        f"{'' if stats.workers_alive == 1 else 's'} alive; fleet saved "
        f"{_seconds(stats.saved_seconds)} of loads and ${stats.saved_cost:.2f}"
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
            _seconds(s.mean_load_seconds),
            _seconds(s.saved_seconds),
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


async def _stats(args: argparse.Namespace, out: IO[str]) -> int:
    from aiotoolcache.fleet import fleet_stats

    url = _url(args)
    cache = open_cache(url, args.namespace)
    try:
        await _reach(cache, url)
        shown = 0
        while True:
            try:
                stats = await fleet_stats(cache)
            except BackendError as exc:
                raise CLIError(f"cannot read fleet stats: {_one_line(exc)}") from None
            if args.json:
                _print_json({"time": datetime.now(UTC).isoformat(), **stats.to_dict()}, out)
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


# -- invalidate ---------------------------------------------------------------------------


async def _invalidate(args: argparse.Namespace, out: IO[str]) -> int:
    url = _url(args)
    cache = open_cache(url, args.namespace)
    try:
        if args.layer is not None:
            cache.layer(args.layer)  # unknown layer: a one-line error before any write
        await _reach(cache, url)
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
            _print_json(
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
        raise CLIError(f"invalidation failed: {_one_line(exc)}") from None
    finally:
        await cache.aclose()


# -- doctor -------------------------------------------------------------------------------


class Checks:
    """Checks collects the doctor's findings: ok, warn or fail, with details."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, status: str, name: str, detail: str) -> None:
        self.items.append({"status": status, "check": name, "detail": detail})

    @property
    def failures(self) -> list[dict[str, str]]:
        return [item for item in self.items if item["status"] == "fail"]

    @property
    def warnings(self) -> list[dict[str, str]]:
        return [item for item in self.items if item["status"] == "warn"]


def _is_loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _doctor_checks(cache: Any, url: str, checks: Checks) -> None:
    client = cache.client
    parts = urlsplit(url)
    # 1. reachability and round trip
    rtt = await _reach(cache, url)
    samples = [rtt]
    for _ in range(4):
        started = time.perf_counter()
        await _call(cache, lambda: client.ping())
        samples.append(time.perf_counter() - started)
    median = statistics.median(samples)
    status = "ok" if median < 0.05 else "warn"
    checks.add(
        status,
        "round trip",
        f"{median * 1000:.2f} ms median of {len(samples)} PINGs"
        + ("" if status == "ok" else " (slow: cache calls have a 250 ms budget by default)"),
    )
    # 2. server
    try:
        server = await _call(cache, lambda: client.info("server"))
    except BackendError as exc:
        checks.add("warn", "server", f"INFO refused ({_one_line(exc)})")
        server = {}
    version = str(server.get("redis_version", "unknown"))
    mode = str(server.get("redis_mode", "unknown"))
    major = version.split(".")[0]
    if major.isdigit() and int(major) < 6:
        checks.add("warn", "server", f"Redis {version} ({mode}); 6.2 or newer is recommended")
    else:
        checks.add("ok", "server", f"Redis {version} ({mode})")
    # 3. TLS
    if parts.scheme == "rediss":
        checks.add("ok", "TLS", "on (rediss://)")
    elif parts.scheme == "unix" or _is_loopback(parts.hostname):
        checks.add("ok", "TLS", "off (local connection)")
    else:
        checks.add("warn", "TLS", "off: traffic to a remote Redis is not encrypted (use rediss://)")
    # 4. cluster mode
    try:
        cluster = await _call(cache, lambda: client.info("cluster"))
        enabled = str(cluster.get("cluster_enabled", "0")) == "1"
    except BackendError:
        enabled = False
    if enabled or mode == "cluster":
        checks.add(
            "fail",
            "cluster mode",
            "the server is a cluster node but the URL is not redis+cluster://",
        )
    else:
        checks.add("ok", "cluster mode", "standalone")
    # 5. eviction policy
    try:
        config = await _call(cache, lambda: client.config_get("maxmemory*"))
        policy = _text(config.get("maxmemory-policy", config.get(b"maxmemory-policy", "")))
        limit = _text(config.get("maxmemory", config.get(b"maxmemory", "0")))
        limit_text = "no limit" if limit in ("", "0") else f"maxmemory {int(limit):,} bytes"
        if policy == "noeviction":
            checks.add(
                "warn",
                "maxmemory-policy",
                f"noeviction ({limit_text}): when Redis fills up every cache write fails; "
                "use allkeys-lru or volatile-lru",
            )
        else:
            checks.add("ok", "maxmemory-policy", f"{policy} ({limit_text})")
    except BackendError as exc:
        checks.add(
            "warn",
            "maxmemory-policy",
            f"unknown, CONFIG GET refused ({_one_line(exc)}); make sure it is not noeviction",
        )
    # 6. read/write and scripting (leases run Lua scripts)
    probe = f"{cache.namespace}:doctor:{uuid.uuid4().hex}"
    try:
        await _call(cache, lambda: client.set(probe, b"ok", px=10_000))
        value = await _call(cache, lambda: client.get(probe))
        await _call(cache, lambda: client.delete(probe))
        if value == b"ok":
            checks.add("ok", "read/write", "SET PX, GET, DEL")
        else:
            checks.add("fail", "read/write", f"wrote b'ok' but read {value!r}")
    except BackendError as exc:
        checks.add("fail", "read/write", _one_line(exc))
    try:
        answer = await _call(cache, lambda: client.eval("return 7", 0))
        if answer == 7:
            checks.add("ok", "scripting", "EVAL works (leases use Lua scripts)")
        else:
            checks.add("fail", "scripting", f"EVAL returned {answer!r}")
    except BackendError as exc:
        checks.add("fail", "scripting", f"EVAL failed: {_one_line(exc)}")
    # 7. pub/sub round trip (invalidations travel over pub/sub)
    try:
        took = await _pubsub_round_trip(client, f"{cache.namespace}:doctor:{uuid.uuid4().hex}")
        checks.add("ok", "pub/sub", f"round trip {took * 1000:.2f} ms")
    except Exception as exc:  # any failure here means invalidations cannot travel
        checks.add("fail", "pub/sub", f"no round trip: {_one_line(exc)}")


async def _pubsub_round_trip(client: Any, channel: str, wait: float = 3.0) -> float:
    pubsub = client.pubsub()
    try:
        async with asyncio.timeout(wait):
            await pubsub.subscribe(channel)
            while True:
                reply = await pubsub.get_message(timeout=wait)
                if reply is not None and reply.get("type") == "subscribe":
                    break
            started = time.perf_counter()
            await client.publish(channel, b"ping")
            while True:
                reply = await pubsub.get_message(timeout=wait)
                if reply is not None and reply.get("type") == "message":
                    return time.perf_counter() - started
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _doctor(args: argparse.Namespace, out: IO[str]) -> int:
    url = _url(args)
    cache = open_cache(url, args.namespace)
    checks = Checks()
    try:
        await _doctor_checks(cache, url, checks)
    except CLIError as exc:
        if args.json:
            _print_json({"url": redact_url(url), "ok": False, "error": str(exc)}, out)
        raise
    finally:
        await cache.aclose()
    if args.json:
        _print_json(
            {
                "url": redact_url(url),
                "ok": not checks.failures,
                "warnings": len(checks.warnings),
                "checks": checks.items,
            },
            out,
        )
    else:
        out.write(f"aiotoolcache doctor: {redact_url(url)}\n")
        for item in checks.items:
            out.write(f"  {item['status']:<5} {item['check']:<17} {item['detail']}\n")
    if checks.failures:
        first = checks.failures[0]
        raise CLIError(f"{first['check']}: {first['detail']}")
    if checks.warnings and args.strict:
        first = checks.warnings[0]
        raise CLIError(f"warning treated as error: {first['check']}: {first['detail']}")
    return EXIT_OK


# -- inspect ------------------------------------------------------------------------------


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


async def _inspect(args: argparse.Namespace, out: IO[str]) -> int:
    from aiotoolcache.codec import CorruptValue
    from aiotoolcache.invalidation import RedisBus

    parts = [parse_key_part(part, args.raw) for part in args.keyparts]
    key, layer_name, label = resolve_key(parts, args.layer, args.label)
    url = _url(args)
    cache = open_cache(url, args.namespace, args.secret)
    try:
        layer = cache.layer(layer_name)
        await _reach(cache, url)
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

        data, ttl_ms, lease_ms = await _call(cache, read)
    except BackendError as exc:
        raise CLIError(f"cannot read the entry: {_one_line(exc)}") from None
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
        _print_json(report, out)
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
        rows.append(("redis ttl", "none" if ttl is None else _seconds(ttl)))
        rows.append(("size", f"{report['stored_bytes']} bytes stored"))
        if not report["readable"]:
            rows.append(("readable", f"no: {report['reason']}"))
        else:
            fresh = report["fresh_for_seconds"]
            rows += [
                ("age", f"{_seconds(report['age_seconds'])} (written {report['created_at']})"),
                (
                    "freshness",
                    f"fresh for {_seconds(fresh)}"
                    if fresh > 0
                    else f"stale for {_seconds(-fresh)}",
                ),
                ("payload", f"{report['payload_bytes']} bytes"),
                ("load time", _seconds(report["load_seconds"])),
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


# -- argument parsing ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from aiotoolcache import __version__

    parser = _Parser(
        prog=PROG,
        description="Async tiered cache for AI agents and MCP servers: demo, stats, "
        "invalidation, diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def connection(sub: argparse.ArgumentParser, namespace: bool = True) -> None:
        sub.add_argument("--url", help="cache URL (default: $AIOTOOLCACHE_URL)")
        if namespace:
            sub.add_argument(
                "--namespace", help="key namespace (default: $AIOTOOLCACHE_NAMESPACE or atc)"
            )
        sub.add_argument("--json", action="store_true", help="print JSON")

    demo = commands.add_parser(
        "demo", help="run a simulated agent without and with the cache and compare"
    )
    demo.add_argument("--requests", type=int, default=100, help="agent requests (100)")
    demo.add_argument("--distinct", type=int, default=20, help="distinct tasks asked (20)")
    demo.add_argument("--speed", type=float, default=50.0, help="latency speed-up (50)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed (7)")
    demo.add_argument("--concurrency", type=int, default=1, help="requests in parallel (1)")
    demo.add_argument("--servers", type=int, default=3, help="servers listed per request (3)")
    demo.add_argument("--url", help="use this Redis instead of the embedded cache")
    demo.add_argument("--namespace", help="namespace (default: a fresh one, removed after)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--json", action="store_true", help="print JSON")

    stats = commands.add_parser("stats", help="fleet-wide per-layer counters of a namespace")
    connection(stats)
    stats.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    stats.add_argument("--count", type=int, default=0, help="with --watch: stop after N")

    inv = commands.add_parser("invalidate", help="invalidate a layer, tag, server or all")
    connection(inv)
    target = inv.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", help="every entry of one layer")
    target.add_argument("--tag", action="append", help="every entry carrying TAG (repeatable)")
    target.add_argument("--server", help="everything cached about one tool server")
    target.add_argument("--all", action="store_true", help="everything in the namespace")

    doctor = commands.add_parser("doctor", help="check that a Redis suits the cache")
    connection(doctor)
    doctor.add_argument("--strict", action="store_true", help="exit 1 on warnings too")

    insp = commands.add_parser("inspect", help="show the entry of a key (never its value)")
    connection(insp)
    insp.add_argument("--layer", help="layer (implied for list_tools/search_tools/call_tool/embed)")
    insp.add_argument("--label", help="key label (implied for the domain helpers' keys)")
    insp.add_argument("--partition", help="partition (tenant) the entry was cached for")
    insp.add_argument("--secret", help="signing secret (default: $AIOTOOLCACHE_SECRET)")
    insp.add_argument("--raw", action="store_true", help="take every key part as a string")
    insp.add_argument(
        "keyparts", nargs="+", metavar="KEYPART", help="key parts; JSON values are parsed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "demo":
            return cmd_demo(args, out)
        runner = {
            "stats": _stats,
            "invalidate": _invalidate,
            "doctor": _doctor,
            "inspect": _inspect,
        }[args.command]
        return asyncio.run(runner(args, out))
    except CLIError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.status
    except ToolCacheError as exc:  # configuration: bad URL scheme, unknown layer, …
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "watch", None) else EXIT_INTERRUPTED
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return EXIT_ERROR
