"""aiotoolcache: an async cache for AI agents and MCP servers.

Tool discovery, search, tool results and embeddings, cached in an in-process
L1 over a shared Redis L2, with single-flight loads, pub/sub invalidation and
fail-open behaviour when Redis is slow or down.
"""

from aiotoolcache.breaker import BreakerState, CircuitBreaker
from aiotoolcache.cache import Layer
from aiotoolcache.cassette import Cassette, record_cost
from aiotoolcache.codec import Codec, Envelope, ModelRegistry
from aiotoolcache.control import CacheDirective, cache_control
from aiotoolcache.decorators import CachedFunction
from aiotoolcache.errors import (
    BackendError,
    BackendTimeout,
    BlockingCallInEventLoop,
    CacheClosed,
    CachedLoaderError,
    CassetteError,
    CassetteMiss,
    CircuitOpen,
    ConfigurationError,
    KeyEncodingError,
    NotCached,
    ServerNotFound,
    StoreClosed,
    ToolCacheError,
    UnserializableValue,
    ValueTooLarge,
)
from aiotoolcache.layers import DEFAULT_LAYERS, LayerConfig
from aiotoolcache.policy import ToolPolicies, ToolPolicy
from aiotoolcache.stats import CacheStats, LayerStats
from aiotoolcache.stores.base import Store
from aiotoolcache.stores.file import FileStore
from aiotoolcache.stores.memory import MemoryStore
from aiotoolcache.stores.redis import RedisStore
from aiotoolcache.toolcache import ToolCache

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYERS",
    "BackendError",
    "BackendTimeout",
    "BlockingCallInEventLoop",
    "BreakerState",
    "CacheClosed",
    "CacheDirective",
    "CacheStats",
    "CachedFunction",
    "CachedLoaderError",
    "Cassette",
    "CassetteError",
    "CassetteMiss",
    "CircuitBreaker",
    "CircuitOpen",
    "Codec",
    "ConfigurationError",
    "Envelope",
    "FileStore",
    "KeyEncodingError",
    "Layer",
    "LayerConfig",
    "LayerStats",
    "MemoryStore",
    "ModelRegistry",
    "NotCached",
    "RedisStore",
    "ServerNotFound",
    "Store",
    "StoreClosed",
    "ToolCache",
    "ToolCacheError",
    "ToolPolicies",
    "ToolPolicy",
    "UnserializableValue",
    "ValueTooLarge",
    "cache_control",
    "record_cost",
]
