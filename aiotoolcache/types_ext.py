"""Cached values as msgpack: JSON-like data natively, everyday Python types as extension types.

``None``, bool, int, float, str, bytes, list and dict are plain msgpack. Every
other type a tool result commonly holds travels as a msgpack extension type and
comes back with its type: tuple, set, frozenset, datetime (naive or aware, with
a fixed-offset ``timezone`` or a ``zoneinfo.ZoneInfo`` by key), date, time,
timedelta, UUID, Decimal and integers beyond 64 bits. pydantic models, Enums
and dataclasses come back only as classes registered in a ``ModelRegistry``:
the stored data names a registration, never a class path to import, and
nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack

from aiotoolcache.errors import CachedLoaderError, ConfigurationError, UnserializableValue

__all__ = ["ModelRegistry", "ValueCodec"]

# Extension type codes: part of the wire format, never renumber them.
EXT_MODEL = 1
EXT_ERROR = 2
EXT_TUPLE = 3
EXT_SET = 4
EXT_FROZENSET = 5
EXT_DATETIME = 6
EXT_DATE = 7
EXT_TIME = 8
EXT_TIMEDELTA = 9
EXT_UUID = 10
EXT_DECIMAL = 11
EXT_ENUM = 12
EXT_DATACLASS = 13
EXT_BIGINT = 14

_REUSE_LIMIT = 256 * 1024
# How many tuples, sets and registered objects may nest inside one another.
# Each level of decoding recurses through msgpack's C code with a large stack
# frame, so hostile bytes nesting thousands deep would overflow the C stack
# (a crash, not an exception) long before Python's recursion limit.
MAX_DEPTH = 16
_FIX_HINT = (
    "register the class with cache.register_model() (pydantic models, dataclasses and "
    "Enums), or return JSON-like data (dict, list, str, numbers)"
)


class ModelRegistry:
    """ModelRegistry maps names to the pydantic models, Enums and dataclasses allowed in values.

    Decoding never imports a class path found in data: an unknown name is a miss.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[Any]] = {}
        self._by_class: dict[type[Any], tuple[str, int]] = {}

    def register(self, model: type[Any], name: str | None = None) -> None:
        """Allow ``model`` in cached values under ``name`` (default: its module and qualname).

        ``model`` is a pydantic model class, an Enum or a dataclass. Raises
        ConfigurationError for any other class, or when the name already
        belongs to another class.
        """
        code = _kind_of(model)
        name = name or f"{model.__module__}.{model.__qualname__}"
        existing = self._by_name.get(name)
        if existing is not None and existing is not model:
            raise ConfigurationError(f"model name {name!r} is already registered")
        self._by_name[name] = model
        self._by_class[model] = (name, code)

    def name_of(self, model: type[Any]) -> str | None:
        """Return the registered name of ``model``, or None when it is not registered."""
        entry = self._by_class.get(model)
        return None if entry is None else entry[0]

    def model_for(self, name: str) -> type[Any] | None:
        """Return the class registered as ``name``, or None: never imported from the name."""
        return self._by_name.get(name)

    def entry_of(self, model: type[Any]) -> tuple[str, int] | None:
        """Return ``(name, extension code)`` of a registered class, or None."""
        return self._by_class.get(model)

    def lookup(self, name: Any, code: int) -> type[Any]:
        """Return the class registered as ``name`` for extension ``code``; ValueError otherwise."""
        model = self._by_name.get(name) if isinstance(name, str) else None
        if model is None or self._by_class[model][1] != code:
            raise ValueError(f"model {name!r} is not registered")
        return model


def _kind_of(model: Any) -> int:
    if isinstance(model, type) and issubclass(model, enum.Enum):
        return EXT_ENUM
    if isinstance(model, type) and callable(getattr(model, "model_validate", None)):
        return EXT_MODEL
    if isinstance(model, type) and dataclasses.is_dataclass(model):
        return EXT_DATACLASS
    raise ConfigurationError(f"{model!r} is not a pydantic model class, an Enum or a dataclass")


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType's own constructor re-validates what this module already knows
    # to be an int code and bytes; skipping it halves the cost of a tuple.
    return tuple.__new__(msgpack.ExtType, (code, data))


def _unpack_plain(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _pack_plain(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def _tz_state(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, ZoneInfo) and tz.key is not None:
        return tz.key
    if type(tz) is dt.timezone:
        # (offset,) or (offset, name): an explicit name is kept, a default one is not.
        args = cast(tuple[Any, Any], tz.__reduce__())[1]
        micros = args[0] // dt.timedelta(microseconds=1)
        return [micros, args[1]] if len(args) > 1 else [micros]
    raise UnserializableValue(
        f"cannot cache a time zone of type {type(tz).__qualname__}: "
        "use datetime.timezone or zoneinfo.ZoneInfo",
        value_type=type(tz).__qualname__,
    )


def _tz_from(state: Any) -> dt.tzinfo | None:
    if state is None:
        return None
    if isinstance(state, str):
        return ZoneInfo(state)  # validates the key; never reads outside the tz database
    offset = dt.timedelta(microseconds=state[0])
    return dt.timezone(offset, state[1]) if len(state) > 1 else dt.timezone(offset)


def _datetime(v: dt.datetime) -> tuple[int, bytes]:
    fields = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold]
    return EXT_DATETIME, _pack_plain([*fields, _tz_state(v.tzinfo)])


def _time(v: dt.time) -> tuple[int, bytes]:
    fields = [v.hour, v.minute, v.second, v.microsecond, v.fold, _tz_state(v.tzinfo)]
    return EXT_TIME, _pack_plain(fields)


def _date(v: dt.date) -> tuple[int, bytes]:
    return EXT_DATE, _pack_plain([v.year, v.month, v.day])


def _timedelta(v: dt.timedelta) -> tuple[int, bytes]:
    return EXT_TIMEDELTA, _pack_plain([v.days, v.seconds, v.microseconds])


def _uuid(v: UUID) -> tuple[int, bytes]:
    return EXT_UUID, v.bytes


def _decimal(v: Decimal) -> tuple[int, bytes]:
    return EXT_DECIMAL, str(v).encode()  # exact: keeps digits, exponent, sign, NaN


def _bigint(v: int) -> tuple[int, bytes]:
    return EXT_BIGINT, str(int(v)).encode()


# Types encoded without recursion, by exact type (subclasses fall back to these
# below in _default). Order matters there: datetime is a subclass of date.
_SCALARS: dict[type[Any], Callable[[Any], tuple[int, bytes]]] = {
    dt.datetime: _datetime,
    dt.date: _date,
    dt.time: _time,
    dt.timedelta: _timedelta,
    UUID: _uuid,
    Decimal: _decimal,
    int: _bigint,  # only ints beyond 64 bits reach the default hook
}
_CONTAINERS: dict[type[Any], int] = {tuple: EXT_TUPLE, set: EXT_SET, frozenset: EXT_FROZENSET}
# Subclasses of plain types without a registration are stored as their base:
# an IntEnum as its int, an OrderedDict as a dict, a namedtuple as a tuple.
_BASES: tuple[tuple[type[Any] | tuple[type[Any], ...], Callable[[Any], Any]], ...] = (
    (int, int),
    (float, float),
    (str, str.__str__),
    ((bytes, bytearray, memoryview), bytes),
    (list, list),
    (dict, dict),
)


def _scalar_decoders() -> dict[int, Callable[[bytes], Any]]:
    def datetime_(data: bytes) -> dt.datetime:
        y, mo, d, h, mi, s, us, fold, tz = _unpack_plain(data)
        return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_from(tz), fold=fold)

    def time_(data: bytes) -> dt.time:
        h, mi, s, us, fold, tz = _unpack_plain(data)
        return dt.time(h, mi, s, us, tzinfo=_tz_from(tz), fold=fold)

    def date_(data: bytes) -> dt.date:
        return dt.date(*_unpack_plain(data))

    def timedelta_(data: bytes) -> dt.timedelta:
        days, seconds, micros = _unpack_plain(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)

    def bigint(data: bytes) -> int:
        return int(data.decode("ascii"))  # bounded by Python's int/str digit limit

    return {
        EXT_DATETIME: datetime_,
        EXT_DATE: date_,
        EXT_TIME: time_,
        EXT_TIMEDELTA: timedelta_,
        EXT_UUID: lambda data: UUID(bytes=data),
        EXT_DECIMAL: lambda data: Decimal(data.decode("ascii")),
        EXT_BIGINT: bigint,
    }


_SCALAR_DECODERS = _scalar_decoders()


class ValueCodec:
    """ValueCodec turns one value into msgpack bytes and back, keeping every supported type.

    Encoding raises UnserializableValue naming the type and the fix; decoding
    raises ValueError (or another plain exception) for anything malformed, which
    the envelope codec reports as CorruptValue.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        # Packers are reused (creating one costs more than packing a small
        # value); each pack pops its own, so nested and threaded packs never share.
        # One default hook, packer pool and ext hook per nesting depth: the
        # depth travels with the call, so counting it costs nothing and is
        # safe across threads. Packers are reused (creating one costs more
        # than packing a small value); each pack pops its own.
        depths = range(MAX_DEPTH + 1)
        self._defaults = [functools.partial(self._default, depth) for depth in depths]
        self._packers: list[list[msgpack.Packer]] = [[] for _ in depths]
        self._hooks = [self._make_hook(depth, allow_errors=False) for depth in depths]
        self._hook_errors = self._make_hook(0, allow_errors=True)

    # -- encoding ---------------------------------------------------------------
    def pack(self, value: Any) -> bytes:
        """Return the msgpack bytes of ``value``."""
        return self._pack_at(0, value)

    def _pack_at(self, depth: int, value: Any) -> bytes:
        if depth > MAX_DEPTH:
            raise _too_deep(value)
        packers = self._packers[depth]
        try:
            packer = packers.pop()
        except IndexError:
            # strict_types: a tuple is not silently packed as a list (nor a subclass
            # of dict/str/int as its base) but reaches _default, which keeps its type.
            packer = msgpack.Packer(
                default=self._defaults[depth], strict_types=True, use_bin_type=True
            )
        packed: bytes = packer.pack(value)
        if len(packed) <= _REUSE_LIMIT:
            # A packer keeps its largest buffer: only those that stayed small
            # go back (one that raised is dropped too).
            packers.append(packer)
        return packed

    def _default(self, depth: int, value: Any) -> Any:
        kind = type(value)
        scalar = _SCALARS.get(kind)
        if scalar is not None:
            return _ext(*scalar(value))
        container = _CONTAINERS.get(kind)
        if container is not None:
            return _ext(container, self._pack_at(depth + 1, list(value)))
        entry = self.registry.entry_of(kind)
        if entry is not None:
            return self._registered(depth + 1, value, *entry)
        if kind is CachedLoaderError:
            return _ext(EXT_ERROR, _pack_plain([value.error_type, value.message]))
        if isinstance(value, enum.Enum) and not isinstance(value, int | str):
            raise _unserializable(value)
        for base, convert in _BASES:
            if isinstance(value, base):
                return convert(value)
        for base, encode in _SCALARS.items():
            if isinstance(value, base):
                return _ext(*encode(value))
        if isinstance(value, tuple | set | frozenset):
            container = _CONTAINERS[next(t for t in _CONTAINERS if isinstance(value, t))]
            return _ext(container, self._pack_at(depth + 1, list(value)))
        raise _unserializable(value)

    def _registered(self, depth: int, value: Any, name: str, code: int) -> msgpack.ExtType:
        if code == EXT_MODEL:
            return _ext(code, _pack_plain([name, value.model_dump(mode="json")]))
        if code == EXT_ENUM:
            return _ext(code, self._pack_at(depth, [name, value.value]))
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        return _ext(code, self._pack_at(depth, [name, fields]))

    def release_buffers(self) -> None:
        """Drop the pooled packers: each holds a 256 KiB buffer outside Python's object heap.

        A closed cache calls it, so its buffers are freed at once rather than when
        the cyclic collector gets to the cache. Packing afterwards builds a new packer.
        """
        for packers in self._packers:
            packers.clear()

    # -- decoding ---------------------------------------------------------------
    def unpack(self, data: bytes, *, allow_errors: bool = False) -> Any:
        """Return the value of ``data``; a cached loader error decodes only when allowed."""
        hook = self._hook_errors if allow_errors else self._hooks[0]
        return msgpack.unpackb(data, raw=False, ext_hook=hook, strict_map_key=False)

    def _make_hook(self, depth: int, *, allow_errors: bool) -> Callable[[int, bytes], Any]:
        registry = self.registry

        def nested(data: bytes) -> Any:
            if depth >= MAX_DEPTH:
                raise _too_deep(None)
            # Errors are only ever a whole value, never nested inside one.
            return msgpack.unpackb(
                data, raw=False, ext_hook=self._hooks[depth + 1], strict_map_key=False
            )

        def hook(code: int, data: bytes) -> Any:
            scalar = _SCALAR_DECODERS.get(code)
            if scalar is not None:
                return scalar(data)
            if code == EXT_TUPLE:
                return tuple(_as_list(nested(data)))
            if code == EXT_SET:
                return set(_as_list(nested(data)))
            if code == EXT_FROZENSET:
                return frozenset(_as_list(nested(data)))
            if code == EXT_MODEL:
                name, fields = _unpack_plain(data)
                return registry.lookup(name, code).model_validate(fields)
            if code == EXT_ENUM:
                name, member = nested(data)
                return registry.lookup(name, code)(member)
            if code == EXT_DATACLASS:
                name, fields = nested(data)
                if not isinstance(fields, dict):
                    raise ValueError("dataclass fields are not a map")
                return registry.lookup(name, code)(**fields)
            if code == EXT_ERROR and allow_errors:
                error_type, message = _unpack_plain(data)
                return CachedLoaderError(str(error_type), str(message))
            raise ValueError(f"extension type {code} is not allowed here")

        return hook


def _too_deep(value: Any) -> UnserializableValue:
    return UnserializableValue(
        f"values nest more than {MAX_DEPTH} tuples, sets or registered objects deep",
        value_type=type(value).__qualname__,
    )


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("container payload is not an array")
    return value


def _unserializable(value: Any) -> UnserializableValue:
    kind = type(value)
    return UnserializableValue(
        f"cannot cache a value of type {kind.__module__}.{kind.__qualname__}: {_FIX_HINT}",
        value_type=kind.__qualname__,
    )
