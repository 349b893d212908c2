"""Regenerate the command-line screenshots in docs/img/ from real runs.

    python docs/screenshots.py

Starts a private redis-server on a free loopback port, lets two workers run
the demo's simulated agent on it (namespace ``prod``), then runs the real
``aiotoolcache stats``, ``aiotoolcache inspect`` and ``aiotoolcache demo
--workers 3`` commands with a recording rich console, and exports what they
printed as SVG files. Needs redis-server and the ``cli`` extra (rich).
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from aiotoolcache.cli import main  # noqa: E402
from aiotoolcache.cli.output import Screen  # noqa: E402

OUT = ROOT / "docs" / "img"
WIDTH = 118


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record(name: str, title: str, argv: list[str]) -> None:
    """Run the command line with a recording console; save what it printed as SVG."""
    console = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True)

    def factory(out: IO[str]) -> Any:
        return console

    Screen.console_factory = factory
    try:
        status = main(argv)
    finally:
        Screen.console_factory = None
    assert status in (0, 3), f"{argv} exited {status}"
    console.save_svg(str(OUT / f"{name}.svg"), title=title)
    print(f"wrote docs/img/{name}.svg")


def run_workers(url: str, ready: threading.Event, done: threading.Event, found: dict[str, Any]):
    """Two workers answer the demo's workload on ``url`` and stay alive until ``done``."""
    import aiotoolcache as atc
    from aiotoolcache.demo import DemoConfig, demo_layers, make_workload, run_workload

    async def work() -> None:
        config = DemoConfig(requests=60, distinct=12, speed=200)
        tasks, order = make_workload(config)
        layers = demo_layers(config)
        async with (
            atc.ToolCache(url, namespace="prod", layers=layers) as first,
            atc.ToolCache(url, namespace="prod", layers=layers) as second,
        ):
            runs = await asyncio.gather(
                run_workload("a", config, tasks, order, first, None),
                run_workload("b", config, tasks, order[::-1], second, None),
            )
            server, _, tool = runs[0].answers[0].split("|")[0].split(",")[0].partition(".")
            found.update(server=server, tool=tool, arguments=tasks[order[0]].arguments)
            await asyncio.sleep(0.5)  # both reporters have flushed once: two workers alive
            for cache in (first, second):
                await cache._fleet.flush()  # type: ignore[union-attr]
            ready.set()
            await asyncio.to_thread(done.wait)  # stay alive while the commands run

    asyncio.run(work())


def main_script() -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="atc-screenshots-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    ready, done, found = threading.Event(), threading.Event(), {}
    time.sleep(0.3)
    workers = threading.Thread(target=run_workers, args=(url, ready, done, found))
    workers.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the workers did not finish their workload")
        record("cli-stats", "aiotoolcache stats", ["stats", "--url", url, "--namespace", "prod"])
        key = ["call_tool", found["server"], found["tool"], json.dumps(found["arguments"])]
        record(
            "cli-inspect",
            "aiotoolcache inspect",
            ["inspect", "--url", url, "--namespace", "prod", *key],
        )
    finally:
        done.set()
        workers.join()
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    record("demo-workers", "aiotoolcache demo --workers 3", ["demo", "--workers", "3"])


if __name__ == "__main__":
    main_script()
