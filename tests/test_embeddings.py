"""Embedding vectors: a malformed cached vector is a miss that is loaded again, never an error."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import aiotoolcache as atc
from aiotoolcache.codec import CorruptValue
from aiotoolcache.embeddings import pack_vector, unpack_vector


def test_unpack_refuses_partial_floats_and_wrong_dimensions() -> None:
    assert unpack_vector(pack_vector([1.0, 2.0]), 2) == [1.0, 2.0]
    with pytest.raises(CorruptValue):
        unpack_vector(b"\x00\x00\x80\x3f\x00")  # 5 bytes
    with pytest.raises(CorruptValue):
        unpack_vector(pack_vector([1.0, 2.0, 3.0]), 2)


@pytest.mark.parametrize("planted", [b"\x01\x02\x03", pack_vector([9.0] * 3), b""])
async def test_a_planted_malformed_vector_is_reloaded(planted: bytes) -> None:
    loaded: list[list[str]] = []

    async def embed(texts: list[str]) -> Sequence[Sequence[float]]:
        loaded.append(texts)
        return [[float(len(t)), 0.5] for t in texts]

    async with atc.ToolCache() as cache:
        first = await cache.embed(["a", "bb"], model="m", loader=embed, dimensions=2)
        # Overwrite one cached vector with bytes that are not a 2-dimensional vector.
        await cache.embeddings.set(("embed", "m", 2, "bb"), planted, label="m")
        cache.l1.clear()
        again = await cache.embed(["a", "bb"], model="m", loader=embed, dimensions=2)
        assert again == first == [[1.0, 0.5], [2.0, 0.5]]
        assert loaded == [["a", "bb"], ["bb"]]
        assert cache.stats()["embeddings"].corrupt == 1
        # The reloaded vector replaced the bad one.
        assert await cache.embed(["bb"], model="m", loader=embed, dimensions=2) == [[2.0, 0.5]]
        assert len(loaded) == 2
