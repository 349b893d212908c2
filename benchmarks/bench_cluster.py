"""asv benchmarks of aiotoolcache on a Redis Cluster (three primaries, no replicas).

Each benchmark starts its own cluster in ``setup`` (a few seconds: Redis refuses to report
a new cluster healthy during its first 2 s) and stops it in ``teardown``; the cache under
test runs on one event loop created in ``setup``, and each timed call drives it with
``loop.run_until_complete``. As in bench_cache.py, the sequential benchmark times
``INNER`` calls: divide by ``INNER`` for the cost of one.

Every value sits in a slot of its own (the key digest is the hash tag), so a batch of
reads becomes one MGET per slot, pipelined per node.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiotoolcache as atc  # noqa: E402
from tests.cluster_servers import RedisClusterServers  # noqa: E402

T = TypeVar("T")

INNER = 100
KEYS = 1000
NAMESPACE = "bench"
VALUE = {
    "content": [{"type": "text", "text": "lorem ipsum dolor sit amet " * 8}],
    "isError": False,
    "meta": {"server": "search", "tool": "web_search", "elapsed_ms": 12},
}


async def _must_not_load() -> dict[str, Any]:
    raise AssertionError("the loader ran where the value should have come from the cache")


class ClusterHitSuite:
    """Reads of values already in the cluster, on a layer without L1 (every read is L2)."""

    timeout = 180.0
    warmup_time = 0.2

    def setup(self) -> None:
        self.deployment = RedisClusterServers(primaries=3).start()
        try:
            self.loop = asyncio.new_event_loop()
            self.cache = atc.ToolCache.from_url(self.deployment.url, namespace=NAMESPACE)
            self.l2only = self.cache.add_layer("l2only", atc.LayerConfig(ttl=3600, l1=False))
            self.keys = [f"k:{i}" for i in range(KEYS)]
            self.run(self.cache.start())
            self.run(self._fill())
        except BaseException:
            self.deployment.stop()
            raise

    async def _fill(self) -> None:
        for start in range(0, KEYS, 100):
            await self.l2only.set_many([(key, VALUE) for key in self.keys[start : start + 100]])
        assert self.l2only.counters.dropped_writes == 0

    def teardown(self) -> None:
        try:
            self.run(self.cache.aclose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
        finally:
            self.deployment.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def time_l2_hit_cluster(self) -> None:
        """INNER sequential get_or_load hits served by the cluster (layer with l1=False)."""

        async def hits() -> None:
            get = self.l2only.get_or_load
            for key in self.keys[:INNER]:
                await get(key, _must_not_load)

        self.run(hits())

    def time_1000_concurrent_l2_hits_cluster(self) -> None:
        """1,000 concurrent get_or_load hits from the cluster, batched into per-slot MGETs."""

        async def burst() -> None:
            get = self.l2only.get_or_load
            await asyncio.gather(*(get(key, _must_not_load) for key in self.keys))

        self.run(burst())
