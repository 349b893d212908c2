"""Everyday Python values come back from the cache equal and of the same type."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import time
import uuid
from collections import OrderedDict, namedtuple
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import aiotoolcache as atc
from aiotoolcache.codec import Codec, CorruptValue, Envelope
from aiotoolcache.errors import ConfigurationError, UnserializableValue, ValueTooLarge
from aiotoolcache.types_ext import EXT_DATACLASS, EXT_ENUM, EXT_TUPLE, ModelRegistry

PARIS = ZoneInfo("Europe/Paris")


class Color(enum.Enum):
    RED = "red"
    BLUE = (0, 0, 255)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""


@dataclasses.dataclass
class Reading:
    at: dt.datetime
    where: Point
    tags: frozenset[str]
    derived: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.derived = len(self.tags)


class Tool(BaseModel):
    name: str


def codec() -> Codec:
    c = Codec(secret="s", compress_threshold=128)
    for cls in (Color, Level, Perm, Point, Reading, Tool):
        c.registry.register(cls)
    return c


def round_trip(value: Any, c: Codec | None = None) -> Any:
    c = c or codec()
    now = time.time()
    data = c.seal("k", Envelope(now, now + 60, 0.0, None, c.encode_value(value)))
    return c.decode(c.open("k", data))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (tz-aware datetimes: same tzinfo)."""
    if isinstance(a, Decimal) and type(b) is Decimal:
        return a.as_tuple() == b.as_tuple()  # same digits and exponent (and NaN is NaN)
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, dt.datetime | dt.time):
        return a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    if isinstance(a, dict):
        return all(same(a[k], b[k]) for k in a) and all(
            same(k, next(j for j in b if j == k)) for k in a
        )
    if isinstance(a, list | tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return True


EVERYDAY = [
    dt.datetime(2026, 11, 27, 16, 51, 9, 123456),
    dt.datetime(2026, 11, 27, 16, 51, 9, 7, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
    dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 59, 999999),
    dt.time(8, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
    dt.timedelta(days=-3, seconds=7, microseconds=11),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("NaN"),
    (1, "a", (2.5, None)),
    (),
    {1, "a", (1, 2)},
    frozenset({b"x", 3}),
    b"\x00\xff raw",
    2**100,
    -(2**80),
    float("inf"),
    Color.RED,
    Color.BLUE,
    Level.HIGH,
    Perm.R | Perm.W,
    Point(1.5, -2.0, "p"),
    Tool(name="search"),
]


@pytest.mark.parametrize("value", EVERYDAY, ids=lambda v: type(v).__name__)
def test_everyday_values_round_trip_with_their_type(value: Any) -> None:
    assert same(round_trip(value), value)


def test_nested_everyday_values_round_trip() -> None:
    value = {
        "when": EVERYDAY[4],
        "items": [(1, EVERYDAY[9]), {"d": Decimal("0.1"), "s": {dt.date(2026, 1, 1)}}],
        (1, "tuple key"): frozenset({dt.timedelta(seconds=1)}),
        3: Reading(dt.datetime(2026, 1, 1, tzinfo=PARIS), Point(0, 0), frozenset({"a", "b"})),
        "model": [Tool(name="a")],
    }
    back = round_trip(value)
    assert back == value
    assert isinstance(back["items"][0], tuple) and isinstance(back["items"][1]["s"], set)
    assert back[3].derived == 2 and back[3].at.tzinfo is PARIS
    assert isinstance(next(iter(back[(1, "tuple key")])), dt.timedelta)


def test_subclasses_of_plain_types_keep_their_value() -> None:
    Pair = namedtuple("Pair", "a b")
    assert same(round_trip(Pair(1, 2)), (1, 2))
    assert same(round_trip(OrderedDict(b=1, a=2)), {"b": 1, "a": 2})

    class Shade(enum.StrEnum):
        DARK = "dark"

    assert same(round_trip(Shade.DARK), "dark")  # unregistered str enum: its value


def test_unregistered_types_name_the_type_and_the_fix() -> None:
    c = Codec()
    for value in (Color.RED, Point(0, 0), Tool(name="x"), object(), {"a": [1, {2: Point(1, 1)}]}):
        with pytest.raises(UnserializableValue) as info:
            c.encode_value(value)
        assert "register_model" in str(info.value)
    assert info.value.value_type == "Point"

    class Local(dt.tzinfo):
        def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
            return dt.timedelta(hours=2)

    with pytest.raises(UnserializableValue, match="zoneinfo"):
        c.encode_value(dt.datetime(2026, 1, 1, tzinfo=Local()))


def test_registered_names_are_never_imported() -> None:
    name_of = ModelRegistry().register
    with pytest.raises(ConfigurationError):
        name_of(int)
    for code in (EXT_ENUM, EXT_DATACLASS):
        payload = msgpack.packb(
            msgpack.ExtType(code, msgpack.packb(["os.system", {"x": 1}])), use_bin_type=True
        )
        with pytest.raises(CorruptValue, match="not registered"):
            codec().decode_value(payload)


def test_a_name_registered_as_one_kind_does_not_decode_as_another() -> None:
    c = Codec()
    c.registry.register(Point, "thing")
    payload = msgpack.packb(msgpack.ExtType(EXT_ENUM, msgpack.packb(["thing", 1])))
    with pytest.raises(CorruptValue, match="not registered"):
        c.decode_value(payload)


@pytest.mark.parametrize(
    "code, data",
    [
        (6, msgpack.packb([2026, 13, 1, 0, 0, 0, 0, 0, None])),  # month 13
        (6, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, "../../etc/passwd"])),
        (6, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, "No/Such_Zone"])),
        (10, b"short"),
        (11, b"not a number"),
        (14, b"12x"),
        (EXT_TUPLE, msgpack.packb({"a": 1})),
        (EXT_DATACLASS, msgpack.packb(["tests.test_types_ext.Point", {"z": 1}])),
        (99, b""),
    ],
)
def test_malformed_extensions_are_corrupt(code: int, data: bytes) -> None:
    c = codec()
    c.registry.register(Point, "tests.test_types_ext.Point")
    with pytest.raises(CorruptValue):
        c.decode_value(msgpack.packb(msgpack.ExtType(code, data)))


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from([Color.RED, Level.LOW, Perm.W])
)
hashables = st.recursive(
    scalars.filter(lambda v: not isinstance(v, dt.datetime | dt.time) or v.tzinfo is None),
    lambda children: st.tuples(children, children) | st.frozensets(children, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    scalars | st.builds(Point, st.floats(allow_nan=False), st.floats(allow_nan=False)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.sets(hashables, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers() | hashables, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_property_values_round_trip_with_their_type(value: Any) -> None:
    back = round_trip(value)
    assert same(back, value)


# -- warnings about values that are not stored -------------------------------------


def test_unstorable_warning_is_logged_once_per_layer_and_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Codec()
    with pytest.raises(UnserializableValue) as info:
        c.encode_value({"x": object()})
    big = ValueTooLarge("2000000 bytes exceed max_value_bytes=1048576")
    with caplog.at_level(logging.WARNING, logger="aiotoolcache.codec"):
        assert c.warn_unstorable("results", info.value)
        assert not c.warn_unstorable("results", info.value)
        assert c.warn_unstorable("search", info.value)
        assert c.warn_unstorable("results", big)
        assert not c.warn_unstorable("results", big)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "register_model" in messages[0] and "max_value_bytes" in messages[2]


async def test_a_layer_warns_once_about_an_unstorable_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with atc.ToolCache() as cache:

        async def load() -> object:
            return object()

        with caplog.at_level(logging.WARNING, logger="aiotoolcache.codec"):
            for key in range(3):
                await cache.results.get_or_load(key, load)
        assert len(caplog.records) == 1
        assert "object" in caplog.records[0].getMessage()
        assert cache.stats()["results"].skipped_writes == 3


async def test_everyday_values_round_trip_through_redis(redis_url: str) -> None:
    async with (
        atc.ToolCache.from_url(redis_url, namespace="types") as writer,
        atc.ToolCache.from_url(redis_url, namespace="types") as reader,
    ):
        for cache in (writer, reader):
            for cls in (Color, Level, Perm, Point, Reading, Tool):
                cache.register_model(cls)
        value = {"result": EVERYDAY, "at": dt.datetime.now(PARIS)}
        await writer.results.set("all", value)
        back = await reader.results.get("all")
        assert same(back["at"], value["at"])  # (NaN makes == on the whole value False)
        assert all(same(x, y) for x, y in zip(back["result"], EVERYDAY, strict=True))


def test_a_failed_encoding_leaves_nothing_behind_for_the_next() -> None:
    c = codec()
    with pytest.raises(UnserializableValue):
        c.encode_value([1, (2, "partly packed", object())])
    assert c.encode_value([(1, 2)]) == codec().encode_value([(1, 2)])
    assert round_trip([(1, 2)], c) == [(1, 2)]


def test_encoding_from_many_threads_at_once_stays_exact() -> None:
    from concurrent.futures import ThreadPoolExecutor

    c = codec()
    values = [{"i": i, "t": (i, str(i) * (i % 50)), "s": {i, -i}} for i in range(400)]
    expected = [Codec().encode_value(v) for v in values]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(c.encode_value, values)) == expected


def nested_tuples(depth: int) -> bytes:
    """Return the msgpack of ``depth`` tuples, each the only item of the next."""
    inner: Any = []
    for _ in range(depth):
        inner = msgpack.ExtType(EXT_TUPLE, msgpack.packb([inner]))
    return bytes(msgpack.packb(inner))


def test_deep_nesting_is_refused_not_a_crash() -> None:
    c = codec()
    deep: Any = ()
    for _ in range(5000):
        deep = (deep,)
    with pytest.raises(UnserializableValue):
        c.encode_value(deep)
    # Hand-built bytes nesting tuples far deeper than any encoder would: this
    # used to overflow the C stack (a crash) before Python's recursion limit.
    with pytest.raises(CorruptValue, match="nest"):
        c.decode_value(nested_tuples(5000))


def test_the_deepest_allowed_nesting_fits_a_small_thread_stack() -> None:
    import threading

    from aiotoolcache.types_ext import MAX_DEPTH

    c = codec()
    value: Any = ()
    for _ in range(MAX_DEPTH - 1):
        value = (value, Point(0, 0))
    data = c.encode_value(value)
    too_deep = nested_tuples(MAX_DEPTH + 1)
    assert c.decode_value(nested_tuples(MAX_DEPTH)) is not None
    results: list[Any] = []

    def work() -> None:
        results.append(c.decode_value(data) == value)
        try:
            c.decode_value(too_deep)
        except CorruptValue:
            results.append("refused")

    old = threading.stack_size(2**20)  # 1 MiB: a quarter of the smallest common default
    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old)
    assert results == [True, "refused"]
