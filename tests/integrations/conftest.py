"""Fixtures of the adapter tests: an embedded ToolCache (no Redis) and a run counter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import aiotoolcache as atc
from tests.integrations.helpers import Counter


@pytest.fixture
async def cache() -> AsyncIterator[atc.ToolCache]:
    """The embedded default ToolCache; tests that need Redis open their own."""
    async with atc.ToolCache() as tool_cache:
        yield tool_cache


@pytest.fixture
def counter() -> Counter:
    """A fresh count of tool-body runs."""
    return Counter()
