"""The demo with several worker processes sharing one Redis: ``aiotoolcache demo --workers 3``.

Each worker is a separate Python process with its own ToolCache on the same
Redis and namespace. All of them answer the same seeded workload at the same
time, so the fleet shows what one process cannot: values one worker loaded
served to the others from L2, loads coalesced across processes (a worker waits
for another's fill instead of loading again), and an invalidation sent by a
coordinator reaching every worker through pub/sub.

Every request of every worker is exactly one of: an L1 hit, an L2 hit, a
coalesced request (it shared a load that was already running, in this
process or in another worker), or a load. Workers report their counters as
JSON lines on stdout; the coordinator reads them and never guesses.

Without ``--url``, a private server is started on a free loopback port (and
stopped afterwards): ``redis-server`` when it is on the PATH, else the bundled
``valkey-server`` (see ``aiotoolcache.local_server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiotoolcache.demo import STEPS, DemoConfig, demo_layers, make_workload, run_workload
from aiotoolcache.fleet import no_reporting_options
from aiotoolcache.toolcache import ToolCache, server_tag

__all__ = [
    "FleetDemoReport",
    "LayerRow",
    "WorkerReport",
    "private_redis",
    "run_fleet_demo",
]

INVALIDATION_WAIT = 10.0  # seconds a worker waits to hear the coordinator's invalidation
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def private_redis(binary: str) -> AsyncIterator[str]:
    """Run a throw-away server (redis-server or valkey-server) on a free loopback port.

    Yield its URL; stop it after.
    """
    from redis.asyncio import Redis

    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="atc-demo-redis-")
    process = await asyncio.create_subprocess_exec(
        *[binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        *["--dir", workdir, "--logfile", os.path.join(workdir, "redis.log")],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.ping()
                    break
                except Exception:  # not listening yet (connection refused)
                    if process.returncode is not None or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class LayerRow:
    """LayerRow is what one layer did for some requests; the four outcomes add up to them."""

    requests: int = 0
    l1_hits: int = 0
    l2_hits: int = 0
    coalesced: int = 0
    loads: int = 0
    backend_errors: int = 0

    @property
    def hit_rate(self) -> float:
        return (self.l1_hits + self.l2_hits) / self.requests if self.requests else 0.0

    @property
    def adds_up(self) -> bool:
        return self.l1_hits + self.l2_hits + self.coalesced + self.loads == self.requests

    def __add__(self, other: LayerRow) -> LayerRow:
        return LayerRow(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


def _values(row: LayerRow) -> tuple[int, ...]:
    return tuple(asdict(row).values())


@dataclass(slots=True)
class WorkerReport:
    """WorkerReport is one worker process's account of the run."""

    index: int
    pid: int
    layers: dict[str, LayerRow] = field(default_factory=dict)
    loader_calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    invalidation_seen_after: float | None = None  # seconds after the coordinator sent it
    reloaded_after_invalidation: bool | None = None  # this worker ran the loader again

    @property
    def total(self) -> LayerRow:
        return sum(self.layers.values(), LayerRow())


@dataclass(slots=True)
class FleetDemoReport:
    """FleetDemoReport is the whole fleet's run: each worker's report and where Redis was."""

    config: DemoConfig
    workers: list[WorkerReport]
    redis: str  # "private redis-server on …" or the masked URL
    invalidated_server: str
    reachable: bool

    def layer_totals(self) -> dict[str, LayerRow]:
        totals: dict[str, LayerRow] = {}
        for worker in self.workers:
            for name, row in worker.layers.items():
                totals[name] = totals.get(name, LayerRow()) + row
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": [
                {**asdict(w), "layers": {n: asdict(r) for n, r in w.layers.items()}}
                for w in self.workers
            ],
            "layers": {name: asdict(row) for name, row in self.layer_totals().items()},
            "redis": self.redis,
            "redis_reachable": self.reachable,
            "invalidated_server": self.invalidated_server,
            "invalidation_seen_by": sum(
                w.invalidation_seen_after is not None for w in self.workers
            ),
        }


def _requests_per_layer(config: DemoConfig) -> dict[str, int]:
    # The agent looks each layer up this many times per request (discovery: once per server).
    per_request = {"discovery": config.servers_per_request}
    return {
        layer: config.requests * per_request.get(step, 1) for step, (layer, _, _) in STEPS.items()
    }


def _layer_row(stats: dict[str, Any], requests: int) -> LayerRow:
    remote = int(stats.get("remote_coalesced", 0))
    # A request that waited for another worker's fill first counted as a miss here.
    return LayerRow(
        requests=requests,
        l1_hits=int(stats.get("l1_hits", 0)),
        l2_hits=int(stats.get("l2_hits", 0)),
        coalesced=int(stats.get("coalesced", 0)) + remote,
        loads=int(stats.get("misses", 0)) - remote,
        backend_errors=int(stats.get("backend_errors", 0)),
    )


async def _worker(url: str, namespace: str, index: int, config: DemoConfig, server: str) -> None:
    """One worker process: run the workload, then wait for the coordinator's invalidation."""
    tasks, order = make_workload(config)
    cache = ToolCache(
        url, namespace=namespace, layers=demo_layers(config), **no_reporting_options()
    )

    def say(event: str, **data: Any) -> None:
        print(json.dumps({"event": event, "index": index, "pid": os.getpid(), **data}), flush=True)

    async with cache:
        say("ready")
        await asyncio.to_thread(sys.stdin.readline)  # "go": every worker starts together
        # Staggered by a few requests' time: later workers find some values in Redis
        # already (L2 hits) and others still loading elsewhere (coalesced).
        await asyncio.sleep((index - 1) * 4 * config.request_seconds / config.speed)
        run = await run_workload(f"worker {index}", config, tasks, order, cache, None)
        requests = _requests_per_layer(config)
        layers = {
            name: asdict(_layer_row(s.to_dict(), requests[name]))
            for name, s in cache.stats().layers.items()
            if name in requests
        }
        field_name = f"tag:{server_tag(server)}"
        before = cache.bus.generation(field_name)
        say("done", layers=layers, loader_calls=run.calls, seconds=run.wall_seconds)
        seen_at = None
        deadline = time.monotonic() + INVALIDATION_WAIT
        while time.monotonic() < deadline:
            if cache.bus.generation(field_name) != before:
                seen_at = time.time()
                break
            await asyncio.sleep(0.002)
        reloaded = None
        if seen_at is not None:
            loads = 0

            async def list_tools() -> list[str]:
                nonlocal loads
                loads += 1
                await asyncio.sleep(config.step_seconds("discovery") / config.speed)
                return [f"{server}.tool"]

            await cache.list_tools(server, list_tools)
            reloaded = loads > 0
        say("seen", seen_at=seen_at, reloaded=reloaded)


async def _answers(cache: ToolCache) -> bool:
    """True when the cache's Redis answers a PING within a second."""
    client = cache.client
    if client is None:
        return False
    try:
        await cache.breaker.call(lambda: client.ping(), budget=1.0)
    except Exception:  # any failure means: not reachable; the report says so
        return False
    return True


async def _read_event(process: asyncio.subprocess.Process, expected: str) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"a demo worker exited before reporting {expected!r}")
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            continue  # anything else a worker prints is not part of the protocol
        if event.get("event") == expected:
            return event


async def run_fleet_demo(
    config: DemoConfig, workers: int, url: str, redis_label: str
) -> FleetDemoReport:
    """Run ``workers`` worker processes on ``url``; return what each of them counted."""
    from aiotoolcache.urls import mask_url

    tasks, order = make_workload(config)
    server = tasks[order[0]].servers[0]  # the most asked-about server
    namespace = config.namespace or f"atc-demo-{uuid.uuid4().hex[:8]}"
    settings = json.dumps({**asdict(config), "url": None, "namespace": None})
    # The workers import this very copy of the package, installed or not.
    package_root = str(_PACKAGE_ROOT)
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiotoolcache.demo_fleet",
            url,
            namespace,
            str(index),
            server,
            settings,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for index in range(1, workers + 1)
    ]
    coordinator = ToolCache(url, namespace=namespace, **no_reporting_options())
    reports: list[WorkerReport] = []
    try:
        async with asyncio.timeout(120):
            for process in processes:
                await _read_event(process, "ready")
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            done = [await _read_event(process, "done") for process in processes]
            async with coordinator:
                sent_at = time.time()
                await coordinator.invalidate_server(server)
                reachable = await _answers(coordinator)
                seen = [await _read_event(process, "seen") for process in processes]
                if reachable and coordinator.client is not None:
                    from aiotoolcache.purge import purge_namespace

                    if config.namespace is None:  # a namespace of our own: leave nothing behind
                        with contextlib.suppress(Exception):
                            await purge_namespace(coordinator.client, namespace)
            for process in processes:
                await process.wait()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for first, last in zip(done, seen, strict=True):
        seen_at = last.get("seen_at")
        reports.append(
            WorkerReport(
                index=int(first["index"]),
                pid=int(first["pid"]),
                layers={name: LayerRow(**row) for name, row in first["layers"].items()},
                loader_calls=dict(first["loader_calls"]),
                seconds=float(first["seconds"]),
                invalidation_seen_after=None if seen_at is None else max(0.0, seen_at - sent_at),
                reloaded_after_invalidation=last.get("reloaded"),
            )
        )
    errors = sum(w.total.backend_errors for w in reports)
    return FleetDemoReport(
        config=config,
        workers=reports,
        redis=redis_label or mask_url(url),
        invalidated_server=server,
        reachable=reachable and errors == 0,
    )


def main(argv: list[str]) -> None:
    """Entry point of one worker process (started by :func:`run_fleet_demo`)."""
    url, namespace, index, server, settings = argv
    config = DemoConfig(**json.loads(settings))
    asyncio.run(_worker(url, namespace, int(index), config, server))


if __name__ == "__main__":
    main(sys.argv[1:])
