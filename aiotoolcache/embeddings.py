"""Embedding lookups: one loader call for the missing texts, vectors stored as packed float32."""

from __future__ import annotations

from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiotoolcache.codec import CorruptValue
from aiotoolcache.control import current_directive
from aiotoolcache.errors import NotCached, ToolCacheError

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer

__all__ = ["embed_texts", "pack_vector", "unpack_vector"]

EmbedLoader = Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]]


def pack_vector(vector: Sequence[float]) -> bytes:
    """Return ``vector`` as packed float32 bytes: 4 bytes a dimension, not a msgpack list."""
    return array("f", vector).tobytes()


def unpack_vector(data: bytes, dimensions: int | None = None) -> list[float]:
    """Return the vector packed in ``data``; raise CorruptValue if it is not one.

    ``data`` must be whole float32 values, exactly ``dimensions`` of them when given.
    """
    if len(data) % 4 or (dimensions is not None and len(data) != 4 * dimensions):
        raise CorruptValue(f"{len(data)} bytes are not a packed vector of {dimensions} float32")
    vector = array("f")
    vector.frombytes(data)
    return vector.tolist()


def _cached_vector(layer: Layer, value: object, dimensions: int | None) -> list[float] | None:
    """Return a cached vector, or None (a miss, counted as corrupt if malformed)."""
    if not isinstance(value, bytes):
        return None
    try:
        return unpack_vector(value, dimensions)
    except CorruptValue:
        layer.counters.corrupt += 1
        return None


async def embed_texts(
    layer: Layer,
    texts: Sequence[str],
    model: str,
    loader: EmbedLoader,
    *,
    dimensions: int | None = None,
    partition: str | None = None,
) -> list[list[float]]:
    """Return one vector per text in input order, loading only the texts not cached.

    The loader gets each missing text once (duplicates folded). Every vector
    returned has float32 precision, whether it came from the cache or the loader.
    A cached entry that is not a well-formed vector (of ``dimensions`` values,
    when given) is a miss: that text is loaded again and stored afresh.
    """
    if layer.cassette is not None:  # the tape answers, before L1/L2: see cassette.py
        return await layer.cassette.embed(
            layer, texts, model, loader, dimensions=dimensions, partition=partition
        )
    keys = [("embed", model, dimensions, text) for text in texts]
    cached = await layer.get_many(keys, partition=partition, label=model)
    vectors = [_cached_vector(layer, value, dimensions) for value in cached]
    missing = list(
        dict.fromkeys(text for text, vec in zip(texts, vectors, strict=True) if vec is None)
    )
    if not missing:
        return [vec for vec in vectors if vec is not None]
    directive = current_directive()
    if directive is not None and not directive.loads:
        raise NotCached(f"{len(missing)} of {len(texts)} texts have no cached vector")
    loaded = await layer.entries.run_loader(lambda: loader(missing))
    fresh = list(loaded[0])
    if len(fresh) != len(missing):
        raise ToolCacheError(
            f"embedding loader returned {len(fresh)} vectors for {len(missing)} texts"
        )
    packed = {text: pack_vector(vector) for text, vector in zip(missing, fresh, strict=True)}
    await layer.set_many(
        [(("embed", model, dimensions, text), data) for text, data in packed.items()],
        partition=partition,
        label=model,
    )
    return [
        vec if vec is not None else unpack_vector(packed[text])
        for text, vec in zip(texts, vectors, strict=True)
    ]
