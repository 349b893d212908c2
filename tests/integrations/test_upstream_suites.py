"""The MCP SDK's and FastMCP's own caching tests, from their published sdists, on our stores.

Each test fetches the sdist of the installed version (cached between runs, see
``tests/upstream.py``), unpacks it into a temporary directory and runs the
upstream caching tests in a pytest subprocess, once per backend (the embedded
ToolCache and a real Redis), with our store plugged in from outside by a plugin
in ``tests/upstream_plugins``. The number of upstream tests that pass on each
backend may not drop below the counts pinned here. Without network access (no
sdist in the cache and ``pip download`` failing) the tests are skipped with
pip's reason; with ``CI`` set they fail instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import upstream

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(600)]

BACKENDS = ("embedded", "redis")

MCP_FILES = ("tests/client/test_caching.py",)
MCP_PASSES = {"embedded": 57, "redis": 57}
"""Upstream tests passing on ToolCacheResponseStore, per backend, with mcp 2.3.0.

Of the file's 64 tests, 7 pin the in-memory store's own LRU cap (they build it
with ``max_entries``) and are deselected; the other 57 pass on both backends.
"""

FASTMCP_FILES = (
    "tests/server/middleware/test_caching.py",
    "tests/server/middleware/test_caching_guards.py",
    "tests/server/middleware/test_versioned_caching.py",
    "tests/server/middleware/test_extension_resource_caching.py",
    "tests/client/client/test_kv_response_cache.py",
)
FASTMCP_PASSES = {"embedded": 83, "redis": 83}
"""Upstream tests passing on ToolCacheKeyValue, per backend, with fastmcp 4.2.3.

Of the files' 102 tests, 19 run on the file-tree store by explicit choice and
are deselected; the other 83 pass on both backends.
"""


def _unpacked(distribution: str, files: tuple[str, ...], into: Path) -> Path:
    version = upstream.installed_version(distribution)
    try:
        archive = upstream.fetch_sdist(distribution, version)
        root = upstream.extract_sdist(archive, into)
        upstream.require_files(root, files)
    except upstream.UpstreamUnavailable as exc:
        upstream.unavailable(str(exc))
    return root


def _check(
    result: upstream.SuiteResult, expected: dict[str, int], label: str
) -> dict[str, dict[str, int]]:
    print(f"{label}: the upstream tests run, with their outcomes")
    print(result.report())
    counts = {backend: dict(result.counts(f"toolcache-{backend}")) for backend in BACKENDS}
    print(f"{label}: outcomes per backend: {counts}")
    for backend in BACKENDS:
        passed = result.counts(f"toolcache-{backend}")["passed"]
        not_passed = [
            test
            for outcome in ("failed", "error")
            for test in result.ids(outcome, f"toolcache-{backend}")
        ]
        assert passed >= expected[backend], (
            f"{label} on {backend}: {passed} upstream tests passed, "
            f"expected at least {expected[backend]}; not passing: {not_passed}\n"
            f"{result.output[-20000:]}"
        )
    return counts


def test_mcp_sdk_caching_suite_on_toolcache_response_store(redis_url: str, tmp_path: Path) -> None:
    pytest.importorskip("mcp.client.caching")
    root = _unpacked("mcp", MCP_FILES, tmp_path)
    result = upstream.run_suite(
        root,
        MCP_FILES,
        plugin="aiotoolcache_upstream_mcp",
        env={
            "AIOTOOLCACHE_UPSTREAM_BACKENDS": ",".join(BACKENDS),
            "AIOTOOLCACHE_UPSTREAM_REDIS_URL": redis_url,
        },
        # The SDK's suite runs on anyio; pytest-asyncio (ours) would warn about
        # its own unset options under the suite's warnings-as-errors.
        options=("-p", "no:asyncio", "-o", "log_cli=false"),
    )
    _check(result, MCP_PASSES, f"mcp {upstream.installed_version('mcp')}")


def test_fastmcp_caching_suites_on_toolcache_key_value(redis_url: str, tmp_path: Path) -> None:
    pytest.importorskip("fastmcp")
    pytest.importorskip("key_value.aio")
    root = _unpacked("fastmcp", FASTMCP_FILES, tmp_path)
    result = upstream.run_suite(
        root,
        FASTMCP_FILES,
        plugin="aiotoolcache_upstream_fastmcp",
        env={
            "AIOTOOLCACHE_UPSTREAM_BACKENDS": ",".join(BACKENDS),
            "AIOTOOLCACHE_UPSTREAM_REDIS_URL": redis_url,
        },
    )
    _check(result, FASTMCP_PASSES, f"fastmcp {upstream.installed_version('fastmcp')}")
