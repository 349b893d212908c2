"""Prometheus and OpenTelemetry exporters carry the cache's counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiotoolcache as atc


async def busy_cache(cache: atc.ToolCache) -> None:
    """Three results lookups (one load, two hits) and one failed load."""
    for _ in range(3):
        await cache.call_tool("s", "t", {"x": 1}, lambda: asyncio.sleep(0.01, "ok"))

    async def broken() -> str:
        raise RuntimeError("tool failed")

    with pytest.raises(RuntimeError):
        await cache.call_tool("s", "t", {"x": 2}, broken)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text output with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def test_prometheus_output_parses_and_carries_the_counters() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from aiotoolcache.metrics.prometheus import register

    layers = {"results": atc.DEFAULT_LAYERS["results"].with_options(cost_per_load=0.25)}
    async with atc.ToolCache(namespace="prom", layers=layers) as cache:
        registry = CollectorRegistry()
        register(cache, registry)
        await busy_cache(cache)
        text = generate_latest(registry).decode()
        found = samples(text)
        ns = {"namespace": "prom", "layer": "results"}
        assert value(found, "aiotoolcache_hits_total", **ns, tier="l1") == 2
        assert value(found, "aiotoolcache_hits_total", **ns, tier="l2") == 0
        assert value(found, "aiotoolcache_misses_total", **ns) == 2
        assert value(found, "aiotoolcache_loads_total", **ns) == 1
        assert value(found, "aiotoolcache_load_errors_total", **ns) == 1
        assert value(found, "aiotoolcache_saved_cost_dollars_total", **ns) == pytest.approx(0.5)
        stats = cache.stats()["results"]
        assert value(found, "aiotoolcache_saved_seconds_total", **ns) == pytest.approx(
            stats.saved_seconds
        )
        assert value(found, "aiotoolcache_load_seconds_count", **ns) == 1
        assert value(found, "aiotoolcache_load_seconds_bucket", **ns, le="+Inf") == 1
        assert value(found, "aiotoolcache_load_seconds_sum", **ns) == pytest.approx(
            stats.load_seconds_total
        )
        assert value(found, "aiotoolcache_coalesced_total", **ns, scope="process") == 0
        assert value(found, "aiotoolcache_breaker_state", namespace="prom", state="closed") == 1
        assert value(found, "aiotoolcache_breaker_state", namespace="prom", state="open") == 0
        assert value(found, "aiotoolcache_l1_entries", namespace="prom") >= 1
        assert value(found, "aiotoolcache_l1_bytes", **ns) > 0
        for layer in atc.DEFAULT_LAYERS:
            assert ("aiotoolcache_misses_total", (("layer", layer), ("namespace", "prom"))) in found
        assert (
            "# TYPE aiotoolcache_hits counter" in text or "# TYPE aiotoolcache_hits_total" in text
        )


async def test_prometheus_reports_breaker_state_of_a_dead_redis(own_redis) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from aiotoolcache.metrics.prometheus import ToolCacheCollector

    async with atc.ToolCache.from_url(own_redis.url, namespace="down", cooldown=30) as cache:
        registry = CollectorRegistry()
        registry.register(ToolCacheCollector([cache]))
        own_redis.kill()
        for i in range(8):
            await cache.call_tool("s", "t", {"i": i}, lambda: asyncio.sleep(0, "v"))
            # Writes still try Redis (reads of a deaf worker go straight to the loader).
            await cache.results.set(("k", i), "v")
        found = samples(generate_latest(registry).decode())
        assert value(found, "aiotoolcache_breaker_state", namespace="down", state="open") == 1
        assert value(found, "aiotoolcache_breaker_opened_total", namespace="down") == 1
        assert value(found, "aiotoolcache_subscriber_connected", namespace="down") == 0
        ns = {"namespace": "down", "layer": "results"}
        assert value(found, "aiotoolcache_backend_errors_total", **ns) > 0
        assert value(found, "aiotoolcache_loads_total", **ns) == 8


async def test_one_collector_serves_several_caches_but_not_one_namespace_twice() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from aiotoolcache.metrics.prometheus import ToolCacheCollector

    async with atc.ToolCache(namespace="one") as one, atc.ToolCache(namespace="two") as two:
        collector = ToolCacheCollector([one, two])
        registry = CollectorRegistry()
        registry.register(collector)
        await one.call_tool("s", "t", {}, lambda: asyncio.sleep(0, 1))
        found = samples(generate_latest(registry).decode())
        assert value(found, "aiotoolcache_loads_total", namespace="one", layer="results") == 1
        assert value(found, "aiotoolcache_loads_total", namespace="two", layer="results") == 0
        with pytest.raises(atc.ConfigurationError):
            collector.add(atc.ToolCache(namespace="one"))
        collector.remove(two)
        found = samples(generate_latest(registry).decode())
        assert not any(dict(labels).get("namespace") == "two" for _, labels in found)


async def test_real_buckets_are_used_when_the_stats_carry_them(monkeypatch) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from aiotoolcache.metrics import prometheus as exporter

    async with atc.ToolCache(namespace="buckets") as cache:
        await cache.call_tool("s", "t", {}, lambda: asyncio.sleep(0, 1))
        stats = cache.stats()["results"]

        class WithBuckets:
            def __getattr__(self, name: str) -> Any:
                return getattr(stats, name)

            load_buckets = ((0.01, 1), (0.1, 1), (float("inf"), 1))

        assert exporter._load_buckets(WithBuckets()) == [  # type: ignore[arg-type]
            ("0.01", 1.0),
            ("0.1", 1.0),
            ("+Inf", 1.0),
        ]
        registry = CollectorRegistry()
        exporter.register(cache, registry)
        assert "aiotoolcache_load_seconds_bucket" in generate_latest(registry).decode()


async def test_opentelemetry_in_memory_reader_sees_the_counters() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from aiotoolcache.metrics.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    layers = {"results": atc.DEFAULT_LAYERS["results"].with_options(cost_per_load=0.25)}
    try:
        async with atc.ToolCache(namespace="otel", layers=layers) as cache:
            instrument(cache, meter_provider=provider)
            await busy_cache(cache)
            data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "aiotoolcache"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted(point.attributes.items())))
                    points[key] = point.value
    ns = (("layer", "results"), ("namespace", "otel"))
    assert points[("aiotoolcache.hits", (*ns, ("tier", "l1")))] == 2
    assert points[("aiotoolcache.misses", ns)] == 2
    assert points[("aiotoolcache.loads", ns)] == 1
    assert points[("aiotoolcache.load_errors", ns)] == 1
    assert points[("aiotoolcache.saved_cost", ns)] == pytest.approx(0.5)
    assert points[("aiotoolcache.saved_time", ns)] > 0
    assert points[("aiotoolcache.load_time", ns)] >= 0.009
    breaker = (("namespace", "otel"), ("state", "closed"))
    assert points[("aiotoolcache.breaker.state", breaker)] == 1
    assert points[("aiotoolcache.l1.entries", (("namespace", "otel"),))] >= 1


def test_missing_extras_name_the_extra(monkeypatch) -> None:
    import builtins
    import importlib
    import sys

    real_import = builtins.__import__

    def no_exporters(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("prometheus_client", "opentelemetry")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for module, extra in (
        ("aiotoolcache.metrics.prometheus", "aiotoolcache[prometheus]"),
        ("aiotoolcache.metrics.otel", "aiotoolcache[otel]"),
    ):
        monkeypatch.delitem(sys.modules, module, raising=False)
        monkeypatch.setattr(builtins, "__import__", no_exporters)
        with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
            importlib.import_module(module)
        monkeypatch.setattr(builtins, "__import__", real_import)


async def test_load_durations_fill_the_histogram_buckets() -> None:
    import asyncio

    import aiotoolcache as atc

    async with atc.ToolCache() as cache:

        async def quick() -> int:
            return 1

        async def slower() -> int:
            await asyncio.sleep(0.03)
            return 2

        await cache.results.get_or_load("a", quick)
        await cache.results.get_or_load("b", slower)
        buckets = dict(cache.stats()["results"].load_buckets)
        assert buckets[0.005] == 1  # the quick load
        assert buckets[0.025] == 1 and buckets[0.05] == 2  # cumulative
        assert buckets[30] == cache.stats()["results"].loads == 2
