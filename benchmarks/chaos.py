"""Chaos checker: do workers stay coherent while Redis crashes, freezes, forgets and lags?

Run: python benchmarks/chaos.py [--short] [--keep] [--cluster | --sentinel]
     [--soak 20m --plot docs/img/chaos-soak.png]

It starts its own redis-server on a free loopback port and two fault proxies in
front of it (one for the writer, one for the readers), then one writer process
and three reader processes, each with its own ``ToolCache.from_url(<proxy>)``
in one namespace (see ``chaos_workers`` for the workload). A fault-free control
phase comes first, then one phase per fault:

- ``sigkill``: SIGKILL, down for 1 s, restarted empty;
- ``sigstop``: SIGSTOP for 5 s, then SIGCONT;
- ``client_kill``: CLIENT KILL of every reader connection;
- ``flushall``: FLUSHALL;
- ``noeviction``: maxmemory below the memory in use, policy noeviction, for 5 s;
- ``eviction``: maxmemory 2 MB above the memory in use, policy allkeys-lru, and
  a filler writing 8 KB values for 5 s;
- ``latency``: +200 ms on every reply, for the writer and the readers, 5 s;
- ``drops``: 30 % of replies dropped (a dropped reply silences its connection
  until the client gives up on it), for the writer and the readers, 5 s;
- ``partition``: the readers cut off from Redis for 4 s (the writer is not).

Each phase starts every worker on a fresh cache in a namespace of its own
(so what a fault leaves broken shows in its own row, not in every later one),
then runs a 1 s lead-in, the fault, and a recovery window (6 s; 3 s in the
short schedule). It prints one table row per phase (``chaos_check`` defines
every column) and, as its last line, one JSON object with all the figures.
``--short`` runs the control phase and four faults (flushall, client_kill,
sigkill, a 2 s partition), about 30 s in all; the full schedule takes about
two and a half minutes.

``--only drops,sigkill`` runs only the named faults (a loop of one fault, with
``--soak`` and ``--keep``, to chase a rare race). ``--cluster`` and
``--sentinel`` run the failover schedules of
``chaos_distributed`` instead, on a local cluster of 3 primaries and 3
replicas or on a primary, a replica and 3 sentinels, with the workers
connected directly. ``--soak DURATION`` loops the faults until DURATION has
passed, samples each worker's resources (see ``chaos_soak``), prints one row
per fault over all rounds, and with ``--plot`` draws the resource curves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from benchmarks import chaos_distributed, chaos_workers  # noqa: E402
from benchmarks.chaos_check import load_records, render_table, verdict  # noqa: E402
from benchmarks.chaos_soak import merge_rounds, parse_duration, server_name, soak_summary  # noqa: E402
from benchmarks.chaos_support import Action, Fault, FaultProxy, nothing  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

READERS = 3
FILLER_VALUE = b"x" * 8192


@dataclass
class Rig:
    """Rig is what a fault acts on: the Redis process and the two proxies in front of it."""

    server: RedisServer
    writer_link: FaultProxy
    reader_link: FaultProxy
    filler: asyncio.Task[None] | None = None

    def admin(self) -> aioredis.Redis:
        """A direct client (no proxy) for injecting faults.

        Its close is bounded too (redis-py bounds it by the connect timeout): a
        filler cancelled mid-write closes a socket whose unsent buffer may never
        drain (the likeliest cause of a soak that once stalled in its eviction
        phase, with every task idle).
        """
        return aioredis.Redis(
            host="127.0.0.1", port=self.server.port, socket_timeout=2, socket_connect_timeout=2
        )


async def sigkill(rig: Rig) -> None:
    rig.server.kill()


async def restart(rig: Rig) -> None:
    await asyncio.to_thread(rig.server.start)


async def sigstop(rig: Rig) -> None:
    rig.server.pause()


async def sigcont(rig: Rig) -> None:
    rig.server.resume()


async def client_kill(rig: Rig) -> None:
    async with rig.admin() as admin:
        for address in rig.reader_link.upstream_addresses():
            try:
                await admin.client_kill(address)
            except aioredis.ResponseError:
                pass  # it closed meanwhile


async def flushall(rig: Rig) -> None:
    async with rig.admin() as admin:
        await admin.flushall()


async def memory_full(rig: Rig) -> None:
    async with rig.admin() as admin:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")


async def memory_unlimited(rig: Rig) -> None:
    if rig.filler is not None:
        rig.filler.cancel()
        await asyncio.gather(rig.filler, return_exceptions=True)
        rig.filler = None
    async with rig.admin() as admin:
        await admin.config_set("maxmemory", "0")
        await admin.config_set("maxmemory-policy", "noeviction")
        async for key in admin.scan_iter(match="chaos-filler:*", count=1000):
            await admin.unlink(key)


async def eviction_pressure(rig: Rig) -> None:
    async with rig.admin() as admin:
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory-policy", "allkeys-lru")
        await admin.config_set("maxmemory", str(used + 2 * 2**20))
    rig.filler = asyncio.create_task(fill(rig))


async def fill(rig: Rig) -> None:
    """Write 8 KB values, about 3 MB a second, so Redis keeps evicting."""
    async with rig.admin() as admin:
        n = 0
        while True:
            async with admin.pipeline(transaction=False) as pipe:
                for _ in range(20):
                    pipe.set(f"chaos-filler:{n}", FILLER_VALUE, ex=30)
                    n += 1
                await pipe.execute()
            await asyncio.sleep(0.05)


def link_fault(readers_only: bool = False, **faults: Any) -> tuple[Action, Action]:
    def links(rig: Rig) -> list[FaultProxy]:
        return [rig.reader_link] if readers_only else [rig.reader_link, rig.writer_link]

    async def inject(rig: Rig) -> None:
        for link in links(rig):
            for name, value in faults.items():
                setattr(link, name, value)

    async def heal(rig: Rig) -> None:
        for link in links(rig):
            link.clear()

    return inject, heal


def schedule(short: bool) -> tuple[float, float, float, list[Fault]]:
    """Return (control seconds, lead-in, recovery window, faults) for a run."""
    cut, reconnect = link_fault(readers_only=True, partitioned=True)
    if short:
        faults = [
            Fault("flushall", flushall, 0),
            Fault("client_kill", client_kill, 0),
            Fault("sigkill", sigkill, 1, restart),
            Fault("partition", cut, 2, reconnect),
        ]
        return 3.0, 1.0, 3.0, faults
    latency_on, latency_off = link_fault(latency=0.2)
    drops_on, drops_off = link_fault(drop=0.3)
    faults = [
        Fault("sigkill", sigkill, 1, restart),
        Fault("sigstop", sigstop, 5, sigcont),
        Fault("client_kill", client_kill, 0),
        Fault("flushall", flushall, 0),
        Fault("noeviction", memory_full, 5, memory_unlimited),
        Fault("eviction", eviction_pressure, 5, memory_unlimited),
        Fault("latency", latency_on, 5, latency_off),
        Fault("drops", drops_on, 5, drops_off),
        Fault("partition", cut, 4, reconnect),
    ]
    return 6.0, 1.0, 6.0, faults


def say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


class Conductor:
    """Conductor moves every worker into the next phase, and its fresh namespace, together."""

    def __init__(self, control: chaos_workers.Control, processes: list[Any]) -> None:
        self.control = control
        self.processes = processes

    async def enter(self, phase: int, within: float = 30.0) -> None:
        self.control.phase.value = phase
        deadline = time.monotonic() + within
        while any(done != phase for done in self.control.switched[:]):
            if time.monotonic() > deadline or not all(p.is_alive() for p in self.processes):
                raise RuntimeError(f"the workers did not reach phase {phase}")
            await asyncio.sleep(0.02)


Schedule = tuple[float, float, float, list[Fault]]


async def run_phases(
    rig: Any, conductor: Conductor, plan: Schedule, rounds_until: float | None = None
) -> list[dict[str, Any]]:
    """Run the control phase and every fault of ``plan``; with ``rounds_until`` (a
    monotonic deadline), run the faults again and again until it passes (a soak)."""
    control, lead, recovery, faults = plan
    phases: list[dict[str, Any]] = []
    steps: list[Fault | None] = [None, *faults]
    index = 0
    while index < len(steps) or (rounds_until is not None and time.monotonic() < rounds_until):
        fault = steps[index] if index < len(steps) else faults[(index - 1) % len(faults)]
        name = "control" if fault is None else fault.name
        say(name)
        start = time.monotonic()
        if phases and "end" not in phases[-1]:
            phases[-1]["end"] = start
        await conductor.enter(index, within=60 if fault is None else 30)
        index += 1
        if fault is None:  # no fault: heal time counts from the moment all are up
            now = time.monotonic()
            phases.append({"name": name, "start": start, "fault_start": now, "fault_end": now})
            await asyncio.sleep(control)
            continue
        await asyncio.sleep(lead)
        fault_start = time.monotonic()
        await fault.inject(rig)
        await asyncio.sleep(fault.hold)
        await fault.heal(rig)
        phase = {"name": name, "start": start, "fault_start": fault_start}
        phase["fault_end"] = time.monotonic()
        phases.append(phase)
        await asyncio.sleep(recovery)
        if fault.tidy is not nothing:
            phase["end"] = time.monotonic()
            await fault.tidy(rig)
    if "end" not in phases[-1]:
        phases[-1]["end"] = time.monotonic()
    return phases


async def start_rig(deployment: str) -> tuple[Any, list[str]]:
    """Start the servers; return the rig and the URL of the writer and of the readers."""
    if deployment == "cluster":
        rig: Any = await chaos_distributed.start_cluster()
        return rig, [rig.url, rig.url]
    if deployment == "sentinel":
        rig = await chaos_distributed.start_sentinel()
        return rig, [rig.url, rig.url]
    server = await asyncio.to_thread(RedisServer().start)
    writer_link = await FaultProxy(server.port, seed=1).start()
    reader_link = await FaultProxy(server.port, seed=2).start()
    return Rig(server, writer_link, reader_link), [writer_link.url, reader_link.url]


async def stop_rig(rig: Any) -> None:
    if isinstance(rig, Rig):
        if rig.filler is not None:
            rig.filler.cancel()
        await rig.reader_link.close()
        await rig.writer_link.close()
        rig.server.stop()
    else:
        await asyncio.to_thread(rig.stop)


def plan_for(deployment: str, short: bool, only: Sequence[str] = ()) -> Schedule:
    if deployment == "cluster":
        plan = chaos_distributed.cluster_schedule(short)
    elif deployment == "sentinel":
        plan = chaos_distributed.sentinel_schedule(short)
    else:
        plan = schedule(short)
    if not only:
        return plan
    control, lead, recovery, faults = plan
    unknown = set(only) - {fault.name for fault in faults}
    if unknown:
        raise SystemExit(f"no such fault: {', '.join(sorted(unknown))}")
    return control, lead, recovery, [fault for fault in faults if fault.name in only]


async def run(
    short: bool,
    workdir: Path,
    options: dict[str, Any],
    deployment: str = "single",
    soak_seconds: float | None = None,
    only: Sequence[str] = (),
) -> list[dict[str, Any]]:
    rig, (writer_url, reader_url) = await start_rig(deployment)
    # `kill -USR1 <pid>` prints where every task of the checker waits (a run that stalls).
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, print_tasks)
    spawn = multiprocessing.get_context("spawn")
    truth = spawn.Array("q", chaos_workers.KEYS)
    roles = [("writer", chaos_workers.run_writer, writer_url)]
    roles += [(f"reader{i}", chaos_workers.run_reader, reader_url) for i in range(READERS)]
    control = chaos_workers.Control(spawn.Value("i", -1), spawn.Array("i", [-1] * len(roles)))
    processes = []
    try:
        for index, (name, target, url) in enumerate(roles):
            config = {
                "url": url,
                "namespace": f"chaos{os.getpid()}",
                "index": index,
                "out": str(workdir / f"{name}.jsonl"),
                "log_file": str(workdir / f"{name}.log"),
                "seed": 1000 + index,
                "options": options,
                "resources": soak_seconds is not None,
            }
            process = spawn.Process(target=target, args=(config, truth, control), name=name)
            process.start()
            processes.append(process)
        until = None if soak_seconds is None else time.monotonic() + soak_seconds
        plan = plan_for(deployment, short, only)
        return await run_phases(rig, Conductor(control, processes), plan, until)
    finally:
        control.phase.value = -1
        for process in processes:
            await asyncio.to_thread(process.join, 15)
            if process.is_alive():
                process.kill()
                process.join()
        await stop_rig(rig)


def print_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="control and four faults, ~30 s")
    parser.add_argument("--keep", action="store_true", help="keep the workers' logs")
    parser.add_argument(
        "--health-interval",
        type=float,
        help="the workers' ToolCache(health_interval=...): silence for two drops the subscriber",
    )
    parser.add_argument(
        "--max-staleness",
        type=float,
        help="the workers' ToolCache(max_staleness=...): how long L1 is trusted after a ping",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster", action="store_true", help="a local cluster of 3 primaries and 3 replicas"
    )
    where.add_argument(
        "--sentinel", action="store_true", help="a primary, a replica and 3 sentinels"
    )
    parser.add_argument(
        "--soak",
        metavar="DURATION",
        help="loop the faults for DURATION (20m, 90s) and sample each worker's resources",
    )
    parser.add_argument("--plot", type=Path, help="with --soak: write the resource curves here")
    parser.add_argument(
        "--only", metavar="FAULTS", default="", help="comma-separated: run only these faults"
    )
    args = parser.parse_args()
    deployment = "cluster" if args.cluster else "sentinel" if args.sentinel else "single"
    soak = None if args.soak is None else parse_duration(args.soak)
    options: dict[str, float] = {}
    if args.health_interval is not None:
        options["health_interval"] = args.health_interval
    if args.max_staleness is not None:
        options["max_staleness"] = args.max_staleness
    workdir = Path(tempfile.mkdtemp(prefix="atc-chaos-run-"))
    try:
        only = [name for name in args.only.split(",") if name]
        phases = asyncio.run(run(args.short, workdir, options, deployment, soak, only))
        (workdir / "phases.json").write_text(json.dumps(phases), encoding="utf-8")
        names = ["writer", *(f"reader{i}" for i in range(READERS))]
        records = load_records(workdir / f"{name}.jsonl" for name in names)
        result = verdict(records, phases)
        result["schedule"] = "short" if args.short else "full"
        result["deployment"] = deployment
        result["server"] = server_name()
        if soak is not None:
            result["soak"] = soak_summary(records, names, args.plot)
            result["phases"] = merge_rounds(result["phases"])  # one row per fault
        print(render_table(result))
        print(json.dumps(result, sort_keys=True))
    finally:
        if args.keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
