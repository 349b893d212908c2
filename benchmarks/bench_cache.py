"""asv benchmarks of aiotoolcache, each suite against a redis-server of its own.

Every suite starts a redis-server on a free loopback port in ``setup`` and stops it in
``teardown``; the cache under test runs on one event loop created in ``setup``, and each
timed call drives it with ``loop.run_until_complete``. Sequential hit benchmarks time a
batch of ``INNER`` calls (the loop round-trip would otherwise dominate a single L1 hit):
divide by ``INNER`` for the cost of one.

Run with ``asv run --python=same --quick`` (see benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiotoolcache as atc  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

T = TypeVar("T")

INNER = 100  # sequential calls per timed call of the hit benchmarks
KEYS = 1000
NAMESPACE = "bench"
VALUE = {
    "content": [{"type": "text", "text": "lorem ipsum dolor sit amet " * 8}],
    "isError": False,
    "meta": {"server": "search", "tool": "web_search", "elapsed_ms": 12},
}


async def _value() -> dict[str, Any]:
    return VALUE


async def _must_not_load() -> dict[str, Any]:
    raise AssertionError("the loader ran where the value should have come from the cache")


class _RedisSuite:
    """A redis-server, an event loop and one ToolCache (``self.cache``) for one benchmark."""

    timeout = 120.0
    warmup_time = 0.2

    def setup(self) -> None:
        self.server = RedisServer().start()
        self.loop = asyncio.new_event_loop()
        self.caches: list[atc.ToolCache] = []
        self.cache = self.open_cache()
        self.cache.add_layer("l2only", atc.LayerConfig(ttl=3600, l1=False))

    def teardown(self) -> None:
        try:
            for cache in self.caches:
                self.run(cache.aclose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
        finally:
            self.server.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open_cache(self) -> atc.ToolCache:
        """Return a started ToolCache on this suite's Redis: one more worker."""
        cache = atc.ToolCache.from_url(self.server.url, namespace=NAMESPACE)
        self.run(cache.start())
        self.caches.append(cache)
        return cache

    def prime(self, layer: str, keys: list[str], chunk: int = 50) -> None:
        async def fill() -> None:
            target = self.cache.layer(layer)
            for start in range(0, len(keys), chunk):
                await target.set_many([(key, VALUE) for key in keys[start : start + chunk]])

        self.run(fill())


class HitSuite(_RedisSuite):
    """Reads of values already cached: L1, L2 (a layer with ``l1=False``), MGET, bursts."""

    def setup(self) -> None:
        super().setup()
        self.keys = [f"k:{i}" for i in range(KEYS)]
        self.prime("results", self.keys)
        self.prime("l2only", self.keys)
        self.results = self.cache.results
        self.l2only = self.cache.layer("l2only")

    def time_l1_hit(self) -> None:
        """INNER sequential get_or_load hits served by the in-process L1."""

        async def hits() -> None:
            get = self.results.get_or_load
            for key in self.keys[:INNER]:
                await get(key, _must_not_load)

        self.run(hits())

    def time_l2_hit(self) -> None:
        """INNER sequential get_or_load hits served by Redis (layer with l1=False)."""

        async def hits() -> None:
            get = self.l2only.get_or_load
            for key in self.keys[:INNER]:
                await get(key, _must_not_load)

        self.run(hits())

    def time_get_many_100(self) -> None:
        """One get_many of 100 keys from Redis (one MGET)."""
        self.run(self.l2only.get_many(self.keys[:100]))

    def time_1000_concurrent_l2_hits(self) -> None:
        """1,000 concurrent get_or_load hits from Redis, batched into MGETs."""

        async def burst() -> None:
            get = self.l2only.get_or_load
            await asyncio.gather(*(get(key, _must_not_load) for key in self.keys))

        self.run(burst())


class LoadSuite(_RedisSuite):
    """Misses: a load with its lease and fill, and an embedding batch half in the cache."""

    DIMENSIONS = 256

    def setup(self) -> None:
        super().setup()
        self.counter = 0
        self.cached_texts = [f"cached text {i}" for i in range(32)]
        self.run(self.cache.embed(self.cached_texts, model="bench-embed", loader=self.embedder))

    async def embedder(self, texts: list[str]) -> list[list[float]]:
        return [
            [(len(text) + i) / self.DIMENSIONS for i in range(self.DIMENSIONS)] for text in texts
        ]

    def time_miss_and_load(self) -> None:
        """One get_or_load of a key never seen: L1 miss, L2 miss, lease, load, fill."""
        self.counter += 1
        self.run(self.cache.results.get_or_load(("miss", self.counter), _value))

    def time_embed_batch_64(self) -> None:
        """embed() of 64 texts: 32 cached, 32 new (one loader call for those)."""
        self.counter += 1
        fresh = [f"new text {self.counter}.{i}" for i in range(32)]
        texts = [text for pair in zip(self.cached_texts, fresh, strict=True) for text in pair]
        self.run(self.cache.embed(texts, model="bench-embed", loader=self.embedder))


# -- fleet-wide single-flight across processes -----------------------------------------------
STAMPEDE_PROCESSES = 3
STAMPEDE_CALLS = 10  # concurrent misses per process
STAMPEDE_LOAD_SECONDS = 0.3


def _stampede_worker(url: str, key: str, barrier: Any, results: Any) -> None:
    """One worker process: wait for the others, then miss ``key`` STAMPEDE_CALLS times at once."""

    async def main() -> int:
        loads = 0

        async def loader() -> dict[str, Any]:
            nonlocal loads
            loads += 1
            await asyncio.sleep(STAMPEDE_LOAD_SECONDS)
            return VALUE

        async with atc.ToolCache.from_url(url, namespace=NAMESPACE) as cache:
            await asyncio.to_thread(barrier.wait, 60)
            values = await asyncio.gather(
                *(cache.results.get_or_load(key, loader) for _ in range(STAMPEDE_CALLS))
            )
            assert all(value == VALUE for value in values)
        return loads

    results.put(asyncio.run(main()))


class StampedeSuite(_RedisSuite):
    """Concurrent misses of one key across worker processes."""

    unit = "loader calls"
    timeout = 180.0

    def setup(self) -> None:
        super().setup()
        self.rounds = 0

    def track_stampede_loader_calls(self) -> int:
        """Loader calls when 3 spawned processes × 10 tasks miss one key at once (ideal: 1)."""
        self.rounds += 1
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(STAMPEDE_PROCESSES)
        results = ctx.Queue()
        key = f"stampede:{self.rounds}"
        workers = [
            ctx.Process(target=_stampede_worker, args=(self.server.url, key, barrier, results))
            for _ in range(STAMPEDE_PROCESSES)
        ]
        for worker in workers:
            worker.start()
        loads: list[int] = []
        try:
            deadline = time.monotonic() + 120
            while len(loads) < len(workers):
                try:
                    loads.append(results.get(timeout=0.2))
                except queue.Empty:
                    failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                    if failed or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"stampede workers failed: exit codes {failed}"
                        ) from None
        finally:
            for worker in workers:
                worker.join(30)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
        return sum(loads)


# -- waking the waiters of a load in another worker ------------------------------------------
WAKE_TRIALS = 20
LOAD_SECONDS = 0.05
POLL_INTERVAL = 0.010


class WakeSuite(_RedisSuite):
    """How soon a worker waiting on another worker's load gets the value."""

    unit = "ms"

    def setup(self) -> None:
        super().setup()
        self.other = self.open_cache()
        self.rounds = 0

    async def _one_trial(
        self, key: str, seconds: float, wait: Callable[[str], Awaitable[Any]]
    ) -> float:
        """Start a ``seconds`` load of ``key`` in ``self.cache``; return ms from its end to
        ``wait``'s (in the other cache)."""
        finished: list[float] = []

        async def loader() -> dict[str, Any]:
            await asyncio.sleep(seconds)
            finished.append(time.perf_counter())
            return VALUE

        load = asyncio.create_task(self.cache.results.get_or_load(key, loader))
        await asyncio.sleep(LOAD_SECONDS / 5)  # the loader now holds the key's lease
        value = await wait(key)
        got = time.perf_counter()
        await load
        assert value == VALUE
        return (got - finished[0]) * 1000

    def _trials(self, wait: Callable[[str], Awaitable[Any]]) -> list[float]:
        """Run WAKE_TRIALS loads whose ends fall evenly across one poll interval."""
        self.rounds += 1

        async def trials() -> list[float]:
            return [
                await self._one_trial(
                    f"wake:{self.rounds}:{i}",
                    LOAD_SECONDS + (i + 0.5) / WAKE_TRIALS * POLL_INTERVAL,
                    wait,
                )
                for i in range(WAKE_TRIALS)
            ]

        return self.run(trials())

    def track_remote_wake_ms(self) -> float:
        """Median ms from the end of a load to a waiter in another ToolCache having the value.

        The waiter's get_or_load finds the lease taken and waits for the pub/sub ``filled``
        message, then reads Redis. Trials where the waiter did not wait (it started after
        the fill, on a busy machine) are left out.
        """
        counters = self.other.results.counters
        waited: list[bool] = []

        async def wait(key: str) -> Any:
            before = counters.remote_coalesced
            value = await self.other.results.get_or_load(key, _must_not_load)
            waited.append(counters.remote_coalesced > before)
            return value

        times = [ms for ms, ok in zip(self._trials(wait), waited, strict=True) if ok]
        if len(times) < WAKE_TRIALS // 2:
            raise RuntimeError("the waiter found the value filled instead of waiting for it")
        return statistics.median(times)

    def track_polling_wake_ms(self) -> float:
        """Baseline for track_remote_wake_ms: the waiter polls Redis every 10 ms instead."""

        async def wait(key: str) -> Any:
            # Polling is the point here: it is the design the pub/sub wake-up replaces.
            while (value := await self.other.results.get(key)) is None:  # noqa: ASYNC110
                await asyncio.sleep(POLL_INTERVAL)
            return value

        return statistics.median(self._trials(wait))


# -- invalidation across workers -------------------------------------------------------------
INVALIDATION_TRIALS = 20
SETTLE = 0.005


class InvalidationSuite(_RedisSuite):
    """How soon a delete in one worker reaches another worker's L1."""

    unit = "ms"

    def setup(self) -> None:
        super().setup()
        self.other = self.open_cache()
        self.rounds = 0

    def track_invalidation_propagation_ms(self) -> float:
        """p50 ms from ``delete`` in worker A to the entry leaving worker B's L1."""
        self.rounds += 1

        async def trial(key: str) -> float:
            value_key = self.other.results.ref(key).value_key
            l1 = self.other.l1
            await self.cache.results.set(key, VALUE)
            # B gets the entry into its L1 once A's write announcement has reached it (that
            # announcement drops B's copy: it must not land in the middle of the timing).
            for _ in range(50):
                await asyncio.sleep(SETTLE)
                await self.other.results.get_or_load(key, _must_not_load)
                await asyncio.sleep(SETTLE)
                if l1.get(value_key) is not None:
                    break
            else:
                raise RuntimeError("worker B never kept the entry in its L1")

            async def watch() -> float:
                # Checked on every loop iteration: the first one without the entry is timed.
                while l1.get(value_key) is not None:  # noqa: ASYNC110
                    await asyncio.sleep(0)
                return time.perf_counter()

            watcher = asyncio.create_task(watch())
            await self.cache.results.get(("warm", key))  # one round trip: Redis is awake
            started = time.perf_counter()
            await self.cache.results.delete(key)
            async with asyncio.timeout(5):
                gone = await watcher
            return (gone - started) * 1000

        async def trials() -> list[float]:
            return [await trial(f"inv:{self.rounds}:{i}") for i in range(INVALIDATION_TRIALS)]

        return statistics.median(self.run(trials()))
