"""The ToolCaches an upstream suite runs on, chosen by the environment of its pytest process.

``AIOTOOLCACHE_UPSTREAM_BACKENDS`` lists the backends, comma-separated:
``embedded`` (the in-process default ToolCache) and ``redis`` (then
``AIOTOOLCACHE_UPSTREAM_REDIS_URL`` names the server). Every upstream test
runs once per backend; its id holds ``toolcache-<backend>``. Every cache opened
here gets its own namespace, so stores a test creates side by side never see
each other's entries, exactly like the independent in-memory stores they
replace. ``close_all()`` closes them.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Callable

import pytest

from aiotoolcache import ToolCache

BACKENDS_VARIABLE = "AIOTOOLCACHE_UPSTREAM_BACKENDS"
REDIS_URL_VARIABLE = "AIOTOOLCACHE_UPSTREAM_REDIS_URL"
KNOWN_BACKENDS = ("embedded", "redis")

_run = uuid.uuid4().hex[:8]
_numbers = itertools.count()
# The backend of the running test (set by the toolcache_backend fixture) and the
# caches opened since the last close_all(); one test runs at a time in this process.
_current = ["embedded"]
_open: list[ToolCache] = []


# The stores open their caches lazily (their constructors are synchronous), and a lazy
# start logs a WARNING; the upstream suites count the warnings of the SDK's own
# loggers, so ours stay out of their way.
logging.getLogger("aiotoolcache").setLevel(logging.ERROR)


def backends() -> list[str]:
    """The backends every test runs on, in order."""
    names = [name for name in os.environ.get(BACKENDS_VARIABLE, "embedded").split(",") if name]
    unknown = sorted(set(names) - set(KNOWN_BACKENDS))
    if unknown or not names:
        raise pytest.UsageError(f"{BACKENDS_VARIABLE} must list {KNOWN_BACKENDS}, got {names!r}")
    return names


def parametrize(metafunc: pytest.Metafunc) -> None:
    """Run the test once per backend (through the ``toolcache_backend`` fixture)."""
    if "toolcache_backend" in metafunc.fixturenames:
        names = backends()
        metafunc.parametrize(
            "toolcache_backend", names, indirect=True, ids=[f"toolcache-{n}" for n in names]
        )


def use(name: str) -> None:
    """Make ``name`` the backend of the caches opened from now on."""
    _current[0] = name


def open_cache() -> ToolCache:
    """A new ToolCache on the current backend, in a namespace no other cache uses."""
    namespace = f"upstream-{_run}-{next(_numbers)}"
    if _current[0] == "redis":
        url = os.environ.get(REDIS_URL_VARIABLE)
        if not url:
            raise RuntimeError(f"{REDIS_URL_VARIABLE} must name the Redis for the redis backend")
        cache = ToolCache.from_url(url, namespace=namespace)
    else:
        cache = ToolCache(namespace=namespace)
    _open.append(cache)
    return cache


async def close_all() -> None:
    """Close every cache opened since the last call (the stores' owners go with the test)."""
    while _open:
        await _open.pop().aclose()


def deselect(
    config: pytest.Config, items: list[pytest.Item], drop: Callable[[pytest.Item], bool]
) -> None:
    """Deselect (as pytest reports it) every collected item ``drop`` picks."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if drop(item) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def toolcache_backend(request: pytest.FixtureRequest) -> str:
    """The backend of this run of the test: its caches open there."""
    name: str = request.param
    use(name)
    return name
