"""Measurement helpers shared by the benchmark scripts: Redis counters, the machine, hiredis.

``RedisCounters`` reads a spawned redis-server's ``INFO commandstats`` (commands run
inside scripts are counted there too, under their own names) and ``INFO cpu``; the
``INFO`` and ``CONFIG`` calls made to read them are left out of every delta.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Commands the measurement itself sends: never charged to the code under test.
OWN_COMMANDS = frozenset({"info", "config", "config|resetstat", "config|get", "config|set"})


@dataclass(frozen=True)
class Snapshot:
    """Snapshot is one reading of a Redis server's command counts and CPU seconds."""

    calls: dict[str, int]
    cpu: float  # used_cpu_user + used_cpu_sys, seconds

    def since(self, before: Snapshot) -> tuple[dict[str, int], float]:
        """Return (commands run, CPU seconds used) between ``before`` and this snapshot."""
        delta = {k: v - before.calls.get(k, 0) for k, v in self.calls.items()}
        return {k: v for k, v in delta.items() if v}, self.cpu - before.cpu


def snapshot(client: Any) -> Snapshot:
    """Read ``INFO commandstats`` and ``INFO cpu`` with a synchronous redis-py client."""
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    calls = {}
    for name, row in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in OWN_COMMANDS:
            calls[command] = int(row["calls"])
    return Snapshot(calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def hiredis_in_use() -> bool:
    """True when redis-py parses replies with hiredis (its fastest documented parser)."""
    from redis.asyncio.connection import Connection
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        return False
    parser = Connection(host="127.0.0.1", port=1)._parser
    return "Hiredis" in type(parser).__name__


def source_revision() -> str:
    """Return the commit the working tree is at, with ``-dirty`` if it has changes."""
    try:
        run = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return run.stdout.strip() or "unknown"


def machine() -> str:
    """Describe this machine: CPU count and model, OS and Python."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc), {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
