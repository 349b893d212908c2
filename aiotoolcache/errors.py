"""The exceptions aiotoolcache raises, rooted in one base class.

::

    ToolCacheError
    ├── ConfigurationError      (also a ValueError)
    ├── KeyEncodingError        (also a TypeError)
    ├── UnserializableValue     (also a TypeError)
    ├── ValueTooLarge
    ├── CachedLoaderError
    ├── CacheClosed             (also a RuntimeError)
    ├── BlockingCallInEventLoop (also a RuntimeError)
    ├── StoreClosed             (also a RuntimeError)
    ├── CassetteError
    │   └── CassetteMiss
    ├── NotCached
    ├── ServerNotFound          (also a FileNotFoundError)
    └── BackendError
        ├── BackendTimeout
        └── CircuitOpen

By default (fail-open) only the first three and NotCached reach a caller: backend trouble
becomes a miss or a dropped write. ``strict=True`` surfaces the rest.
Redis exceptions are translated where they enter the library, so callers
never need to import redis to handle them. ``asyncio.CancelledError`` is
never caught, wrapped or swallowed.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BlockingCallInEventLoop",
    "CacheClosed",
    "CachedLoaderError",
    "CassetteError",
    "CassetteMiss",
    "CircuitOpen",
    "ConfigurationError",
    "KeyEncodingError",
    "NotCached",
    "ServerNotFound",
    "StoreClosed",
    "ToolCacheError",
    "UnserializableValue",
    "ValueTooLarge",
]


class ToolCacheError(Exception):
    """Base class of every exception raised by aiotoolcache."""


class ConfigurationError(ToolCacheError, ValueError):
    """Raised when a setting, URL, layer name or option is invalid."""


class KeyEncodingError(ToolCacheError, TypeError):
    """Raised when a key part cannot be put in canonical JSON form."""


class UnserializableValue(ToolCacheError, TypeError):
    """Raised (strict mode only) when a value cannot be encoded for the cache.

    ``value_type`` names the type that could not be stored, when one is known.
    """

    def __init__(self, message: str, value_type: str | None = None) -> None:
        super().__init__(message)
        self.value_type = value_type


class ValueTooLarge(ToolCacheError):
    """Raised (strict mode only) when an encoded value exceeds the layer's size limit."""


class CachedLoaderError(ToolCacheError):
    """Raised when a loader failure was negatively cached and is served from the cache.

    ``error_type`` and ``message`` describe the original exception; the
    original object itself is never stored.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message} (cached failure)")
        self.error_type = error_type
        self.message = message


class CacheClosed(ToolCacheError, RuntimeError):
    """Raised when a ToolCache is used after ``aclose()``."""


class BlockingCallInEventLoop(ToolCacheError, RuntimeError):
    """Raised when a blocking (synchronous) method is called from a running event loop."""


class StoreClosed(ToolCacheError, RuntimeError):
    """Raised when a store is used after ``close()``."""


class CassetteError(ToolCacheError):
    """Raised when a cassette file cannot be read, decoded or written."""


class CassetteMiss(CassetteError):
    """Raised when a call that must replay is not on the cassette (or was replayed up).

    ``call`` names the call; the message shows the nearest recorded calls and
    how their arguments differ.
    """

    def __init__(self, message: str, call: str) -> None:
        super().__init__(message)
        self.call = call


class NotCached(ToolCacheError, LookupError):
    """Raised when ``cache_control("only-if-cached")`` finds no usable entry for a lookup."""


class ServerNotFound(ToolCacheError, FileNotFoundError):
    """Raised when no local Redis-compatible server binary is found for the demo or the tests."""


class BackendError(ToolCacheError):
    """Raised (strict mode only) when the cache backend fails."""


class BackendTimeout(BackendError):
    """Raised (strict mode only) when a backend call exceeds its time budget."""


class CircuitOpen(BackendError):
    """Raised (strict mode only) when the circuit breaker refuses a backend call."""
