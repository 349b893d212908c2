"""``aiotoolcache doctor``: check that a Redis server suits the cache."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from typing import IO, Any
from urllib.parse import urlsplit

from aiotoolcache.cli.connection import (
    add_command,
    add_connection_options,
    cache_url,
    call,
    is_loopback,
    open_cache,
    reach,
)
from aiotoolcache.cli.output import (
    EXIT_ERROR,
    EXIT_OK,
    CLIError,
    Screen,
    one_line,
    print_json,
    redact_url,
)
from aiotoolcache.errors import BackendError
from aiotoolcache.server_info import ServerInfo, server_info
from aiotoolcache.urls import tls_verification_off

__all__ = ["Checks", "cmd_doctor", "register"]


def register(commands: Any) -> None:
    """Add ``doctor`` to the command line."""
    doctor = add_command(
        commands,
        "doctor",
        "check that a Redis suits the cache",
        "aiotoolcache doctor --url rediss://:PASSWORD@cache.internal:6380/0 --strict",
    )
    add_connection_options(doctor)
    doctor.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    doctor.set_defaults(run=cmd_doctor)


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


async def _doctor_checks(cache: Any, url: str, checks: Checks) -> None:
    client = cache.client
    parts = urlsplit(url)
    # 1. reachability and round trip
    rtt = await reach(cache, url)
    samples = [rtt]
    for _ in range(4):
        started = time.perf_counter()
        await call(cache, lambda: client.ping())
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
        server = await call(cache, lambda: client.info("server"))
    except BackendError as exc:
        checks.add("warn", "server", f"INFO refused ({one_line(exc)})")
        server = {}
    described = server_info(server) if server else None
    checks.add(*server_check(described))
    # 3. TLS
    opted_out = tls_verification_off(url) if parts.scheme.startswith("rediss") else None
    if opted_out:
        checks.add(
            "warn",
            "TLS",
            f"on, but the server's certificate is not verified ({opted_out} in the URL): "
            "anyone on the path can impersonate Redis",
        )
    elif parts.scheme == "rediss":
        checks.add("ok", "TLS", "on, certificate verified (rediss://)")
    elif parts.scheme == "unix" or is_loopback(parts.hostname):
        checks.add("ok", "TLS", "off (local connection)")
    else:
        checks.add("warn", "TLS", "off: traffic to a remote Redis is not encrypted (use rediss://)")
    # 4. cluster mode
    try:
        cluster = await call(cache, lambda: client.info("cluster"))
        enabled = str(cluster.get("cluster_enabled", "0")) == "1"
    except BackendError:
        enabled = False
    if enabled or (described is not None and described.mode == "cluster"):
        checks.add(
            "fail",
            "cluster mode",
            "the server is a cluster node but the URL is not redis+cluster://",
        )
    else:
        checks.add("ok", "cluster mode", "standalone")
    # 5. eviction policy
    try:
        config = await call(cache, lambda: client.config_get("maxmemory*"))
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
            f"unknown, CONFIG GET refused ({one_line(exc)}); make sure it is not noeviction",
        )
    # 6. read/write and scripting (leases run Lua scripts)
    probe = f"{cache.namespace}:doctor:{uuid.uuid4().hex}"
    try:
        await call(cache, lambda: client.set(probe, b"ok", px=10_000))
        value = await call(cache, lambda: client.get(probe))
        await call(cache, lambda: client.delete(probe))
        if value == b"ok":
            checks.add("ok", "read/write", "SET PX, GET, DEL")
        else:
            checks.add("fail", "read/write", f"wrote b'ok' but read {value!r}")
    except BackendError as exc:
        checks.add("fail", "read/write", one_line(exc))
    try:
        answer = await call(cache, lambda: client.eval("return 7", 0))
        if answer == 7:
            checks.add("ok", "scripting", "EVAL works (leases use Lua scripts)")
        else:
            checks.add("fail", "scripting", f"EVAL returned {answer!r}")
    except BackendError as exc:
        checks.add("fail", "scripting", f"EVAL failed: {one_line(exc)}")
    # 7. pub/sub round trip (invalidations travel over pub/sub)
    try:
        took = await _pubsub_round_trip(client, f"{cache.namespace}:doctor:{uuid.uuid4().hex}")
        checks.add("ok", "pub/sub", f"round trip {took * 1000:.2f} ms")
    except Exception as exc:  # any failure here means invalidations cannot travel
        checks.add("fail", "pub/sub", f"no round trip: {one_line(exc)}")


def server_check(server: ServerInfo | None) -> tuple[str, str, str]:
    """The doctor's verdict on a server: (status, check name, detail).

    The detail names the flavour, version and mode, and which commands that save
    round trips the server has.
    """
    if server is None or server.version == (0, 0, 0):
        return ("warn", "server", "flavour and version unknown (INFO server said nothing usable)")
    if not server.set_nx_get:
        return (
            "warn",
            "server",
            f"{server.describe()}; Redis 7.0 or newer is recommended: older servers refuse "
            "SET with both NX and GET, so a miss takes its lease through a script "
            "(more Redis commands per miss)",
        )
    return ("ok", "server", server.describe())


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


async def cmd_doctor(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``aiotoolcache doctor``; return the exit status."""
    url = cache_url(args)
    cache = open_cache(url, args.namespace)
    checks = Checks()
    screen = Screen(out)
    try:
        with screen.status(f"checking {redact_url(url)}…"):
            await _doctor_checks(cache, url, checks)
    finally:
        await cache.aclose()
    problem = None
    if checks.failures:
        first = checks.failures[0]
        problem = f"{first['check']}: {first['detail']}"
    elif checks.warnings and args.strict:
        first = checks.warnings[0]
        problem = f"warning treated as error: {first['check']}: {first['detail']}"
    report = {"url": redact_url(url), "warnings": len(checks.warnings), "checks": checks.items}
    if not args.json:
        _show(report, screen)
    if problem is not None:
        # main() prints the error (stderr, and the JSON document with these details).
        raise CLIError(problem, EXIT_ERROR, kind="DoctorCheckFailed", details=report)
    if args.json:
        print_json({"ok": True, "exit_code": EXIT_OK, **report}, out)
    return EXIT_OK


def _show(report: dict[str, Any], screen: Screen) -> None:
    screen.line(f"aiotoolcache doctor: {report['url']}", "bold")
    if not screen.rich:
        for item in report["checks"]:
            screen.line(f"  {item['status']:<5} {item['check']:<17} {item['detail']}")
        return
    rows = [[item["status"], item["check"], item["detail"]] for item in report["checks"]]
    screen.table(["status", "check", "detail"], rows, "lll", status_column=0)
