"""Per-call cache directives: ``with cache_control("refresh"): ...`` steers every lookup inside.

The directive lives in a context variable, so it follows the code that runs
inside the block: this task and every task started in it (``asyncio``
copies the context into new tasks), and nothing else. Nested blocks combine,
the innermost winning per field: ``cache_control("no-store")`` inside
``cache_control(max_age=30)`` is both.

Modes:

- ``"refresh"``: run the loader and store its value (never read);
- ``"bypass"``: run the loader; neither read nor store;
- ``"no-store"``: read, and on a miss run the loader without storing;
- ``"only-if-cached"``: read; never run a loader, raise ``NotCached`` on a miss.

``max_age=s`` treats entries created more than ``s`` seconds ago as misses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

from aiotoolcache.errors import ConfigurationError

if TYPE_CHECKING:
    from aiotoolcache.codec import Envelope

__all__ = [
    "META_KEY",
    "CacheDirective",
    "CacheMode",
    "cache_control",
    "current_directive",
    "directive_from_meta",
]

CacheMode = Literal["refresh", "bypass", "no-store", "only-if-cached"]
_MODES: Final = frozenset(get_args(CacheMode))

META_KEY: Final = "io.aiotoolcache/cache-control"
"""The request ``_meta`` key under which an MCP client may send a directive."""


@dataclass(frozen=True, slots=True)
class CacheDirective:
    """CacheDirective is what lookups in a ``cache_control`` block do; None fields are unset."""

    mode: CacheMode | None = None
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in _MODES:
            modes = ", ".join(sorted(_MODES))
            raise ConfigurationError(f"cache mode must be one of {modes}, got {self.mode!r}")
        if self.max_age is not None and (
            isinstance(self.max_age, bool)
            or not isinstance(self.max_age, int | float)
            or self.max_age < 0
        ):
            raise ConfigurationError(f"max_age must be seconds >= 0, got {self.max_age!r}")

    @property
    def reads(self) -> bool:
        """Whether a lookup may be answered from the cache."""
        return self.mode not in ("refresh", "bypass")

    @property
    def stores(self) -> bool:
        """Whether a loaded or given value may be stored."""
        return self.mode not in ("bypass", "no-store")

    @property
    def loads(self) -> bool:
        """Whether a loader may run."""
        return self.mode != "only-if-cached"

    def usable(self, envelope: Envelope, now: float) -> bool:
        """True when an entry is young enough for ``max_age``."""
        return self.max_age is None or now - envelope.created_at <= self.max_age

    def within(self, outer: CacheDirective | None) -> CacheDirective:
        """Return this directive nested in ``outer``: each field set here wins."""
        if outer is None:
            return self
        return CacheDirective(
            self.mode if self.mode is not None else outer.mode,
            self.max_age if self.max_age is not None else outer.max_age,
        )


# The directive in force (read directly on the hot path; see current_directive).
DIRECTIVE: ContextVar[CacheDirective | None] = ContextVar("aiotoolcache_directive", default=None)


def current_directive() -> CacheDirective | None:
    """Return the directive in force here (None outside every ``cache_control`` block)."""
    return DIRECTIVE.get()


@contextmanager
def cache_control(
    mode: CacheMode | None = None, *, max_age: float | None = None
) -> Iterator[CacheDirective]:
    """Make every cache lookup inside the block follow ``mode`` and ``max_age``.

    Applies to ``get_or_load``, ``get``, ``set``, ``call_tool``, ``list_tools``,
    ``search_tools``, ``embed``, ``@cached`` functions and every integration,
    in this task and the tasks started inside. Raises ConfigurationError for
    an unknown mode or a negative ``max_age``.
    """
    directive = CacheDirective(mode, max_age).within(DIRECTIVE.get())
    token = DIRECTIVE.set(directive)
    try:
        yield directive
    finally:
        DIRECTIVE.reset(token)


def directive_from_meta(meta: Any) -> CacheDirective | None:
    """Return the directive a request's ``_meta`` carries, or None when absent or malformed.

    The value under ``META_KEY`` is a mode string, or a mapping with ``mode``
    and/or ``max_age``. Malformed values from a client are ignored, never raised.
    """
    if not isinstance(meta, Mapping):
        return None
    raw = meta.get(META_KEY)
    try:
        if isinstance(raw, str):
            return CacheDirective(cast(CacheMode, raw))
        if isinstance(raw, Mapping):
            return CacheDirective(raw.get("mode"), raw.get("max_age"))
    except ConfigurationError:
        return None
    return None


@contextmanager
def applied(directive: CacheDirective | None) -> Iterator[None]:
    """Run the block under ``directive`` nested in the current one (no-op for None)."""
    if directive is None:
        yield
        return
    token = DIRECTIVE.set(directive.within(DIRECTIVE.get()))
    try:
        yield
    finally:
        DIRECTIVE.reset(token)


@contextmanager
def undirected() -> Iterator[None]:
    """Run the block with no directive in force (the ordinary path of a directed lookup)."""
    token = DIRECTIVE.set(None)
    try:
        yield
    finally:
        DIRECTIVE.reset(token)
