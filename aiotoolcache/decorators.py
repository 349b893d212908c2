"""``@cache.cached``: serve repeated calls of an async function from a cache layer.

The decorated function keeps its signature (ParamSpec) and gains
``invalidate(*args, **kwargs)``, which drops the entry of those arguments in
every worker, and ``key(*args, **kwargs)``, which returns that entry's
``KeyRef``. Synchronous functions are refused before they run, unless
``run_sync=True`` asks for them to run in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.keys import scalar_memo
from aiotoolcache.loaders import SYNC_HINT
from aiotoolcache.policy import ToolPolicy

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer
    from aiotoolcache.keys import KeyRef

__all__ = ["CachedFunction"]

P = ParamSpec("P")
R = TypeVar("R")
PartitionOf = Callable[[Mapping[str, Any]], "str | None"]


def _method_receiver(func: Callable[..., Any]) -> str | None:
    """The name of ``func``'s first parameter when it is ``self`` or ``cls``, else None."""
    try:
        first = next(iter(inspect.signature(func).parameters), None)
    except (TypeError, ValueError):
        return None
    return first if first in ("self", "cls") else None


def _refuse_method(func: Callable[..., Any], receiver: str) -> ConfigurationError:
    name = getattr(func, "__qualname__", repr(func))
    return ConfigurationError(
        f"@cached on {name}(): the key holds its arguments but not {receiver!r}, so every "
        f"instance would share one entry (one tenant's client serving another's results). "
        f"Say how {receiver} enters the key: key_args=[...] naming the arguments that "
        f"identify the result; partition=lambda args: args[{receiver!r}].tenant placing "
        f"each instance's entries apart; or ignore=({receiver!r},) when every instance "
        "returns the same result for the same arguments"
    )


class CachedFunction(Generic[P, R]):
    """CachedFunction is an async function whose results are served from a cache layer.

    The key is the function's qualified name and its bound arguments with
    defaults applied (``f(1)``, ``f(x=1)`` and ``f()`` with default 1 share
    one entry), restricted to ``key_args`` when given (a left-out argument is
    part of the key as "absent"); ``partition(arguments)`` places the entry in
    a partition and sees every argument, ``self`` included. Parameters named
    in ``ignore`` never form the key.

    A method (a first parameter named ``self`` or ``cls``) never has its
    receiver in the key, so it is refused with ConfigurationError unless the
    caller says how instances differ: ``key_args``, ``partition`` or an
    ``ignore`` that names the receiver.
    """

    def __init__(
        self,
        func: Callable[P, Awaitable[R]] | Callable[P, R],
        layer: Layer,
        *,
        ttl: float | None = None,
        key_args: Sequence[str] | None = None,
        partition: PartitionOf | None = None,
        tags: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        run_sync: bool = False,
    ) -> None:
        receiver = _method_receiver(func)
        if isinstance(ignore, str):
            ignore = (ignore,)
        if receiver is not None:
            declared = ignore is not None and receiver in ignore
            if not declared and key_args is None and partition is None:
                raise _refuse_method(func, receiver)
        is_async = inspect.iscoroutinefunction(func)
        if not is_async and not run_sync:
            raise TypeError(f"@cached got the synchronous {func!r}: {SYNC_HINT}")
        if is_async and run_sync:
            raise TypeError(f"run_sync=True is for synchronous functions; {func!r} is async")
        self._func = func
        self._run_sync = run_sync
        self._layer = layer
        self._ttl = ttl
        # Validated like a tool policy's key_args (a lone string is refused).
        self._key_args = ToolPolicy(key_args=key_args).key_args
        self._partition = partition
        self._tags = sorted(set(tags)) if tags else None
        # The receiver is never a key part (objects have no canonical form);
        # its role was declared above.
        self._ignore = frozenset(ignore or ()) | ({receiver} if receiver else set())
        self._signature = inspect.signature(func)
        self._plain = _PlainParameters.of(self._signature)
        self._name = f"{func.__module__}.{func.__qualname__}"
        self._label = func.__name__
        functools.update_wrapper(self, func)
        _mark_coroutine_function(self)

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        # Methods: bind like a function does, so ``obj.method(...)`` passes ``obj``.
        if instance is None:
            return self
        return BoundCachedFunction(self, instance)

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every parameter's value in this call, defaults included (as ``Signature.bind``)."""
        plain = self._plain
        if plain is not None:
            arguments = plain.bind(args, kwargs)
            if arguments is not None:
                return arguments
        # Anything else (``*args``, a missing or unexpected argument: its TypeError).
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def _key(self, arguments: dict[str, Any]) -> tuple[Any, Any]:
        if self._key_args is None:
            return (self._name, {k: v for k, v in arguments.items() if k not in self._ignore})
        # [value] when given, [] when absent: an absent argument never equals None.
        # An argument both ignored and named in key_args is left out, as before.
        chosen = {
            k: [arguments[k]] if k in arguments and k not in self._ignore else []
            for k in self._key_args
        }
        return (self._name, {"key_args": chosen})

    def _where(self, arguments: dict[str, Any]) -> tuple[tuple[Any, Any], str | None]:
        partition = self._partition(arguments) if self._partition is not None else None
        return self._key(arguments), partition

    def _lookup_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str | None]:
        """The key and partition these arguments read: the entry, named once per distinct
        call of plain arguments, or the key itself (a tape records the call's own key)."""
        plain = self._partition is None and self._layer.cassette is None
        memo = scalar_memo(args, kwargs) if plain else None
        if memo is None:
            return self._where(self._arguments(args, kwargs))
        # This function itself in the memo: another one of the same name may key differently.
        ref = self._layer.remembered_ref(
            (self, memo), lambda: self._key(self._arguments(args, kwargs)), label=self._label
        )
        return ref, None

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key, partition = self._lookup_key(args, kwargs)
        func = self._func
        if self._run_sync:

            async def load() -> R:
                return await asyncio.to_thread(func, *args, **kwargs)  # type: ignore[arg-type]

        else:

            async def load() -> R:
                return await func(*args, **kwargs)  # type: ignore[misc, no-any-return]

        value: R = await self._layer.get_or_load(
            key, load, self._ttl, tags=self._tags, partition=partition, label=self._label
        )
        return value

    def key(self, *args: P.args, **kwargs: P.kwargs) -> KeyRef:
        """Return the ``KeyRef`` of the entry these arguments read (for inspection)."""
        key, partition = self._where(self._arguments(args, kwargs))
        return self._layer.ref(key, partition, self._label)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the entry of these arguments in every worker (loads in flight are revoked)."""
        key, partition = self._where(self._arguments(args, kwargs))
        await self._layer.delete(key, partition=partition, label=self._label)


class _PlainParameters:
    """Binds the arguments of a call in a few dict operations, for a signature without
    ``*args``, ``**kwargs`` or positional-only parameters (``Signature.bind`` costs more
    than the rest of a cache hit)."""

    __slots__ = ("count", "defaults", "names", "positional")

    def __init__(
        self, positional: tuple[str, ...], names: frozenset[str], defaults: dict[str, Any]
    ) -> None:
        self.positional = positional
        self.names = names
        self.count = len(names)
        self.defaults = defaults

    @classmethod
    def of(cls, signature: inspect.Signature) -> _PlainParameters | None:
        positional: list[str] = []
        defaults: dict[str, Any] = {}
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                positional.append(parameter.name)
            elif parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                return None
            if parameter.default is not inspect.Parameter.empty:
                defaults[parameter.name] = parameter.default
        return cls(tuple(positional), frozenset(signature.parameters), defaults)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The call's arguments by name, or None when only ``Signature.bind`` can tell."""
        if len(args) > len(self.positional):
            return None
        arguments = dict(zip(self.positional, args, strict=False))  # fewer args: defaults
        for name, value in kwargs.items():
            if name in arguments or name not in self.names:
                return None  # given twice, or unknown
            arguments[name] = value
        if len(arguments) < self.count:
            for name, default in self.defaults.items():
                arguments.setdefault(name, default)
            if len(arguments) < self.count:
                return None  # a required argument is missing
        return arguments


def _mark_coroutine_function(function: CachedFunction[..., Any]) -> None:
    """Make ``inspect.iscoroutinefunction`` true for ``function``, as for an ``async def``.

    Frameworks (FastMCP, LangChain…) decide from it whether to await a tool.
    """
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:  # Python 3.12+
        mark(function)
        return
    # Python 3.11 reads the coroutine flag from a function-like object's __code__;
    # __wrapped__ (set by update_wrapper) still gives the wrapped signature.
    code = CachedFunction.__call__.__code__
    function.__code__ = code  # type: ignore[attr-defined]
    function.__defaults__ = None  # type: ignore[attr-defined]
    function.__kwdefaults__ = None  # type: ignore[attr-defined]


class BoundCachedFunction:
    """BoundCachedFunction is a cached method bound to its instance, with the same helpers."""

    __slots__ = ("_function", "_instance")

    def __init__(self, function: CachedFunction[..., Any], instance: Any) -> None:
        self._function = function
        self._instance = instance

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self._function(self._instance, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> KeyRef:
        """Return the ``KeyRef`` of the entry these arguments read."""
        return self._function.key(self._instance, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Drop the entry of these arguments in every worker."""
        await self._function.invalidate(self._instance, *args, **kwargs)


def cached_function(
    layer: Layer,
    ttl: float | None,
    *,
    key_args: Sequence[str] | None = None,
    partition: PartitionOf | None = None,
    tags: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    run_sync: bool = False,
) -> Callable[[Callable[P, Any]], CachedFunction[P, Any]]:
    """Return a decorator caching a function in ``layer``, keeping its signature."""

    def decorate(func: Callable[P, Any]) -> CachedFunction[P, Any]:
        return CachedFunction(
            func,
            layer,
            ttl=ttl,
            key_args=key_args,
            partition=partition,
            tags=tags,
            ignore=ignore,
            run_sync=run_sync,
        )

    return decorate
