"""ToolCacheByteStore passes langchain-tests' store suite and backs CacheBackedEmbeddings."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests.base_store import (
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
)

import aiotoolcache as atc
from aiotoolcache.integrations.langchain import ToolCacheByteStore
from tests.servers import RedisServer

_stores = itertools.count()


class TestToolCacheByteStoreAsync(BaseStoreAsyncTests[bytes]):
    """langchain-tests' async key-value contract on the embedded default cache."""

    @pytest.fixture
    async def kv_store(self) -> AsyncIterator[ToolCacheByteStore]:
        async with atc.ToolCache() as cache:
            yield ToolCacheByteStore(cache, namespace=f"suite-{next(_stores)}")

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


@pytest.fixture(scope="module")
def bytestore_redis_url() -> Iterator[str]:
    """A redis-server of this module's own (a module fixture: pytest 9 refuses
    class-scoped fixtures defined as instance methods)."""
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


class TestToolCacheByteStoreAsyncOwnLoop(BaseStoreAsyncTests[bytes]):
    """The async contract on a store that owns its cache, on a loop thread of its own."""

    @pytest.fixture
    async def kv_store(self) -> AsyncIterator[ToolCacheByteStore]:
        async with ToolCacheByteStore(namespace=f"own-{next(_stores)}") as store:
            yield store

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestToolCacheByteStoreSync(BaseStoreSyncTests[bytes]):
    """langchain-tests' synchronous contract on the embedded default."""

    @pytest.fixture
    def kv_store(self) -> Iterator[ToolCacheByteStore]:
        with ToolCacheByteStore(namespace=f"sync-{next(_stores)}") as store:
            yield store
        assert store.cache.closing

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestToolCacheByteStoreAsyncOnRedis(BaseStoreAsyncTests[bytes]):
    """The same contract with the entries and the key index on a real Redis."""

    @pytest.fixture
    async def kv_store(self, bytestore_redis_url: str) -> AsyncIterator[ToolCacheByteStore]:
        async with atc.ToolCache.from_url(bytestore_redis_url, namespace="bytestore") as cache:
            yield ToolCacheByteStore(cache, namespace=f"redis-suite-{next(_stores)}")

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"\x00\x01", b"", b"\xff" * 3000


class TestToolCacheByteStoreSyncOnRedis(BaseStoreSyncTests[bytes]):
    """The synchronous contract with the store's own cache on a real Redis."""

    @pytest.fixture
    def kv_store(self, bytestore_redis_url: str) -> Iterator[ToolCacheByteStore]:
        store = ToolCacheByteStore(
            lambda: atc.ToolCache.from_url(bytestore_redis_url, namespace="bytestore-sync"),
            namespace=f"redis-sync-{next(_stores)}",
        )
        yield store
        store.close()
        assert store.cache.closing

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"\x00\x01", b"", b"\xff" * 3000


async def test_stores_are_isolated_by_namespace_and_partition(cache: atc.ToolCache) -> None:
    a = ToolCacheByteStore(cache, namespace="a")
    b = ToolCacheByteStore(cache, namespace="b")
    a_t1 = ToolCacheByteStore(cache, namespace="a", partition="t1")
    await a.amset([("k", b"1")])
    assert await b.amget(["k"]) == [None]
    assert await a_t1.amget(["k"]) == [None]
    assert [k async for k in b.ayield_keys()] == []
    assert [k async for k in a_t1.ayield_keys()] == []
    assert [k async for k in a.ayield_keys()] == ["k"]


async def test_values_live_in_the_chosen_layer(cache: atc.ToolCache) -> None:
    store = ToolCacheByteStore(cache, namespace="emb")
    await store.amset([("x", b"vec")])
    await cache.invalidate(layer="embeddings")
    assert await store.amget(["x"]) == [None]
    assert [k async for k in store.ayield_keys()] == []

    cache.add_layer("blobs", atc.LayerConfig(ttl=60))
    blobs = ToolCacheByteStore(cache, layer="blobs", namespace="emb")
    await blobs.amset([("x", b"vec")])
    await cache.invalidate(layer="embeddings")
    assert await blobs.amget(["x"]) == [b"vec"]


async def test_yield_keys_prunes_entries_that_are_gone(cache: atc.ToolCache) -> None:
    store = ToolCacheByteStore(cache, namespace="prune", index_shards=2)
    await store.amset([(f"doc:{i}", b"v") for i in range(10)])
    # Removed behind the index's back (as an expired entry would be).
    await cache.embeddings.delete(store._key("doc:3"))
    keys = sorted([k async for k in store.ayield_keys(prefix="doc:")])
    assert keys == [f"doc:{i}" for i in range(10) if i != 3]
    index = await store._read_index(range(2))
    assert "doc:3" not in {k for ks in index.values() for k in ks}


async def test_rejects_non_bytes_and_sync_calls_on_a_cache_passed_in(
    cache: atc.ToolCache,
) -> None:
    store = ToolCacheByteStore(cache)
    assert not store.owns_cache
    with pytest.raises(TypeError, match="bytes"):
        await store.amset([("k", "text")])  # type: ignore[list-item]
    # The cache belongs to this event loop: a blocking call could not use it.
    with pytest.raises(atc.ConfigurationError, match="owns its cache.*amget"):
        store.mget(["k"])
    with pytest.raises(atc.ConfigurationError, match="ayield_keys"):
        store.yield_keys()
    no_index = ToolCacheByteStore(cache, index_keys=False)
    await no_index.amset([("k", b"v")])
    assert await no_index.amget(["k"]) == [b"v"]
    with pytest.raises(NotImplementedError, match="index_keys"):
        [k async for k in no_index.ayield_keys()]
    await store.aclose()
    assert not cache.closing  # a cache passed in stays open
    with pytest.raises(atc.StoreClosed):
        await store.amget(["k"])


class CountingEmbeddings(DeterministicFakeEmbedding):
    calls: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += len(texts)
        return super().embed_documents(texts)


async def test_cache_backed_embeddings_compute_each_text_once(cache: atc.ToolCache) -> None:
    embeddings_mod = pytest.importorskip("langchain_classic.embeddings")
    underlying = CountingEmbeddings(size=8)
    store = ToolCacheByteStore(cache, namespace="fake-8")
    embedder = embeddings_mod.CacheBackedEmbeddings.from_bytes_store(
        underlying, store, namespace="fake-8:", key_encoder="blake2b"
    )
    first = await embedder.aembed_documents(["alpha", "beta"])
    second = await embedder.aembed_documents(["beta", "alpha", "gamma"])
    assert underlying.calls == 3
    assert second[0] == first[1] and second[1] == first[0]
    keys = [k async for k in store.ayield_keys(prefix="fake-8:")]
    assert len(keys) == 3
