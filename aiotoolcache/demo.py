"""A simulated agent that shows what aiotoolcache saves: ``python -m aiotoolcache demo``.

Each agent request does what a tool-using agent does: list the tools of a few
MCP servers (discovery), embed the user's query, rank the tools for it
(search) and call the best one (execution). The simulated backends sleep and
charge like real ones: a fully uncached request costs ``request_seconds``
(2.5 s) and ``request_cost`` ($0.50) split across the four steps, with the
sleeps shrunk by ``speed`` so the demo takes seconds.

The same seeded workload (``requests`` drawn from ``distinct`` tasks with a
Zipf-like popularity) runs once without the cache and once with it. Every
figure printed is measured: wall-clock time per request, loader calls counted
by the simulated backends (so dollars are calls × price), and the hit rates
and savings that ``cache.stats()`` counted. Nothing is assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiotoolcache.fleet import no_reporting_options
from aiotoolcache.layers import DEFAULT_LAYERS
from aiotoolcache.toolcache import ToolCache

__all__ = ["STEPS", "DemoConfig", "DemoReport", "RunResult", "run_demo", "run_workload"]


# Step → (cache layer, share of a request's time, share of its cost).
STEPS: dict[str, tuple[str, float, float]] = {
    "discovery": ("discovery", 0.24, 0.04),
    "embedding": ("embeddings", 0.08, 0.06),
    "search": ("search", 0.20, 0.10),
    "execution": ("results", 0.48, 0.80),
}
EMBED_MODEL = "demo-embed-small"
DIMENSIONS = 8

SERVERS: dict[str, tuple[str, ...]] = {
    "github": ("search_issues", "create_issue", "get_pull_request", "list_commits"),
    "jira": ("find_tickets", "create_ticket", "transition_ticket", "add_comment"),
    "slack": ("search_messages", "post_message", "list_channels", "get_thread"),
    "postgres": ("run_query", "describe_table", "list_tables", "explain_query"),
    "filesystem": ("read_file", "list_directory", "search_files", "file_info"),
    "web": ("web_search", "fetch_page", "summarize_page", "extract_links"),
    "calendar": ("find_events", "create_event", "free_busy", "list_calendars"),
    "weather": ("current_weather", "forecast", "air_quality", "alerts"),
}
_VERBS = ("find", "summarize", "list", "check", "compare", "explain", "draft", "review")
_SUBJECTS = (
    "open bugs in the payments service",
    "yesterday's deploy failures",
    "the Q3 roadmap thread",
    "slow queries on the orders table",
    "my meetings next week",
    "the incident from last night",
    "the weather for the offsite",
    "recent changes to the auth module",
    "customer complaints about checkout",
    "the README of the billing repo",
)


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """DemoConfig is one demo workload: what the agent asks, and what backends cost."""

    requests: int = 100
    distinct: int = 20
    speed: float = 50.0
    seed: int = 7
    concurrency: int = 1
    servers_per_request: int = 3
    request_seconds: float = 2.5
    request_cost: float = 0.50
    url: str | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        if self.requests < 1 or self.distinct < 1 or self.concurrency < 1:
            raise ValueError("requests, distinct and concurrency must be at least 1")
        if self.speed <= 0 or self.request_seconds < 0 or self.request_cost < 0:
            raise ValueError("speed must be positive; request seconds and cost non-negative")
        if not 1 <= self.servers_per_request <= len(SERVERS):
            raise ValueError(f"servers per request must be between 1 and {len(SERVERS)}")

    def step_seconds(self, step: str) -> float:
        """Real (unshrunk) seconds of one call of ``step``."""
        share = self.request_seconds * STEPS[step][1]
        return share / self.servers_per_request if step == "discovery" else share

    def step_cost(self, step: str) -> float:
        """Dollars one call of ``step`` costs."""
        share = self.request_cost * STEPS[step][2]
        return share / self.servers_per_request if step == "discovery" else share


@dataclass(frozen=True, slots=True)
class Task:
    """Task is one distinct thing a user asks the agent to do."""

    query: str
    servers: tuple[str, ...]
    arguments: dict[str, Any]


def make_workload(config: DemoConfig) -> tuple[list[Task], list[int]]:
    """Return the distinct tasks and the seeded order in which requests ask for them."""
    rng = random.Random(config.seed)
    names = sorted(SERVERS)
    tasks = []
    for i in range(config.distinct):
        query = f"{rng.choice(_VERBS)} {rng.choice(_SUBJECTS)}"
        if i >= len(_VERBS) * len(_SUBJECTS) // 2:
            query += f" (variant {i})"
        servers = tuple(sorted(rng.sample(names, config.servers_per_request)))
        tasks.append(Task(query, servers, {"query": query, "limit": rng.choice((5, 10, 20))}))
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(config.distinct)]
    order = rng.choices(range(config.distinct), weights=weights, k=config.requests)
    return tasks, order


def _unit_floats(text: str, count: int) -> list[float]:
    """Deterministic values in [-1, 1) that float32 holds exactly (multiples of 1/128)."""
    raw = hashlib.blake2b(text.encode(), digest_size=count).digest()
    return [(byte - 128) / 128 for byte in raw]


class SimulatedBackends:
    """SimulatedBackends are the agent's slow, paid dependencies, with call counters."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.calls: dict[str, int] = dict.fromkeys(STEPS, 0)
        self.cost: dict[str, float] = dict.fromkeys(STEPS, 0.0)

    async def _work(self, step: str) -> None:
        self.calls[step] += 1
        self.cost[step] += self.config.step_cost(step)
        await asyncio.sleep(self.config.step_seconds(step) / self.config.speed)

    async def list_tools(self, server: str) -> list[dict[str, Any]]:
        await self._work("discovery")
        return [
            {
                "name": f"{server}.{tool}",
                "description": f"{tool.replace('_', ' ')} on {server}",
                "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}},
            }
            for tool in SERVERS[server]
        ]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        await self._work("embedding")
        return [_unit_floats(text, DIMENSIONS) for text in texts]

    async def search(
        self, vector: Sequence[float], catalogs: Sequence[list[dict[str, Any]]], top_k: int
    ) -> list[str]:
        await self._work("search")
        scored = []
        for tools in catalogs:
            for tool in tools:
                tool_vector = _unit_floats(tool["description"], DIMENSIONS)
                score = sum(a * b for a, b in zip(vector, tool_vector, strict=True))
                scored.append((-score, tool["name"]))
        return [name for _, name in sorted(scored)[:top_k]]

    async def call_tool(self, server: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        await self._work("execution")
        digest = hashlib.blake2b(repr((server, tool, sorted(arguments.items()))).encode())
        return {"content": [{"type": "text", "text": f"{tool}: result {digest.hexdigest()[:12]}"}]}


class Agent:
    """Agent answers requests with the backends, through ``cache`` when it has one."""

    def __init__(self, backends: SimulatedBackends, cache: ToolCache | None) -> None:
        self.backends = backends
        self.cache = cache

    async def handle(self, task: Task) -> str:
        backends, cache = self.backends, self.cache
        catalogs = []
        for server in task.servers:  # 1. discovery

            def list_tools(server: str = server) -> Awaitable[list[dict[str, Any]]]:
                return backends.list_tools(server)

            catalogs.append(
                await list_tools() if cache is None else await cache.list_tools(server, list_tools)
            )
        if cache is None:  # 2. embedding of the query
            vector = (await backends.embed([task.query]))[0]
        else:
            vector = (await cache.embed([task.query], model=EMBED_MODEL, loader=backends.embed))[0]

        def search() -> Awaitable[list[str]]:  # 3. tool search over the catalogs
            return backends.search(vector, catalogs, 3)

        version = hashlib.blake2b(repr(catalogs).encode(), digest_size=8).hexdigest()
        ranked = (
            await search()
            if cache is None
            else await cache.search_tools(
                task.query, search, catalog_version=version, top_k=3, servers=task.servers
            )
        )
        server, _, tool = ranked[0].partition(".")

        def call() -> Awaitable[dict[str, Any]]:  # 4. execution of the best tool
            return backends.call_tool(server, tool, task.arguments)

        result = (
            await call()
            if cache is None
            else await cache.call_tool(server, tool, task.arguments, call)
        )
        return f"{','.join(ranked)}|{result['content'][0]['text']}"


@dataclass(slots=True)
class RunResult:
    """RunResult is what one run of the workload measured."""

    label: str
    wall_seconds: float
    latencies: list[float]
    calls: dict[str, int]
    cost: dict[str, float]
    answers: list[str]
    stats: dict[str, Any] | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def total_cost(self) -> float:
        return sum(self.cost.values())

    @property
    def mean_latency(self) -> float:
        return statistics.fmean(self.latencies)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": self.wall_seconds,
            "mean_latency_seconds": self.mean_latency,
            "p50_latency_seconds": self.percentile(0.5),
            "p95_latency_seconds": self.percentile(0.95),
            "loader_calls": dict(self.calls),
            "cost": dict(self.cost),
            "total_cost": self.total_cost,
            "cost_per_request": self.total_cost / self.requests,
            **({"cache_stats": self.stats} if self.stats is not None else {}),
        }


@dataclass(slots=True)
class DemoReport:
    """DemoReport compares the run without the cache and the run with it."""

    config: DemoConfig
    backend: str
    uncached: RunResult
    cached: RunResult
    cleanup: list[str] = field(default_factory=list)

    @property
    def identical_answers(self) -> int:
        return sum(a == b for a, b in zip(self.uncached.answers, self.cached.answers, strict=True))

    @property
    def time_saved_fraction(self) -> float:
        base = self.uncached.mean_latency
        return 1 - self.cached.mean_latency / base if base else 0.0

    @property
    def cost_saved_fraction(self) -> float:
        base = self.uncached.total_cost
        return 1 - self.cached.total_cost / base if base else 0.0

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "config": {
                "requests": cfg.requests,
                "distinct": cfg.distinct,
                "speed": cfg.speed,
                "seed": cfg.seed,
                "concurrency": cfg.concurrency,
                "servers_per_request": cfg.servers_per_request,
                "request_seconds": cfg.request_seconds,
                "request_cost": cfg.request_cost,
            },
            "backend": self.backend,
            "without_cache": self.uncached.to_dict(),
            "with_cache": self.cached.to_dict(),
            "time_saved_fraction": self.time_saved_fraction,
            "cost_saved_fraction": self.cost_saved_fraction,
            "cost_saved": self.uncached.total_cost - self.cached.total_cost,
            "identical_answers": self.identical_answers,
        }


Progress = Callable[[str, int], Callable[[], None]]


async def run_workload(
    label: str,
    config: DemoConfig,
    tasks: list[Task],
    order: list[int],
    cache: ToolCache | None,
    progress: Progress | None,
) -> RunResult:
    backends = SimulatedBackends(config)
    agent = Agent(backends, cache)
    latencies = [0.0] * len(order)
    answers = [""] * len(order)
    advance = progress(label, len(order)) if progress is not None else None
    queue = iter(enumerate(order))

    async def worker() -> None:
        for index, task_index in queue:
            started = time.perf_counter()
            answers[index] = await agent.handle(tasks[task_index])
            latencies[index] = time.perf_counter() - started
            if advance is not None:
                advance()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(config.concurrency, len(order))):
            group.create_task(worker())
    wall = time.perf_counter() - started
    return RunResult(label, wall, latencies, backends.calls, backends.cost, answers)


def demo_layers(config: DemoConfig) -> dict[str, Any]:
    """Return the layer settings of the demo: the defaults plus each step's declared cost."""
    return {
        layer: DEFAULT_LAYERS[layer].with_options(cost_per_load=config.step_cost(step))
        for step, (layer, _, _) in STEPS.items()
    }


async def run_demo(config: DemoConfig, progress: Progress | None = None) -> DemoReport:
    """Run the workload without and with the cache; return what both runs measured."""
    tasks, order = make_workload(config)
    uncached = await run_workload("without cache", config, tasks, order, None, progress)
    namespace = config.namespace
    owned_namespace = config.url is not None and namespace is None
    if owned_namespace:
        namespace = f"atc-demo-{uuid.uuid4().hex[:8]}"
    options = no_reporting_options() if owned_namespace else {}
    cache = ToolCache(
        config.url or "memory://", namespace=namespace, layers=demo_layers(config), **options
    )
    backend = "embedded (in-process)" if config.url is None else f"redis, namespace {namespace}"
    cleanup: list[str] = []
    async with cache:
        cached = await run_workload("with cache", config, tasks, order, cache, progress)
        cached.stats = cache.stats().to_dict()
        if config.url is not None and not await _redis_answers(cache):
            # Say what the cache really did: fail-open, in-process only.
            errors = sum(
                int(layer.get("backend_errors", 0))
                for layer in cached.stats.get("layers", {}).values()
            )
            backend = (
                "in-process only (L1): Redis did not answer, "
                f"{errors} backend errors counted, every request still answered"
            )
        elif owned_namespace and cache.client is not None:
            cleanup = await _delete_namespace(cache)
    return DemoReport(config, backend, uncached, cached, cleanup)


async def _redis_answers(cache: ToolCache) -> bool:
    """True when the cache's Redis answers a PING within a second."""
    client = cache.client
    if client is None:
        return False
    try:
        await cache.breaker.call(lambda: client.ping(), budget=1.0)
    except Exception:  # any failure means: not reachable, and the report says so
        return False
    return True


async def _delete_namespace(cache: ToolCache) -> list[str]:
    """Remove the keys a demo wrote under its own namespace (bounded, best effort)."""
    client = cache.client
    assert client is not None
    deleted: list[str] = []
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            batch: list[Any] = []
            async for key in client.scan_iter(match=f"{cache.namespace}:*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    deleted.extend(_text(k) for k in batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
                deleted.extend(_text(k) for k in batch)
    return deleted


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
