"""Shared fixtures: real redis-server processes on free ports, never a fake Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import aiotoolcache as atc
from aiotoolcache.local_server import find_server
from tests.servers import RedisServer, require_redis_server


def pytest_report_header() -> str:
    """Name the server binary the suite runs against, so a log says which one it was."""
    found = find_server()
    return f"server: {found}" if found is not None else "server: none found"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests that kill or freeze use ``own_redis``."""
    require_redis_server()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied before the test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test alone uses, so it may kill, freeze and restart it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[atc.ToolCache]:
    """A ToolCache on the shared Redis (namespace ``test``)."""
    async with atc.ToolCache.from_url(redis_url, namespace="test") as tool_cache:
        yield tool_cache


@pytest.fixture
async def other_worker(redis_url: str) -> AsyncIterator[atc.ToolCache]:
    """A second ToolCache on the same Redis and namespace: another worker."""
    async with atc.ToolCache.from_url(redis_url, namespace="test") as tool_cache:
        yield tool_cache
