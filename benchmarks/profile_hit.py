"""Where one L1 hit and one L2 hit of ``layer.get_or_load`` spend their microseconds.

Each component of the read path is timed in isolation with ``timeit`` (best of
``--repeat`` runs of ``--number`` calls) on the same objects a real call uses, against
a redis-server this script spawns on a free port; the whole call is timed the same way
and profiled with cProfile. The table gives each component's µs and its share of the
whole call; "glue" is what the components do not explain (awaits, attribute lookups,
argument passing). A burst of 3,000 concurrent L2 hits is then run through more and
more of the read path, side by side: what each step adds inside a burst. The last line
of the output is the same data as one JSON object.

Usage::

    python benchmarks/profile_hit.py            # ~40 s
    python benchmarks/profile_hit.py --quick    # ~5 s, fewer calls per timing
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

import aiotoolcache as atc  # noqa: E402
from aiotoolcache.batching import Batcher  # noqa: E402
from aiotoolcache.keys import digest  # noqa: E402
from benchmarks.compare_peers import MgetBatcherPeer, blocking_client  # noqa: E402
from benchmarks.measure import hiredis_in_use, machine  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

KEY = "k:1"  # the key shape benchmarks/compare.py uses
BURST = 3000  # concurrent L2 hits of distinct keys, as in the comparison
TOOL_KEY = {"tool": "web_search", "args": {"q": "redis cluster slots", "n": 10}}
VALUE = {
    "content": [{"type": "text", "text": "result for k:1: " + "lorem ipsum " * 18}],
    "isError": False,
    "meta": {"server": "search", "tool": "web_search", "elapsed_ms": 12},
}


@dataclass
class Part:
    """Part is one component's cost; ``in_sum`` False marks a reference row (not a share)."""

    name: str
    us: float | None
    in_sum: bool = True


def best_sync(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """µs per call of ``fn``: the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.Timer(fn).repeat(repeat, number)) / number * 1e6


async def best_async(fn: Callable[[], Awaitable[Any]], number: int, repeat: int) -> float:
    """µs per ``await fn()``: the best of ``repeat`` runs of ``number`` awaits."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            await fn()
        best = min(best, time.perf_counter() - started)
    return best / number * 1e6


async def best_side_by_side(
    fns: Sequence[Callable[[], Awaitable[Any]]], number: int, repeat: int
) -> list[float]:
    """``best_async`` of each of ``fns``, their runs taken in turn rather than one after another."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], await best_async(fn, number, 1))
    return best


def guarded(make: Callable[[], float]) -> float | None:
    """Run one timing; None when the component is not there in this version of the core."""
    try:
        return make()
    except (AttributeError, TypeError, KeyError) as exc:
        print(f"  (component not measurable here: {exc!r})", file=sys.stderr)
        return None


async def guarded_async(make: Callable[[], Awaitable[float]]) -> float | None:
    try:
        return await make()
    except (AttributeError, TypeError, KeyError) as exc:
        print(f"  (component not measurable here: {exc!r})", file=sys.stderr)
        return None


async def noop() -> None:
    return None


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(0.0, a - b)


async def measure(url: str, number: int, repeat: int) -> dict[str, Any]:
    cache = atc.ToolCache.from_url(url, namespace="prof")
    cache.add_layer("l2only", atc.LayerConfig(ttl=300, l1=False))
    await cache.start()
    l1_layer, l2_layer = cache.layer("results"), cache.layer("l2only")

    async def value() -> Any:
        return VALUE

    async def must_not_load() -> Any:
        raise AssertionError("a hit ran the loader")

    try:
        await l1_layer.get_or_load(KEY, value)
        await l2_layer.get_or_load(KEY, value)
        await asyncio.sleep(0.05)
        coherence = cache.coherence
        ref1, ref2 = l1_layer.ref(KEY), l2_layer.ref(KEY)
        client = cache.store.client  # the cache's own redis-py client (hiredis parser)
        raw = await client.get(ref2.value_key)
        assert raw is not None, "the L2 entry was not written"
        envelope = cache.codec.open(ref2.value_key, raw)
        n_async = max(200, number // 10)

        whole_l1 = await best_async(
            lambda: l1_layer.get_or_load(KEY, must_not_load), number, repeat
        )
        whole_l1_ref = await best_async(
            lambda: l1_layer.get_or_load(ref1, must_not_load), number, repeat
        )
        await client.set("raw:" + KEY, msgpack.packb(VALUE))

        async def raw_get() -> Any:
            return msgpack.unpackb(await client.get("raw:" + KEY))

        # Side by side, as round trips drift with the machine's load: the whole hit, the
        # bare GET and raw redis-py's GET + unpack, one round of each in turn.
        whole_l2, t_get, t_raw = await best_side_by_side(
            [
                lambda: l2_layer.get_or_load(KEY, must_not_load),
                lambda: client.get(ref2.value_key),
                raw_get,
            ],
            n_async,
            repeat,
        )
        whole_l2_ref = await best_async(
            lambda: l2_layer.get_or_load(ref2, must_not_load), n_async, repeat
        )
        t_digest = best_sync(lambda: digest(KEY), number, repeat)
        t_ref = guarded(lambda: best_sync(lambda: l1_layer.ref(KEY), number, repeat))
        t_ref_again = guarded(lambda: best_sync(lambda: l1_layer.ref(ref1), number, repeat))
        t_l1 = guarded(
            lambda: best_sync(lambda: coherence.l1_entry(ref1.value_key), number, repeat)
        )
        t_l1_miss = guarded(
            lambda: best_sync(lambda: coherence.l1_entry(ref2.value_key), number, repeat)
        )
        counters = l1_layer.counters

        def bump() -> None:
            counters.l1_hits += 1

        t_stats = best_sync(bump, number, repeat)
        t_fresh = guarded(
            lambda: best_sync(
                lambda: l1_layer._reads.maybe_refresh(
                    ref1, envelope, must_not_load, None, None, None
                ),
                number,
                repeat,
            )
        )
        flight = coherence.flight

        def bookkeeping() -> None:
            flight.in_flight(ref2.value_key)
            coherence.end(coherence.begin(ref2))

        t_flight = guarded(lambda: best_sync(bookkeeping, number, repeat))

        t_noop = await best_async(noop, number, repeat)
        t_breaker = await guarded_async(
            lambda: best_async(lambda: cache.breaker.call(noop), number, repeat)
        )

        async def run_batch(items: Sequence[str]) -> list[None]:
            return [None] * len(items)

        batcher: Batcher[str, None] = Batcher(run_batch)
        t_batch_floor = await best_async(lambda: run_batch([KEY]), number, repeat)
        t_batcher = await best_async(lambda: batcher.call(KEY), number, repeat)
        t_batcher_own = minus(t_batcher, t_batch_floor)
        t_open = best_sync(lambda: cache.codec.open(ref2.value_key, raw), number, repeat)
        t_decode = best_sync(lambda: cache.codec.decode_value(envelope.payload), number, repeat)
        t_dict = best_sync(lambda: {KEY: VALUE}.get(KEY), number, repeat)
        t_tool_digest = best_sync(lambda: digest(TOOL_KEY), number, repeat)

        l1_parts = [
            Part("key name (Layer.ref: remembered for a string key)", t_ref),
            Part("L1 lookup (Coherence.l1_entry)", t_l1),
            Part("freshness check (ReadPath.maybe_refresh)", t_fresh),
            Part("stats increment", t_stats),
            Part("(reference) Layer.ref of a KeyRef passed back", t_ref_again, False),
            Part("(reference) whole hit with a KeyRef key", whole_l1_ref, False),
            Part("(reference) dict.get", t_dict, False),
            Part("(reference) first sight of a key: keys.digest", t_digest, False),
            Part("(reference) digest of a tool-call dict key", t_tool_digest, False),
        ]
        l2_parts = [
            Part("key name (Layer.ref: remembered for a string key)", t_ref),
            Part("L1 lookup, a miss (Coherence.l1_entry)", t_l1_miss),
            Part("single-flight bookkeeping (in_flight + fill begin/end)", t_flight),
            Part("breaker + time budget (CircuitBreaker.call)", minus(t_breaker, t_noop)),
            Part("Redis GET round trip, a lone read (redis-py + hiredis + server)", t_get),
            Part("envelope open (Codec.open)", t_open),
            Part("value decode (Codec.decode_value)", t_decode),
            Part("freshness check (ReadPath.maybe_refresh)", t_fresh),
            Part("stats increment", t_stats),
            Part("(reference) whole hit with a KeyRef key", whole_l2_ref, False),
            Part("(reference) raw redis-py GET + msgpack.unpackb", t_raw, False),
            Part("(reference) batcher (Batcher.call), concurrent reads only", t_batcher_own, False),
        ]
        burst_keys = [f"b:{i}" for i in range(BURST)]
        for start in range(0, BURST, 500):
            chunk = burst_keys[start : start + 500]
            await asyncio.gather(*(l2_layer.get_or_load(k, value) for k in chunk))
        await asyncio.sleep(0.2)  # fills land

        async def burst() -> Any:
            return await asyncio.gather(
                *(l2_layer.get_or_load(k, must_not_load) for k in burst_keys)
            )

        await burst()  # warm-up: the pool opens its connections
        burst_us = await best_async(burst, 1, repeat) / BURST
        gc.collect()
        gc.disable()  # how much of a burst is CPython's cyclic GC walking the live objects
        try:
            burst_no_gc = await best_async(burst, 1, repeat) / BURST
        finally:
            gc.enable()

        # Plain redis-py, as a user would make it: a blocking pool that waits for a free
        # connection (the cache's own pool gives up after one budget, by design).
        plain = blocking_client(url)

        async def raw_burst() -> Any:
            return await asyncio.gather(*(plain.get("raw:" + KEY) for _ in range(BURST)))

        try:
            raw_burst_us = await best_async(raw_burst, 1, repeat) / BURST
        finally:
            await plain.aclose()
        ladder = await burst_ladder(url, cache, l2_layer, burst_keys, 3 * repeat)
        return {
            "burst_ladder": ladder,
            "burst": {
                "hits": BURST,
                "us_per_hit": burst_us,
                "us_per_hit_gc_paused": burst_no_gc,
                "raw_get_us_per_hit": raw_burst_us,
            },
            "profile_burst": await profiled(burst, 1, per=BURST),
            "l1_hit": section(whole_l1, l1_parts),
            "l2_hit": section(whole_l2, l2_parts),
            "profile_l1": await profiled(lambda: l1_layer.get_or_load(KEY, must_not_load), number),
            "profile_l2": await profiled(lambda: l2_layer.get_or_load(KEY, must_not_load), n_async),
        }
    finally:
        await cache.aclose()


async def burst_ladder(
    url: str, cache: atc.ToolCache, layer: Any, keys: list[str], rounds: int
) -> list[dict[str, Any]]:
    """µs per hit of the same burst through more and more of the read path, side by side.

    From a plain MGET batcher on redis-py (a reference a few lines long) to the
    library's own batcher and breaker, then the envelope check, then the value
    decode, then the whole ``get_or_load``: each step's increment is what it
    costs inside a burst (cold CPU caches included), not in a tight loop. Rounds
    rotate the order; the best round of each step is kept.
    """
    store = cache.store
    codec = cache.codec
    names = [layer.ref(key).value_key for key in keys]
    mget = MgetBatcherPeer(url)  # reads "raw:" + key, msgpack values
    async with mget.client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.set("raw:" + key, msgpack.packb(VALUE))
        await pipe.execute()

    async def must_not_load(*_: Any) -> Any:
        raise AssertionError("a hit ran the loader")

    # Each step reads from inside its own task, as a caller of the layer does (a read
    # made while another is in flight joins the tick's MGET).
    async def reference(i: int) -> Any:
        return await mget.get_or_load(keys[i], must_not_load)

    async def read(i: int) -> Any:
        return await store.get(names[i])

    async def read_open(i: int) -> Any:
        return codec.open(names[i], await store.get(names[i]))

    async def read_open_decode(i: int) -> Any:
        return codec.decode(codec.open(names[i], await store.get(names[i])))

    async def whole(i: int) -> Any:
        return await layer.get_or_load(keys[i], must_not_load)

    # The other public paths end in get_or_load: their rows add to its row. call_tool
    # reads the results layer, so its cache keeps nothing in process there.
    results = atc.DEFAULT_LAYERS["results"].with_options(l1=False)
    calls_cache = atc.ToolCache.from_url(url, namespace="prof-paths", layers={"results": results})
    calls_cache.add_layer("l2only", atc.LayerConfig(ttl=300, l1=False))

    filling = True  # then every call must hit

    async def tool_loader() -> Any:
        if not filling:
            raise AssertionError("a hit ran the loader")
        return VALUE

    @calls_cache.cached("l2only")
    async def fetch(key: str) -> Any:
        return await tool_loader()

    async def tool_call(i: int) -> Any:
        return await calls_cache.call_tool("web", "search", {"q": keys[i]}, tool_loader)

    async def cached_call(i: int) -> Any:
        return await fetch(keys[i])

    steps: list[tuple[str, Callable[[int], Awaitable[Any]], int | None]] = [
        ("plain MGET batcher + msgpack.unpackb (reference)", reference, None),
        ("RedisStore.get: the library's batcher and breaker", read, 0),
        ("+ envelope open (Codec.open)", read_open, 1),
        ("+ value decode (Codec.decode)", read_open_decode, 2),
        ("+ the layer: get_or_load", whole, 3),
        ("call_tool: a key from arguments, five read tags (vs get_or_load)", tool_call, 4),
        ("an @cached function (vs get_or_load)", cached_call, 4),
    ]
    for start in range(0, len(keys), 500):  # their entries, filled before any timing
        chunk = range(start, min(start + 500, len(keys)))
        await asyncio.gather(*(tool_call(i) for i in chunk), *(cached_call(i) for i in chunk))
    await asyncio.sleep(0.2)  # fills land
    filling = False
    best = [float("inf")] * len(steps)
    try:
        for round_ in range(rounds + 1):  # the first round warms up
            order = list(range(len(steps)))
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for i in order:
                step = steps[i][1]
                gc.collect()
                started = time.perf_counter()
                await asyncio.gather(*(step(k) for k in range(len(keys))))
                if round_:
                    best[i] = min(best[i], (time.perf_counter() - started) / len(keys) * 1e6)
    finally:
        await mget.close()
        await calls_cache.aclose()
    return [
        {"step": name, "us_per_hit": us, "increment": None if base is None else us - best[base]}
        for (name, _, base), us in zip(steps, best, strict=True)
    ]


def section(whole: float, parts: list[Part]) -> dict[str, Any]:
    counted = sum(p.us for p in parts if p.in_sum and p.us is not None)
    rows = [{"component": p.name, "us": p.us, "in_sum": p.in_sum} for p in parts]
    rows.append({"component": "glue (whole − components)", "us": whole - counted, "in_sum": True})
    for row in rows:
        us = row["us"]
        row["share"] = us / whole if us is not None and row["in_sum"] and whole else None
    return {"whole_us": whole, "components": rows}


async def profiled(
    call: Callable[[], Awaitable[Any]], number: int, per: int = 1
) -> list[dict[str, Any]]:
    """cProfile ``number`` calls; return the top functions by own time, per hit.

    A call serves ``per`` hits (a burst of concurrent hits).
    """
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(number):
        await call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).name}:{line}({func})" if line else func
        hits = number * per
        rows.append(
            {
                "function": where,
                "calls_per_hit": ncalls / hits,
                "own_us": tottime / hits * 1e6,
                "cum_us": cumtime / hits * 1e6,
            }
        )
    rows.sort(key=lambda r: -r["own_us"])
    return rows[:15]


def render(data: dict[str, Any]) -> str:
    out = []
    for title, key in (("L1 hit", "l1_hit"), ("L2 hit (layer with l1=False)", "l2_hit")):
        part = data[key]
        out.append(f"\n{title}: whole call {part['whole_us']:.2f} µs")
        out.append("| component | µs | share |")
        out.append("|---|---:|---:|")
        for row in part["components"]:
            us = "n/a" if row["us"] is None else f"{row['us']:.2f}"
            share = "" if row["share"] is None else f"{row['share']:.0%}"
            out.append(f"| {row['component']} | {us} | {share} |")
    b = data["burst"]
    out.append(
        f"\n{b['hits']:,} concurrent L2 hits (distinct keys): {b['us_per_hit']:.2f} µs per hit; "
        f"{b['us_per_hit_gc_paused']:.2f} µs with the cyclic GC paused; raw redis-py "
        f"(gather of GETs, same count): {b['raw_get_us_per_hit']:.2f} µs"
    )
    out.append(
        "\nThe same burst through more and more of the read path (best of side-by-side "
        "rounds, µs per hit):"
    )
    out.append("| step | µs per hit | increment |")
    out.append("|---|---:|---:|")
    for row in data["burst_ladder"]:
        increment = "" if row["increment"] is None else f"{row['increment']:+.2f}"
        out.append(f"| {row['step']} | {row['us_per_hit']:.2f} | {increment} |")
    profiles = (("L1 hit", "profile_l1"), ("L2 hit", "profile_l2"))
    for title, key in (*profiles, (f"{BURST:,} concurrent L2 hits", "profile_burst")):
        out.append(f"\ncProfile, {title}: top functions by own time (µs per hit, under profiling)")
        for row in data[key][:10]:
            out.append(
                f"  {row['own_us']:7.2f} own {row['cum_us']:7.2f} cum "
                f"{row['calls_per_hit']:5.2f}×  {row['function']}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per timing")
    parser.add_argument("--number", type=int, default=None, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (best is kept)")
    args = parser.parse_args(argv)
    number = args.number or (2000 if args.quick else 20000)
    server = RedisServer().start()
    try:
        data = asyncio.run(measure(server.url, number, args.repeat))
    finally:
        server.stop()
    data["machine"] = machine()
    data["hiredis"] = hiredis_in_use()
    data["number"], data["repeat"] = number, args.repeat
    print(f"machine: {data['machine']}; hiredis parser: {data['hiredis']}")
    print(f"best of {args.repeat} runs of {number} calls (Redis round trips: fewer calls)")
    print(render(data))
    print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
