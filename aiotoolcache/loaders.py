"""Loaders: the async functions that compute what a cache stores, and the check that
refuses a synchronous one before it runs (its result would be a value, not an
awaitable, and awaiting it would fail only after the work was done)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["SYNC_HINT", "Loader", "ShouldCache", "require_async_loader"]

T = TypeVar("T")
Loader = Callable[[], Awaitable[T]]
ShouldCache = Callable[[Any], bool]

_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR
SYNC_HINT = (
    "pass an async function (async def), wrap the sync one in one "
    "(async def load(): return await asyncio.to_thread(fn)), or use run_sync=True "
    "to run it in a worker thread"
)


def require_async_loader(loader: Callable[..., Any], what: str = "loader") -> None:
    """Raise TypeError, before it runs, when ``loader`` is a plain synchronous function.

    A lambda or a ``functools.partial`` may return an awaitable, so only
    functions and methods defined with ``def`` are refused. Runs on every
    lookup, so the common case (an ``async def``) is one flag test.
    """
    code = getattr(loader, "__code__", None)  # bound methods forward it from __func__
    if code is None or code.co_flags & _ASYNC_FLAGS or code.co_name == "<lambda>":
        return
    target = getattr(loader, "__func__", loader)
    if (
        inspect.isfunction(target)
        and not inspect.iscoroutinefunction(target)
        and not _returns_awaitable(target)
    ):
        raise TypeError(f"{what} {target.__qualname__!r} is synchronous: {SYNC_HINT}")


def _returns_awaitable(func: Callable[..., Any]) -> bool:
    """True when ``func`` is annotated as returning an awaitable (a sync def handing one back)."""
    returns = getattr(func, "__annotations__", {}).get("return")
    text = returns if isinstance(returns, str) else getattr(returns, "__name__", "")
    return any(word in str(text) for word in ("Awaitable", "Coroutine", "Future", "Task"))
