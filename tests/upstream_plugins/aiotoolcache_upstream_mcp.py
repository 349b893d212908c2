"""A pytest plugin that runs the MCP SDK's published caching tests on ToolCacheResponseStore.

Loaded with ``-p aiotoolcache_upstream_mcp`` into a pytest run of the ``mcp``
sdist's ``tests/client/test_caching.py``; the upstream file is never edited.

- Every test runs once per backend (see ``aiotoolcache_upstream_backend``).
- The store-contract tests are parametrised over ``make_store``; their
  parametrisation is replaced by one factory of ``ToolCacheResponseStore``.
- Every other ``InMemoryResponseCacheStore()`` the module builds (the
  coordinator, scope, era and failure-wrapper tests) is a
  ``ToolCacheResponseStore`` too, each on a cache of its own.
- Tests of the in-memory store's own LRU cap (they construct it with
  ``max_entries``) say nothing about other stores and are deselected.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import aiotoolcache_upstream_backend as upstream_backend
import pytest
from mcp.client.caching import InMemoryResponseCacheStore

from aiotoolcache.integrations.mcp import ToolCacheResponseStore

_SUITE_FILE = "test_caching.py"

# The shared fixture, registered with this plugin.
toolcache_backend = upstream_backend.toolcache_backend


def make_toolcache_store(**options: Any) -> ToolCacheResponseStore:
    """A ToolCacheResponseStore on a fresh cache; in-memory-only options are refused."""
    if options:
        raise TypeError(f"ToolCacheResponseStore takes no in-memory options: {sorted(options)}")
    return ToolCacheResponseStore(upstream_backend.open_cache())


def _in_suite(path: Any) -> bool:
    return str(path).endswith("client/" + _SUITE_FILE)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test once per backend; point ``make_store`` at ToolCacheResponseStore."""
    upstream_backend.parametrize(metafunc)
    if "make_store" not in metafunc.fixturenames or not _in_suite(metafunc.definition.path):
        return
    markers = metafunc.definition.own_markers
    for index, mark in enumerate(markers):
        if mark.name == "parametrize" and mark.args and mark.args[0] == "make_store":
            markers[index] = pytest.mark.parametrize(
                "make_store",
                [make_toolcache_store],
                ids=["ToolCacheResponseStore"],
            ).mark


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of the in-memory store's LRU cap (not part of the store contract)."""

    def in_memory_only(item: pytest.Item) -> bool:
        function = getattr(item, "function", None)
        return (
            _in_suite(item.path)
            and function is not None
            and "max_entries" in inspect.getsource(function)
        )

    upstream_backend.deselect(config, items, in_memory_only)


@pytest.fixture(autouse=True)
async def _toolcache_stores(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    anyio_backend: str,
    toolcache_backend: str,
) -> AsyncIterator[None]:
    """Swap the module's in-memory store for ToolCacheResponseStore; close its caches after."""
    module = request.module
    if getattr(module, "InMemoryResponseCacheStore", None) is InMemoryResponseCacheStore:
        monkeypatch.setattr(module, "InMemoryResponseCacheStore", make_toolcache_store)
    try:
        yield
    finally:
        await upstream_backend.close_all()
