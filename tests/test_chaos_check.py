"""The chaos checker's verdict counts what it says it counts, and its proxy injects the faults.

The verdict is checked on hand-written logs; the proxy in front of a local
echo server (it forwards any TCP, not only Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos_check import render_table, verdict  # noqa: E402
from benchmarks.chaos_support import FaultProxy  # noqa: E402


def records(reads: list[list[Any]], loads: list[list[Any]] | None = None) -> dict[str, Any]:
    # Key 7 became version 1 at t=1.0 (acknowledged at 1.01), version 2 at t=5.0 (refused).
    writes = [
        ["w", 1.0, 1.01, "set", [7], [1], True, None],
        ["w", 5.0, 5.3, "delete", [7], [2], False, "backend:BackendTimeout"],
    ]
    return {
        "w": writes,
        "r": [[*read, 1] for read in reads],
        "l": loads or [],
        "s": [["s", 0.0, 0, "closed", 0], ["s", 2.5, 2, "open", 0], ["s", 9.0, 3, "closed", 0]],
    }


PHASE = {"name": "p", "start": 0.0, "fault_start": 2.0, "fault_end": 3.0, "end": 10.0}


def test_a_read_older_than_an_acknowledged_write_is_stale_only_past_the_bound() -> None:
    reads = [
        ["r", 1.05, 1.06, 7, 0, "ok"],  # 40 ms after the ack: within the bound
        ["r", 1.21, 1.22, 7, 0, "ok"],  # 200 ms after: stale
        ["r", 3.50, 3.51, 7, 1, "ok"],  # current
    ]
    row = verdict(records(reads), [PHASE])["phases"][0]
    assert row["stale_beyond_bound"] == 1
    assert row["stale_after_fault"] == 0
    assert row["max_staleness_ms"] == 200
    assert row["stale_by_operation"] == {"set": 1}
    assert row["wrong_values"] == row["caller_errors"] == 0


def test_an_unacknowledged_write_never_makes_a_read_stale() -> None:
    reads = [["r", 6.0, 6.01, 7, 1, "ok"]]  # version 2 was never acknowledged
    row = verdict(records(reads), [PHASE])["phases"][0]
    assert row["stale_beyond_bound"] == 0


def test_garbage_and_versions_from_the_future_are_wrong_values() -> None:
    reads = [
        ["r", 0.5, 0.6, 7, None, "bad"],
        ["r", 0.5, 0.6, 7, 1, "ok"],  # version 1 is written only at t=1.0
        ["r", 0.5, 0.6, 7, -3, "ok"],
        ["r", 0.5, 0.6, 7, None, "TypeError"],
    ]
    row = verdict(records(reads), [PHASE])["phases"][0]
    assert row["wrong_values"] == 3
    assert row["caller_errors"] == 1


def test_heal_time_runs_to_the_last_read_that_was_not_current() -> None:
    reads = [
        ["r", 3.2, 3.3, 7, 0, "ok"],  # truth was version 1 since t=1.0: not current
        ["r", 4.0, 4.5, 7, 0, "ok"],
        ["r", 4.8, 4.9, 7, 1, "ok"],
        ["r", 9.7, 9.8, 7, 2, "ok"],  # acknowledged or not, version 2 is the truth
    ]
    row = verdict(records(reads), [PHASE])["phases"][0]
    assert row["heal_s"] == 1.5  # 4.5 - 3.0
    assert row["healed"] is True
    lagging = [*reads, ["r", 9.5, 9.6, 7, 1, "ok"]]  # truth 2 is 4.5 s old by then
    row = verdict(records(lagging), [PHASE])["phases"][0]
    assert row["heal_s"] == pytest.approx(6.6)
    assert row["healed"] is False


def test_a_read_during_a_slow_change_is_current_until_the_change_returns() -> None:
    writes = [["w", 1.0, 2.0, "layer", [7], [1], True, None]]  # one second in flight
    reads = [["r", 1.5, 1.6, 7, 0, "ok", 1], ["r", 2.5, 2.6, 7, 0, "ok", 1]]
    phase = {"name": "p", "start": 0.0, "fault_start": 1.0, "fault_end": 1.0, "end": 10.0}
    row = verdict({"w": writes, "r": reads, "l": [], "s": []}, [phase])["phases"][0]
    assert row["heal_s"] == pytest.approx(1.6)  # only the read at 2.5 lagged
    assert row["stale_beyond_bound"] == 1
    assert row["max_write_ms"] == 1000


def test_breaker_openings_and_loads_are_counted_within_the_phase() -> None:
    loads = [["l", 1.5, 7, 1, 1], ["l", 2.5, 7, 1, 2], ["l", 3.5, 8, 0, 1], ["l", 11.0, 8, 0, 1]]
    result = verdict(records([["r", 1.5, 1.6, 7, 1, "ok"]], loads), [PHASE])
    row = result["phases"][0]
    assert row["breaker_openings"] == 3
    assert (row["loads"], row["distinct_keys"], row["distinct_versions"]) == (3, 2, 2)
    assert "| p |" in render_table(result)


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def round_trip(port: int, payload: bytes, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), wait)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_the_proxy_forwards_refuses_when_partitioned_and_silences_after_a_drop() -> None:
    server, port = await echo_server()
    proxy = await FaultProxy(port).start()
    try:
        assert await round_trip(proxy.port, b"ping") == b"ping"
        proxy.partitioned = True
        assert await round_trip(proxy.port, b"ping") == b""  # closed at once
        assert proxy.refused == 1
        proxy.clear()
        proxy.drop = 1.0
        with pytest.raises(TimeoutError):
            await round_trip(proxy.port, b"ping", wait=0.3)
        assert proxy.dropped == 1
        proxy.clear()
        proxy.latency = 0.05
        assert await round_trip(proxy.port, b"late") == b"late"
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


async def test_the_writer_changes_nothing_once_the_conductor_moved_on(tmp_path: Path) -> None:
    # Readers may already read the next phase's namespace: a change made in the old one
    # would move the truth without reaching them, and count as their stale read.
    import multiprocessing
    import random

    import aiotoolcache as atc
    from benchmarks import chaos_workers

    truth = multiprocessing.Array("q", chaos_workers.KEYS)
    control = chaos_workers.Control(multiprocessing.Value("i", 3), multiprocessing.Array("i", [3]))
    log = chaos_workers.Recorder(tmp_path / "writer.jsonl")
    async with atc.ToolCache("memory://", namespace="writer-phase") as cache, aclosing_log(log):
        stopping = asyncio.Event()
        loop = chaos_workers._write_loop(cache, log, stopping, truth, random.Random(7), control, 3)
        task = asyncio.create_task(loop)
        await asyncio.sleep(0.3)
        control.phase.value = 4  # the conductor moves on; ``stopping`` is not set yet
        changed_at = sum(truth[:])
        await asyncio.wait_for(task, 2)  # it ends by itself
        assert sum(truth[:]) == changed_at  # no change after the phase moved on
        assert changed_at > 0  # it did write while the phase was its own


@contextlib.asynccontextmanager
async def aclosing_log(log: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        log.close()
