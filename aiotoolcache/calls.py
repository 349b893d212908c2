"""Tool calls under their policy: cached reads, and writes that drop the reads they affect.

``ToolCache.call_tool`` and every integration go through these functions,
so one tool policy means the same thing everywhere: the key (``key_args``),
the TTL, ``min_load_time`` and ``max_value_bytes``, the tags a write
bumps, and the ``cache_control`` directive.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiotoolcache import control
from aiotoolcache.errors import NotCached, UnserializableValue
from aiotoolcache.keys import scalar_memo
from aiotoolcache.layers import VALUE_LIMIT
from aiotoolcache.loaders import require_async_loader
from aiotoolcache.policy import EVERY_PARTITION, PartitionScope, ToolPolicies, ToolPolicy

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer, ShouldCache
    from aiotoolcache.codec import Codec

__all__ = [
    "Calling",
    "Invalidating",
    "after_write",
    "call_tool",
    "policy_key",
    "read_through",
    "run_uncached",
    "run_write",
]

R = TypeVar("R")


class _Settling(Protocol):
    def settles(self, asked: bool | None, *, tool_write: bool = False) -> bool: ...


class Invalidating(Protocol):
    """Invalidating is what a write needs of its cache (``ToolCache`` has it): the tool
    policies that name the tags it bumps, whether writes settle, and ``invalidate``."""

    @property
    def policies(self) -> ToolPolicies: ...
    @property
    def coherence(self) -> _Settling: ...
    async def invalidate(
        self,
        layer: str | None = None,
        tags: Iterable[str] | None = None,
        *,
        settle: bool | None = None,
    ) -> None: ...


class Calling(Invalidating, Protocol):
    """Calling is what a tool call needs of its cache (``ToolCache`` has it): also the
    results layer, the codec and the policy in force for a tool."""

    @property
    def results(self) -> Layer: ...
    @property
    def codec(self) -> Codec: ...
    def tool_policy(self, server_id: str, tool_name: str) -> ToolPolicy: ...


def call_tool(
    cache: Calling,
    server_id: str,
    tool_name: str,
    arguments: Any,
    loader: Callable[[], Awaitable[R]],
    *,
    partition: str | None,
    ttl: float | None,
    should_cache: ShouldCache | None,
    writes: bool,
) -> Awaitable[R]:
    """Run a tool call under its policy: a write (``writes``, or a policy with
    ``invalidates``) runs and then drops what it invalidates; a tool never cached
    runs; any other is read through the results layer under the policy's key.

    Returns the call to await: no frame of its own stays in flight while it runs
    (a burst of calls keeps thousands of them alive for the collector to walk).
    """
    policy = cache.tool_policy(server_id, tool_name)
    if writes or policy.invalidates:
        return run_write(cache, server_id, policy, loader, partition=partition)
    if policy.cache is False:
        return run_uncached(loader)
    layer = cache.results

    def key() -> Any:
        return policy_key("call_tool", server_id, tool_name, arguments, policy)

    # Plain arguments name their entry once per key_args (the only part of the policy in
    # the key); a tape records the call's own key, so under one the key is passed as it is.
    plain = type(arguments) is dict and layer.cassette is None
    memo = scalar_memo((), arguments) if plain else None
    if memo is None:
        entry = key()
    else:
        memo = ("call_tool", server_id, tool_name, partition, policy.key_args, memo)
        entry = layer.remembered_ref(memo, key, partition, tool_name)
    return read_through(
        layer,
        cache.policies,
        policy,
        cache.codec,
        entry,
        server_id,
        tool_name,
        loader,
        partition=partition,
        ttl=ttl,
        should_cache=should_cache,
    )


def policy_key(prefix: str, server_id: str, tool: str, arguments: Any, policy: ToolPolicy) -> Any:
    """Return the key of a call: all arguments, or only ``policy.key_args`` (absent kept apart)."""
    if policy.key_args is None or not isinstance(arguments, Mapping):
        return (prefix, server_id, tool, arguments)
    # [value] when given, [] when absent: an absent argument never equals an explicit None.
    chosen = {name: [arguments[name]] if name in arguments else [] for name in policy.key_args}
    return (prefix, server_id, tool, {"key_args": chosen})


def read_through(
    layer: Layer,
    policies: ToolPolicies,
    policy: ToolPolicy,
    codec: Codec,
    key: Any,
    server_id: str,
    tool: str,
    loader: Callable[[], Awaitable[R]],
    *,
    partition: str | None,
    ttl: float | None,
    should_cache: ShouldCache | None,
) -> Awaitable[R]:
    """Return a cacheable call's result from ``layer`` (to await), or run ``loader`` once
    and keep it.

    ``ttl`` given by the caller wins over ``policy.ttl``; results that loaded
    faster than ``policy.min_load_time`` or encode larger than
    ``policy.max_value_bytes`` are returned but not stored. A
    ``policy.max_value_bytes`` above the layer's raises the layer's limit for
    this tool's results, to store them and to read them back.
    """
    require_async_loader(loader)
    tags = policies.read_tags(server_id, tool, partition)
    ttl = ttl if ttl is not None else policy.ttl
    if policy.max_value_bytes is None and policy.min_load_time == 0:
        # Nothing to time or measure: the layer's own call, with no closure or frame here.
        return layer.get_or_load(
            key, loader, ttl, tags=tags, partition=partition, label=tool, should_cache=should_cache
        )
    return _measured_read(
        layer, policy, codec, key, tool, loader, tags, ttl, partition, should_cache
    )


async def _measured_read(
    layer: Layer,
    policy: ToolPolicy,
    codec: Codec,
    key: Any,
    tool: str,
    loader: Callable[[], Awaitable[R]],
    tags: list[str],
    ttl: float | None,
    partition: str | None,
    should_cache: ShouldCache | None,
) -> R:
    """``read_through`` for a policy with ``min_load_time`` or ``max_value_bytes``."""
    cap = policy.max_value_bytes
    elapsed = [math.inf]  # of this closure's latest load; read by keep() right after it
    lower_cap = cap is not None and cap < layer.config.max_value_bytes  # else the layer checks it

    async def timed() -> R:
        started = time.perf_counter()
        value = await loader()
        elapsed[0] = time.perf_counter() - started
        return value

    def keep(value: Any) -> bool:
        if should_cache is not None and not should_cache(value):
            return False
        if elapsed[0] < policy.min_load_time:
            return False
        if lower_cap:
            try:
                size = len(codec.encode_value(value))
            except UnserializableValue:
                return True  # the layer reports it (once, with the fix) and skips it
            if cap is not None and size > cap:
                return False
        return True

    plain = policy.min_load_time == 0 and not lower_cap
    # The loads and reads of this call (its tasks too) see the tool's limit, no other call does.
    token = VALUE_LIMIT.set(cap) if cap is not None else None
    try:
        value: R = await layer.get_or_load(
            key,
            loader if plain else timed,
            ttl,
            tags=tags,
            partition=partition,
            label=tool,
            should_cache=should_cache if plain else keep,
        )
    finally:
        if token is not None:
            VALUE_LIMIT.reset(token)
    return value


async def run_uncached(run: Callable[[], Awaitable[R]]) -> R:
    """Run a call that is never cached; refused under ``only-if-cached`` (it would load)."""
    _refuse_under_only_if_cached(run)
    return await run()


def _refuse_under_only_if_cached(run: Callable[[], Awaitable[Any]]) -> None:
    require_async_loader(run)
    directive = control.current_directive()
    if directive is not None and not directive.loads:
        raise NotCached("the call is never cached and only-if-cached forbids running it")


async def after_write(
    cache: Invalidating,
    server_id: str,
    policy: ToolPolicy,
    partition: str | None | PartitionScope = EVERY_PARTITION,
) -> None:
    """Drop the cached results a write under ``policy`` affects, in every worker.

    Those of the write's ``partition`` only, unless the policy says
    ``invalidates_partitions="all"`` or the partition is not known. Tag
    generations are bumped, so loads of those entries in flight are
    revoked too: a read that began before the write cannot store its old value.
    The write settles (unless ``settle_writes=False``): once this returns, no
    worker serves a result from before it.
    """
    tags = cache.policies.write_tags(server_id, policy, partition)
    if tags:
        await cache.invalidate(tags=tags, settle=cache.coherence.settles(None, tool_write=True))


async def run_write(
    cache: Invalidating,
    server_id: str,
    policy: ToolPolicy,
    run: Callable[[], Awaitable[R]],
    *,
    partition: str | None | PartitionScope = EVERY_PARTITION,
) -> R:
    """Run a write in ``partition``, then drop what it invalidates, however it ended.

    A write that started may have changed state before it raised, was
    cancelled or reported an error result: the reads it affects are dropped
    in every case (at worst one extra load, never a stale read). Only a
    write that never started (refused under ``only-if-cached``) drops
    nothing. A caller that cannot tell the partition leaves ``EVERY_PARTITION``: the
    write then reaches every partition.
    """
    _refuse_under_only_if_cached(run)
    try:
        return await run()
    finally:
        # Shielded: a caller cancelled again while the drop runs still gets it done.
        await asyncio.shield(after_write(cache, server_id, policy, partition))
