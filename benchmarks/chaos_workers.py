"""The chaos checker's worker processes: one writer and several readers, each with its own cache.

The truth is a shared array of version numbers, one per key, that never goes
through the cache. The writer bumps a key's version in the truth first and then
tells the cache (``set``, ``delete`` or a group invalidation); it runs with
``strict=True`` so a call that returns has reached Redis (acknowledged), and one
that raises ``BackendError`` has not. Readers call ``get_or_load`` with a loader
that returns the truth. Every worker appends what it saw to its own JSON-lines
log, which ``chaos_check`` reads afterwards:

- ``["w", t_assigned, t_returned, op, keys, versions, acknowledged, error]``
- ``["r", t_start, t_end, key, version, kind]``: kind is ``ok``, ``bad`` (not a
  well-formed value of that key) or the exception's class name
- ``["l", t, key, version]``: one loader call
- ``["s", t, breaker_openings, breaker_state]``: a sample of the cache's state
- ``["m", t, rss_bytes, tasks, sockets, outbox]``: in a soak, the process's resources

Times are ``time.monotonic()``, one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiotoolcache as atc
from aiotoolcache.errors import BackendError
from benchmarks.chaos_soak import resources

try:
    from aiotoolcache.toolcache import server_tag
except ImportError:  # the tag format is part of the documented behaviour

    def server_tag(server_id: str) -> str:
        return f"server:{server_id}"


__all__ = ["KEYS", "Control", "run_reader", "run_writer", "value_of"]

KEYS = 50
GROUP = 5  # keys per invalidation tag
SERVER = 10  # keys per tool server
READER_TASKS = 3
READ_PAUSE = 0.015
WRITE_PAUSE = 0.04
LOADER_SECONDS = 0.01
POLL = 0.05  # how often a worker looks for a new phase
SAMPLE_TICKS = 5  # polls between two samples of the cache's state
RESOURCE_TICKS = 20  # polls between two samples of the process's resources (a soak)

# A multiprocessing Array("q", KEYS): the latest version of each key.
Truth = Any


@dataclass(frozen=True)
class Control:
    """Control is how the conductor steers the workers: shared memory, no I/O.

    ``phase`` is the phase to be in (-1: stop); worker ``i`` writes into
    ``switched[i]`` the phase whose cache it has started.
    """

    phase: Any  # multiprocessing Value("i")
    switched: Any  # multiprocessing Array("i", workers)


def value_of(key: int, version: int) -> dict[str, int]:
    """Return the value the cache holds for ``key`` at ``version``, with a checksum."""
    return {"k": key, "v": version, "c": zlib.crc32(f"{key}:{version}".encode())}


def version_in(key: int, value: Any) -> int | None:
    """Return the version in ``value`` if it is a well-formed value of ``key``, else None."""
    if not isinstance(value, dict) or set(value) != {"k", "v", "c"}:
        return None
    version = value["v"]
    if value["k"] != key or not isinstance(version, int) or isinstance(version, bool):
        return None
    return version if value == value_of(key, version) else None


def tags_of(key: int) -> list[str]:
    return [f"grp:{key // GROUP}", server_tag(f"s{key // SERVER}")]


class Recorder:
    """Recorder appends records to a JSON-lines file, flushed in the background."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")
        self.buffer: list[list[Any]] = []

    def add(self, *record: Any) -> None:
        self.buffer.append(list(record))

    def flush(self) -> None:
        if self.buffer:
            lines = (json.dumps(r, separators=(",", ":")) + "\n" for r in self.buffer)
            self.file.write("".join(lines))
            self.file.flush()
            self.buffer.clear()

    def close(self) -> None:
        self.flush()
        self.file.close()


class BreakerWatch:
    """BreakerWatch counts a worker's breaker openings over all the caches it has used.

    It reads the breaker's own ``opened`` counter; should a cache not expose
    one, it counts the changes into ``open`` it sees in ``stats()`` instead,
    rather than reporting zero.
    """

    def __init__(self) -> None:
        self.retired = 0  # openings of the caches already closed
        self.seen = 0
        self.last = "closed"

    def poll(self, cache: atc.ToolCache) -> str:
        state = cache.stats().breaker_state
        if state == "open" and self.last != "open":
            self.seen += 1
        self.last = state
        return state

    def total(self, cache: atc.ToolCache) -> int:
        opened = getattr(getattr(cache, "breaker", None), "opened", None)
        own = opened if isinstance(opened, int) else self.seen
        return self.retired + own

    def retire(self, cache: atc.ToolCache) -> None:
        self.retired = self.total(cache)
        self.seen, self.last = 0, "closed"


Work = Callable[[atc.ToolCache, Recorder, asyncio.Event, int], list[asyncio.Task[None]]]


async def _switch(
    config: dict[str, Any], strict: bool, phase: int, old: atc.ToolCache | None
) -> atc.ToolCache:
    """Close ``old`` and return a started cache in the namespace of ``phase``."""
    if old is not None:
        try:
            await asyncio.wait_for(old.aclose(), 3)
        except Exception:  # moving on anyway: that namespace is abandoned
            logging.exception("closing the cache failed")
    namespace = f"{config['namespace']}-{phase}"
    options = config.get("options", {})
    cache = atc.ToolCache.from_url(config["url"], namespace=namespace, strict=strict, **options)
    try:
        await cache.start()
    except Exception:  # the cache starts lazily instead; what that costs shows in the logs
        logging.exception("starting the cache failed")
    return cache


async def _run(config: dict[str, Any], strict: bool, work: Work, control: Control) -> None:
    """Run ``work`` on a fresh cache for each phase the conductor announces, until it says -1.

    Each phase has its own namespace, so damage a fault leaves behind (lost
    generations, say) shows in that fault's row and not in every later one.
    Before switching, the work is stopped (calls still running after a
    second are cancelled and not recorded); the writer starts writing in a
    phase only once every worker has switched (see ``_write_loop``).
    """
    logging.basicConfig(filename=config["log_file"], level=logging.WARNING)
    log = Recorder(Path(config["out"]))
    index = config["index"]
    sample_resources = bool(config.get("resources"))
    cache: atc.ToolCache | None = None
    current, tick = -1, 0
    breaker = BreakerWatch()
    tasks: list[asyncio.Task[None]] = []
    stopping = asyncio.Event()
    try:
        while True:
            wanted = int(control.phase.value)
            if wanted != current:
                stopping.set()
                if tasks:
                    _, pending = await asyncio.wait(tasks, timeout=1)
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if cache is not None:
                    state = breaker.poll(cache)
                    log.add("s", time.monotonic(), breaker.total(cache), state)
                    breaker.retire(cache)
                if wanted < 0:
                    break
                cache = await _switch(config, strict, wanted, cache)
                stopping = asyncio.Event()
                tasks = work(cache, log, stopping, wanted)
                control.switched[index] = current = wanted
            assert cache is not None
            tick += 1
            state = breaker.poll(cache)
            if tick % SAMPLE_TICKS == 0:
                log.add("s", time.monotonic(), breaker.total(cache), state)
                log.flush()
            if sample_resources and tick % RESOURCE_TICKS == 0:
                log.add("m", time.monotonic(), *resources(cache))
            await asyncio.sleep(POLL)
    finally:
        log.close()
        if cache is not None:
            try:
                await asyncio.wait_for(cache.aclose(), 5)
            except Exception:  # leaving anyway; the log is written
                logging.exception("closing the cache failed")


def run_writer(config: dict[str, Any], truth: Truth, control: Control) -> None:
    """Process entry point: mutate the truth and the cache until the conductor says stop."""
    rng = random.Random(config["seed"])

    def work(
        cache: atc.ToolCache, log: Recorder, stopping: asyncio.Event, phase: int
    ) -> list[asyncio.Task[None]]:
        loop = _write_loop(cache, log, stopping, truth, rng, control, phase)
        return [asyncio.create_task(loop)]

    asyncio.run(_run(config, True, work, control))


def _bump(truth: Truth, keys: Sequence[int]) -> tuple[float, list[int]]:
    with truth.get_lock():
        # Stamped before the bump: a loader cannot see a version before its time.
        stamp = time.monotonic()
        versions = []
        for key in keys:  # the lock is reentrant
            truth[key] = version = int(truth[key]) + 1
            versions.append(version)
    return stamp, versions


async def _write_loop(
    cache: atc.ToolCache,
    log: Recorder,
    stopping: asyncio.Event,
    truth: Truth,
    rng: random.Random,
    control: Control,
    phase: int,
) -> None:
    # A reader still in the previous namespace would not hear these writes.
    while any(done != phase for done in control.switched[:]):
        if stopping.is_set():
            return
        await asyncio.sleep(POLL)
    results = cache.results
    # The conductor's phase, not only ``stopping``: this worker sees a new phase up to a
    # poll later than the readers, which may already read the next namespace. A change
    # made here then would move the truth without reaching them.
    while not stopping.is_set() and control.phase.value == phase:
        roll = rng.random()
        key = rng.randrange(KEYS)
        if roll < 0.70:
            op, keys = "set", [key]
        elif roll < 0.85:
            op, keys = "delete", [key]
        elif roll < 0.92:
            group = key // GROUP
            op, keys = f"tag grp:{group}", list(range(group * GROUP, (group + 1) * GROUP))
        elif roll < 0.97:
            server = key // SERVER
            op, keys = f"server s{server}", list(range(server * SERVER, (server + 1) * SERVER))
        else:
            op, keys = "layer", list(range(KEYS))
        stamp, versions = _bump(truth, keys)
        error = None
        try:
            if op == "set":
                await results.set(key, value_of(key, versions[0]), tags=tags_of(key))
            elif op == "delete":
                await results.delete(key)
            elif op.startswith("tag"):
                await cache.invalidate(tags=[op.removeprefix("tag ")])
            elif op.startswith("server"):
                await cache.invalidate_server(op.removeprefix("server "))
            else:
                await cache.invalidate(layer="results")
        except BackendError as exc:  # strict: this change has not reached Redis (yet)
            error = f"backend:{type(exc).__name__}"
        except Exception as exc:  # a caller error is what the checker counts
            error = type(exc).__name__
        log.add("w", stamp, time.monotonic(), op, keys, versions, error is None, error)
        await asyncio.sleep(WRITE_PAUSE)


def run_reader(config: dict[str, Any], truth: Truth, control: Control) -> None:
    """Process entry point: read keys through the cache until the conductor says stop."""
    rng = random.Random(config["seed"])

    def work(
        cache: atc.ToolCache, log: Recorder, stopping: asyncio.Event, phase: int
    ) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                _read_loop(cache, log, stopping, truth, random.Random(rng.random()))
            )
            for _ in range(READER_TASKS)
        ]

    asyncio.run(_run(config, False, work, control))


async def _read_loop(
    cache: atc.ToolCache, log: Recorder, stopping: asyncio.Event, truth: Truth, rng: random.Random
) -> None:
    results = cache.results
    while not stopping.is_set():
        key = rng.randrange(KEYS)

        async def load(key: int = key) -> dict[str, int]:
            version = int(truth[key])
            log.add("l", time.monotonic(), key, version)
            await asyncio.sleep(LOADER_SECONDS)  # a source query takes a moment
            return value_of(key, version)

        started = time.monotonic()
        try:
            value = await results.get_or_load(key, load, tags=tags_of(key))
        except Exception as exc:  # a caller error is what the checker counts
            log.add("r", started, time.monotonic(), key, None, type(exc).__name__)
        else:
            version = version_in(key, value)
            kind = "ok" if version is not None else "bad"
            log.add("r", started, time.monotonic(), key, version, kind)
        await asyncio.sleep(READ_PAUSE)
