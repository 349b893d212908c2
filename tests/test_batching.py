"""The batcher: requests of one loop tick share one backend call, and each keeps its own fate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from aiotoolcache.batching import Batcher


class Backend:
    """Backend doubles every item, recording each batch and lone call it is asked for."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.fail = fail

    async def run_batch(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("backend down")
        return [2 * item for item in items]

    async def run_one(self, item: int) -> int:
        self.alone.append(item)
        await asyncio.sleep(0)
        return 2 * item


async def test_requests_of_one_tick_share_batches_of_at_most_max_batch() -> None:
    backend = Backend()
    batcher = Batcher(backend.run_batch, max_batch=4, run_one=backend.run_one)

    async def request(item: int) -> int:
        return await batcher.call(item)

    results = await asyncio.gather(*(request(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    # The first goes out alone at once; the nine that came while it ran, in batches of 4.
    assert backend.alone == [0]
    assert backend.batches == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_failed_batch_reaches_every_request_of_it() -> None:
    backend = Backend(fail=True)
    batcher = Batcher(backend.run_batch)
    futures = [batcher.submit(i) for i in range(3)]
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        assert isinstance(outcome, ConnectionError)


async def test_a_cancelled_request_leaves_the_others_of_its_batch_alone() -> None:
    backend = Backend()
    batcher = Batcher(backend.run_batch)

    async def request(item: int) -> int:
        return await batcher.submit(item)

    tasks = [asyncio.create_task(request(i)) for i in range(3)]
    await asyncio.sleep(0)  # all three wait for the same batch
    tasks[1].cancel()
    assert await tasks[0] == 0 and await tasks[2] == 4
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert backend.batches == [[0, 1, 2]]
