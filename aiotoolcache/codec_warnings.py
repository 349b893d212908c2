"""Warnings about cached values a worker cannot use, limited so that logs stay readable."""

from __future__ import annotations

import logging
import math
import time

from aiotoolcache.errors import UnserializableValue, ValueTooLarge

__all__ = ["ForeignWarning", "UnstorableWarning"]

FOREIGN_WARNING_INTERVAL = 60.0
log = logging.getLogger("aiotoolcache.codec")


class ForeignWarning:
    """ForeignWarning logs entries that no configured secret verifies, at most once per interval.

    Such entries are what a secret rotation or a partial roll-out looks like:
    one WARNING a minute says so without flooding the log on every read.
    """

    def __init__(self, interval: float = FOREIGN_WARNING_INTERVAL) -> None:
        self.interval = interval
        self._next = -math.inf  # time.monotonic() before which warnings are counted, not logged
        self._quiet = 0

    def __call__(self, key_name: str, exc: Exception, *, now: float | None = None) -> bool:
        """Log a WARNING about the entry under ``key_name`` unless one was logged recently.

        Returns True when it logged; entries refused meanwhile are counted and
        reported with the next warning.
        """
        now = time.monotonic() if now is None else now
        if now < self._next:
            self._quiet += 1
            return False
        quiet, self._quiet = self._quiet, 0
        self._next = now + self.interval
        log.warning(
            "cannot verify the cached value under %s (%s); %d more since the last warning. "
            "Every worker of a namespace needs the same secrets; "
            "the entry is treated as a miss and left in place",
            key_name,
            exc,
            quiet,
        )
        return True


class UnstorableWarning:
    """UnstorableWarning logs one WARNING per layer and value type that cannot be cached."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, layer: str, exc: UnserializableValue | ValueTooLarge) -> bool:
        """Log that values like ``exc``'s are not cached in ``layer``, naming the fix.

        Returns True when it logged, False when this layer and type were reported before.
        """
        if isinstance(exc, UnserializableValue):
            kind, fix = exc.value_type or "unknown", ""  # the message names the fix
        else:
            kind, fix = "too large", ": raise the layer's max_value_bytes, or return less data"
        if (layer, kind) in self._seen:
            return False
        self._seen.add((layer, kind))
        log.warning(
            "values in layer %r are returned but not cached: %s%s "
            "(logged once per layer and type; counted in skipped_writes)",
            layer,
            exc,
            fix,
        )
        return True
