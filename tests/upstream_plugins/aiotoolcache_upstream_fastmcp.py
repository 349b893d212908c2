"""A pytest plugin that runs FastMCP's published caching tests on ToolCacheKeyValue.

Loaded with ``-p aiotoolcache_upstream_fastmcp`` into a pytest run of the
``fastmcp`` sdist's caching tests; the upstream files are never edited.

- Every py-key-value ``MemoryStore()`` those tests build, and the one
  ``ResponseCachingMiddleware()`` builds when given no storage, is a
  ``ToolCacheKeyValue`` on a cache of its own; every test runs once per
  backend (see ``aiotoolcache_upstream_backend``).
- Parametrisations that pick another store explicitly (the file-tree store)
  say nothing about ours and are deselected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiotoolcache_upstream_backend as upstream_backend
import pytest
from fastmcp.server.middleware import caching as middleware_caching
from key_value.aio.stores.memory import MemoryStore

from aiotoolcache.integrations.key_value import ToolCacheKeyValue

_OTHER_STORES = frozenset({"filetree"})

# The shared fixture, registered with this plugin.
toolcache_backend = upstream_backend.toolcache_backend


def make_toolcache_key_value(**options: Any) -> ToolCacheKeyValue:
    """A ToolCacheKeyValue on a fresh cache; in-memory-only options are refused."""
    if options:
        raise TypeError(f"ToolCacheKeyValue takes no in-memory options: {sorted(options)}")
    return ToolCacheKeyValue(upstream_backend.open_cache())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test once per backend."""
    upstream_backend.parametrize(metafunc)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the parametrisations that run on another explicitly chosen store."""

    def on_other_store(item: pytest.Item) -> bool:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        return any(isinstance(p, str) and p in _OTHER_STORES for p in params)

    upstream_backend.deselect(config, items, on_other_store)


@pytest.fixture(autouse=True)
async def _toolcache_key_values(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, toolcache_backend: str
) -> AsyncIterator[None]:
    """Swap py-key-value's MemoryStore for ToolCacheKeyValue; close its caches after the test."""
    monkeypatch.setattr(middleware_caching, "MemoryStore", make_toolcache_key_value)
    module = request.module
    if getattr(module, "MemoryStore", None) is MemoryStore:
        monkeypatch.setattr(module, "MemoryStore", make_toolcache_key_value)
    try:
        yield
    finally:
        await upstream_backend.close_all()
