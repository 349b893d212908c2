"""Unstorable values: a value the cache cannot keep is returned, and said so once, loudly.

A tool result the codec cannot encode, or one over the layer's size limit,
is handed back to its caller but never stored, so the loader runs on every
call. That is easy to miss, so the first time a layer meets such a value of
a given type it logs one WARNING naming the type and the fix; later ones are
only counted (``skipped_writes``) and logged at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiotoolcache.errors import UnserializableValue, ValueTooLarge

if TYPE_CHECKING:
    from aiotoolcache.codec import Codec

__all__ = ["UnstorableReport"]

log = logging.getLogger("aiotoolcache.cache")

_PLAIN = (str, int, float, bool, bytes, type(None))
_MAX_WALK = 10_000  # bounds the search for the offending part of a huge value


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def offending_type(value: Any, encodes: Callable[[Any], bool]) -> str:
    """Return the name of the first part of ``value`` that ``encodes`` refuses (else its type)."""
    stack = [value]
    seen = 0
    while stack and seen < _MAX_WALK:
        item = stack.pop()
        seen += 1
        if isinstance(item, _PLAIN):
            continue
        if type(item) in (dict, list):
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
            continue
        if not encodes(item):
            if isinstance(item, tuple | set | frozenset):
                stack.extend(item)  # a container the codec knows, holding something it does not
                continue
            return _type_name(item)
    return _type_name(value)


class UnstorableReport:
    """UnstorableReport logs one WARNING per (layer, reason, type) for values not stored."""

    def __init__(self) -> None:
        self._warned: set[tuple[str, str, str]] = set()

    def __call__(self, layer: str, value: Any, exc: Exception, codec: Codec) -> None:
        """Report that ``value`` was not stored in ``layer`` because of ``exc``."""

        def encodes(part: Any) -> bool:
            try:
                codec.encode_value(part)
            except UnserializableValue:
                return False
            return True

        if isinstance(exc, ValueTooLarge):
            reason, kind = "size", _type_name(value)
            fix = (
                f"raise the layer's limit, e.g. cache.add_layer({layer!r}, "
                f"cache.layer({layer!r}).config.with_options(max_value_bytes=...))"
            )
            what = f"a {kind} too large to store ({exc})"
        else:
            reason, kind = "type", offending_type(value, encodes)
            fix = (
                "register the type with cache.register_model(...) (pydantic models), "
                "or return plain data (dict, list, str, numbers)"
            )
            what = f"a value holding {kind}, which the cache cannot encode"
        marker = (layer, reason, kind)
        if marker in self._warned:
            log.debug("not caching a value in %s: %s", layer, exc)
            return
        self._warned.add(marker)
        log.warning(
            "layer %r got %s: it is returned but not cached, so its loader runs on every "
            "call. Fix: %s. (Logged once per layer and type.)",
            layer,
            what,
            fix,
        )
