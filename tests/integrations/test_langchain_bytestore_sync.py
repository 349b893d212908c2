"""ToolCacheByteStore's synchronous API: its own loop thread, CacheBackedEmbeddings in sync
code, blocking calls refused inside event loops, and a clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("langchain_core")

from langchain_core.embeddings import DeterministicFakeEmbedding

import aiotoolcache as atc
from aiotoolcache.integrations.langchain import ToolCacheByteStore

THREAD_NAME = "aiotoolcache-bytestore"


def loop_threads() -> int:
    return sum(thread.name == THREAD_NAME for thread in threading.enumerate())


class CountingEmbeddings(DeterministicFakeEmbedding):
    calls: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += len(texts)
        return super().embed_documents(texts)


def test_cache_backed_embeddings_in_sync_code() -> None:
    embeddings_mod = pytest.importorskip("langchain_classic.embeddings")
    underlying = CountingEmbeddings(size=8)
    with ToolCacheByteStore(namespace="fake-8") as store:
        embedder = embeddings_mod.CacheBackedEmbeddings.from_bytes_store(
            underlying, store, namespace="fake-8:", key_encoder="blake2b"
        )
        first = embedder.embed_documents(["alpha", "beta"])
        second = embedder.embed_documents(["beta", "alpha", "gamma"])
        assert underlying.calls == 3
        assert second[0] == first[1] and second[1] == first[0]
        assert len(list(store.yield_keys(prefix="fake-8:"))) == 3


def test_cache_backed_embeddings_share_vectors_through_redis(redis_url: str) -> None:
    embeddings_mod = pytest.importorskip("langchain_classic.embeddings")
    namespace = f"emb-{uuid.uuid4().hex}"
    vectors = []
    underlying = CountingEmbeddings(size=8)
    for _ in range(2):  # two stores, each with its own cache and loop thread, one Redis
        with ToolCacheByteStore(
            lambda: atc.ToolCache.from_url(redis_url, namespace=namespace), namespace="fake-8"
        ) as store:
            embedder = embeddings_mod.CacheBackedEmbeddings.from_bytes_store(
                underlying, store, namespace="fake-8:", key_encoder="blake2b"
            )
            vectors.append(embedder.embed_documents(["alpha", "beta"]))
    assert underlying.calls == 2  # the second store read both vectors from Redis
    assert vectors[0] == vectors[1]


def test_sync_calls_from_many_threads() -> None:
    with ToolCacheByteStore(namespace="threads") as store:

        def work(n: int) -> list[bytes | None]:
            keys = [f"t{n}:{i}" for i in range(20)]
            store.mset([(key, key.encode()) for key in keys])
            store.mdelete(keys[:5])
            return store.mget(keys)

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(work, range(8)))
        for n, values in enumerate(results):
            assert values[:5] == [None] * 5
            assert values[5:] == [f"t{n}:{i}".encode() for i in range(5, 20)]
        assert len(list(store.yield_keys())) == 8 * 15


def test_the_async_api_works_from_any_event_loop() -> None:
    # The cache lives on the store's loop, so loops that come and go can share it.
    with ToolCacheByteStore(namespace="loops") as store:
        asyncio.run(store.amset([("k", b"v")]))
        assert asyncio.run(store.amget(["k"])) == [b"v"]

        async def listed() -> list[str]:
            return [key async for key in store.ayield_keys()]

        assert asyncio.run(listed()) == ["k"]
        assert store.mget(["k"]) == [b"v"]


async def test_a_blocking_call_inside_an_event_loop_is_refused() -> None:
    store = ToolCacheByteStore(namespace="in-loop")
    try:
        await store.amset([("k", b"v")])
        with pytest.raises(atc.BlockingCallInEventLoop, match="await amget"):
            store.mget(["k"])
        with pytest.raises(atc.BlockingCallInEventLoop, match="ayield_keys"):
            store.yield_keys()
        with pytest.raises(atc.BlockingCallInEventLoop, match="aclose"):
            store.close()
        # A worker thread has no running loop: there the blocking API works.
        assert await asyncio.to_thread(store.mget, ["k"]) == [b"v"]
    finally:
        await store.aclose()
    assert store.cache.closing


def test_close_stops_the_thread_and_closes_the_cache() -> None:
    before = loop_threads()
    store = ToolCacheByteStore(namespace="close")
    assert store.owns_cache
    assert loop_threads() == before + 1
    store.mset([("k", b"v")])
    keys = store.yield_keys()
    assert next(keys) == "k"
    store.close()
    store.close()  # idempotent
    assert loop_threads() == before
    assert store.cache.closing
    with pytest.raises(atc.StoreClosed):
        store.mget(["k"])
    with pytest.raises(atc.StoreClosed):
        store.mset([("k", b"v")])
    with pytest.raises(atc.StoreClosed):
        next(keys)  # a listing left open cannot go on


async def test_aclose_from_async_code() -> None:
    before = loop_threads()
    async with ToolCacheByteStore(namespace="aclose") as store:
        await store.amset([("k", b"v")])
    assert loop_threads() == before
    assert store.cache.closing
    with pytest.raises(atc.StoreClosed):
        await store.amget(["k"])


def test_a_store_dropped_without_close_still_ends_its_thread() -> None:
    before = loop_threads()
    store = ToolCacheByteStore(namespace="dropped")
    store.mset([("k", b"v")])
    cache = store.cache
    del store
    gc.collect()
    for thread in threading.enumerate():
        if thread.name == THREAD_NAME:
            thread.join(timeout=30)
    assert loop_threads() == before
    assert cache.closing


def test_a_failing_cache_factory_leaves_no_thread() -> None:
    before = loop_threads()

    def broken() -> atc.ToolCache:
        raise atc.ConfigurationError("no such backend")

    with pytest.raises(atc.ConfigurationError, match="no such backend"):
        ToolCacheByteStore(broken)
    with pytest.raises(atc.ConfigurationError, match="unknown layer"):
        ToolCacheByteStore(layer="nope")
    assert loop_threads() == before


def test_the_cache_is_made_on_the_store_thread() -> None:
    made_on: list[str] = []

    def factory() -> atc.ToolCache:
        made_on.append(threading.current_thread().name)
        return atc.ToolCache()

    with ToolCacheByteStore(factory, namespace="factory") as store:
        store.mset([("k", b"v")])
        assert store.mget(["k", "nope"]) == [b"v", None]
    assert made_on == [THREAD_NAME]
