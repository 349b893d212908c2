"""A run killed mid-record leaves a valid cassette, and ``mode="new"`` resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiotoolcache as atc
from aiotoolcache.tape import read_tape

ROOT = Path(__file__).resolve().parents[1]

# Records steps 0, 1, 2…; the loader of step ``hang`` says so and never returns.
RECORDER = """
import asyncio, sys
import aiotoolcache as atc

async def main(path, hang):
    async with atc.ToolCache(cassette=path, mode=sys.argv[3]) as cache:
        step = 0
        while True:
            async def load(step=step):
                if step == hang:
                    print("hanging", flush=True)
                    await asyncio.sleep(3600)
                return {"step": step, "payload": "x" * 200}
            await cache.call_tool("agent", "step", {"n": step}, load)
            step += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def recorder(path: Path, hang: int, mode: str = "record") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AIOTOOLCACHE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(path), str(hang), mode],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert process.stdout is not None
    process.stdout.close()


def test_a_kill_between_calls_keeps_every_completed_call(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    process = recorder(path, hang=4)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "hanging"
    kill(process)
    tape = read_tape(path)
    assert [entry["arguments"] for entry in tape.entries] == [{"n": n} for n in range(4)]
    assert tape.valid_bytes == path.stat().st_size


def test_a_kill_at_any_moment_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    process = recorder(path, hang=-1)  # never hangs: killed while writing fast
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < 20_000) and time.monotonic() < deadline:
        time.sleep(0.01)
    kill(process)
    tape = read_tape(path)
    assert len(tape.entries) > 20
    assert [entry["seq"] for entry in tape.entries] == list(range(len(tape.entries)))
    # Whatever follows the last complete line (a write the kill tore) is ignored.
    raw = path.read_bytes()[: tape.valid_bytes]
    assert all(json.loads(line) for line in raw.splitlines())


async def test_new_mode_replays_the_completed_calls_and_runs_only_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.jsonl"
    process = recorder(path, hang=3)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "hanging"
    kill(process)

    ran: list[int] = []

    def step(n: int) -> Any:
        async def load() -> dict[str, Any]:
            ran.append(n)
            return {"step": n, "resumed": True}

        return load

    async with atc.ToolCache(cassette=path, mode="new") as cache:
        results = [await cache.call_tool("agent", "step", {"n": n}, step(n)) for n in range(6)]
    assert ran == [3, 4, 5]
    assert [r.get("resumed", False) for r in results] == [False] * 3 + [True] * 3
    assert [entry["seq"] for entry in read_tape(path).entries] == list(range(6))
