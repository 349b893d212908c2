"""Helpers shared by the agent-framework adapter tests (no framework imported here)."""

from __future__ import annotations


class Counter:
    """Counts how often tool bodies run: each body adds one to ``n``."""

    def __init__(self) -> None:
        self.n = 0
