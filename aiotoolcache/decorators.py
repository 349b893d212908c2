"""``@cache.cached``: serve repeated calls of an async function from a cache layer."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer

__all__ = ["cached_function"]

P = ParamSpec("P")
R = TypeVar("R")


def cached_function(
    layer: Layer,
    ttl: float | None,
    *,
    tags: Iterable[str] | None = None,
    ignore: Iterable[str] = ("self", "cls"),
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Return a decorator caching an async function in ``layer``, keeping its signature.

    The key is the function's qualified name and its bound arguments with
    defaults applied, so ``f(1)``, ``f(x=1)`` and ``f()`` with default 1 share
    one entry. Parameters named in ``ignore`` are left out of the key.
    """
    skipped = frozenset(ignore)
    tag_list = list(tags) if tags else None

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@cached needs an async function, got {func!r}")
        signature = inspect.signature(func)
        name = f"{func.__module__}.{func.__qualname__}"

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = {k: v for k, v in bound.arguments.items() if k not in skipped}
            return await layer.get_or_load(
                (name, arguments),
                lambda: func(*args, **kwargs),
                ttl,
                tags=tag_list,
                label=func.__name__,
            )

        return wrapper

    return decorate
