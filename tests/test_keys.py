"""Typed canonical keys: distinct values never share an entry, equal ones always do."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiotoolcache as atc
from aiotoolcache.keys import canonical_json, digest, sanitize_label


def differ(*values: Any) -> bool:
    """True when every value has its own canonical form (and digest)."""
    forms = [canonical_json(value) for value in values]
    return len(set(forms)) == len(forms) and len({digest(v) for v in values}) == len(values)


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


class Mode(enum.StrEnum):
    FAST = "fast"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Size:
    x: int
    y: int


class City(pydantic.BaseModel):
    name: str
    when: dt.date | str


class Town(pydantic.BaseModel):
    name: str
    when: dt.date | str


class Text(str):
    pass


# -- one test per collision class ------------------------------------------------------
def test_nan_and_infinities_are_not_none() -> None:
    nan, inf = math.nan, math.inf
    assert differ(None, nan, inf, -inf, 0.0, "nan", "inf")
    assert differ({"b": None}, {"b": inf}, {"b": -inf}, {"b": nan})
    assert canonical_json(float("nan")) == canonical_json(-math.nan)  # every NaN is one key


async def test_call_tool_with_inf_then_none_runs_the_tool_twice() -> None:
    calls: list[Any] = []

    async with atc.ToolCache() as cache:
        for arguments in ({"b": math.inf}, {"b": None}, {"b": math.inf}):

            async def run(arguments: Any = arguments) -> str:
                calls.append(arguments["b"])
                return f"result for {arguments['b']}"

            result = await cache.call_tool("srv", "tool", arguments, run)
            assert result == f"result for {arguments['b']}"
    assert calls == [math.inf, None]


def test_bytes_str_and_a_look_alike_dict_differ() -> None:
    assert differ(b"ab", "ab", {"$bytes": "YWI="}, [97, 98], "YWI=")
    assert canonical_json(b"ab") == canonical_json(bytearray(b"ab"))
    assert canonical_json(b"ab") == canonical_json(memoryview(b"ab"))


def test_sets_differ_from_lists_and_look_alike_dicts_but_not_from_each_other() -> None:
    assert differ({1, 2}, [1, 2], {"$set": [1, 2]}, {"$set": ["1", "2"]}, {"1", "2"})
    assert (
        canonical_json({3, 1, 2})
        == canonical_json({2, 3, 1})
        == canonical_json(frozenset({1, 2, 3}))
    )
    assert canonical_json({"a", "b", (1, 2)}) == canonical_json({(1, 2), "b", "a"})


def test_datetimes_differ_from_their_strings_and_keep_offset_and_microseconds() -> None:
    naive = dt.datetime(2024, 5, 1, 12, 0)
    utc = naive.replace(tzinfo=dt.UTC)
    paris = dt.datetime(2024, 5, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert utc == paris  # the same instant, written in two offsets: two keys
    assert differ(naive, utc, paris, naive.isoformat(), utc.isoformat(), str(naive))
    assert differ(naive, naive.replace(microsecond=1), naive.replace(microsecond=10))
    same_zone = dt.timezone(dt.timedelta(hours=2), "CEST")
    twin = dt.datetime(2024, 5, 1, 14, 0, tzinfo=same_zone)
    assert canonical_json(paris) == canonical_json(twin)
    assert canonical_json({"at": paris, "n": 1}) == canonical_json({"n": 1, "at": twin})


def test_dates_times_and_timedeltas_have_their_own_keys() -> None:
    day = dt.date(2024, 5, 1)
    assert differ(day, dt.datetime(2024, 5, 1), "2024-05-01", dt.time(12), dt.time(12, 0, 0, 5))
    assert differ(dt.time(12), dt.time(12, tzinfo=dt.UTC), "12:00:00")
    assert differ(dt.timedelta(seconds=1), dt.timedelta(microseconds=1), 1, [0, 1, 0])
    assert canonical_json(dt.timedelta(hours=24)) == canonical_json(dt.timedelta(days=1))


def test_uuids_differ_from_their_strings_and_ints() -> None:
    value = UUID(int=5)
    assert differ(value, str(value), value.hex, 5, UUID(int=6))
    assert canonical_json(value) == canonical_json(UUID(str(value)))


def test_int_and_str_dict_keys_differ() -> None:
    assert differ({1: "x"}, {"1": "x"}, {1.0: "x"}, {True: "x"}, {None: "x"}, {"null": "x"})
    assert differ({(1, 2): "x"}, {"[1,2]": "x"}, {"(1, 2)": "x"})
    assert canonical_json({2: "b", 1: "a", "1": "c"}) == canonical_json({"1": "c", 1: "a", 2: "b"})


def test_a_caller_dict_can_never_pass_for_a_tag() -> None:
    tags = [math.nan, b"x", {1}, UUID(int=1), dt.date(2024, 1, 1), Decimal("1"), 2**70]
    look_alikes = [orjson.loads(canonical_json(value)) for value in tags]
    for value, look_alike in zip(tags, look_alikes, strict=True):
        assert isinstance(look_alike, dict)
        assert differ(value, look_alike)
    assert differ({"$dict": []}, {}, {"$dict": [[1, 2]]}, {1: 2})


def test_bool_int_float_and_decimal_never_share_a_key() -> None:
    # 1 == 1.0 == True == Decimal(1) in Python; JSON and tools tell them apart.
    assert differ(True, 1, 1.0, Decimal("1"), "1")
    assert differ(False, 0, 0.0, -0.0, Decimal("0"), None)
    assert differ(Decimal("1.0"), Decimal("1"), Decimal("NaN"), math.nan)
    assert differ(2**64 - 1, 2**64, float(2**64), -(2**63) - 1, -(2**63))
    assert canonical_json(10**30) == canonical_json(10**30 + 0)


def test_tuples_are_lists_and_plain_keys_keep_their_bytes() -> None:
    key = ("call_tool", "srv", "tool", {"b": [1, (2.5, None)], "a": True})
    assert canonical_json(key) == canonical_json(list(key))
    # Plain keys are written as before, so their entries survive an upgrade.
    assert canonical_json(key) == orjson.dumps(key, option=orjson.OPT_SORT_KEYS)


def test_enum_members_differ_from_their_values() -> None:
    assert differ(Color.RED, "red", Color.BLUE, 2, Level.LOW, 1, Mode.FAST, "fast")
    assert differ({Mode.FAST: 1}, {"fast": 1})
    assert canonical_json(Color("red")) == canonical_json(Color.RED)


def test_dataclasses_carry_their_type() -> None:
    assert differ(Point(1, 2), Size(1, 2), {"x": 1, "y": 2}, (1, 2), Point(2, 1))
    assert canonical_json(Point(1, 2)) == canonical_json(Point(y=2, x=1))


def test_pydantic_models_carry_their_type_and_typed_fields() -> None:
    day = dt.date(2024, 1, 1)
    assert differ(
        City(name="x", when=day),
        City(name="x", when="2024-01-01"),
        Town(name="x", when=day),
        {"name": "x", "when": "2024-01-01"},
    )
    assert canonical_json(City(name="x", when=day)) == canonical_json(City(when=day, name="x"))


def test_str_subclasses_are_strings() -> None:
    assert canonical_json(Text("a")) == canonical_json("a")
    assert canonical_json({Text("k"): [Text("v")]}) == canonical_json({"k": ["v"]})


# -- refusals --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("\ud800", "at $)"),
        ({"args": ["ok", "x\udfff"]}, "at $['args'][1]"),
        ({"\ud800": 1}, "key"),
        ({1: {"\ud800"}}, "{item}"),
    ],
)
def test_a_lone_surrogate_is_a_key_encoding_error_with_its_place(value: Any, where: str) -> None:
    with pytest.raises(atc.KeyEncodingError, match="lone surrogate") as caught:
        canonical_json(value)
    assert where in str(caught.value)


def test_a_lone_surrogate_in_a_partition_or_label_is_a_key_encoding_error() -> None:
    with pytest.raises(atc.KeyEncodingError, match="partition"):
        digest("k", "tenant\ud800")
    with pytest.raises(atc.KeyEncodingError, match="label"):
        sanitize_label("tool\udc00")
    assert sanitize_label("my tool/é") == "my-tool"


def test_a_refused_value_names_its_type_and_place() -> None:
    with pytest.raises(atc.KeyEncodingError, match=r"builtins\.object .*\$\[1\]\['x'\]"):
        canonical_json(["ok", {"x": object()}])
    with pytest.raises(atc.KeyEncodingError, match=r"builtins\.type"):
        canonical_json(Point)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(atc.KeyEncodingError, match="deeper"):
        canonical_json(cycle)


async def test_bad_keys_are_refused_before_the_loader_runs() -> None:
    calls = [0]

    async def load() -> str:
        calls[0] += 1
        return "v"

    async with atc.ToolCache() as cache:
        for bad in ({"q": "\ud800"}, {"q": object()}):
            with pytest.raises(atc.KeyEncodingError):
                await cache.results.get_or_load(bad, load)
        with pytest.raises(atc.KeyEncodingError):
            await cache.results.get_or_load("k", load, partition="\ud800")
        with pytest.raises(atc.KeyEncodingError):
            await cache.results.get_or_load("k", load, label="\ud800")
    assert calls == [0]


# -- properties ------------------------------------------------------------------------
def spec(value: Any) -> Any:
    """The documented equality rule, written apart from the encoder: equal specs share a key."""
    if isinstance(value, enum.Enum):
        return ("enum", type(value), value.name)
    if value is None or isinstance(value, bool):
        return ("const", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, bytes | bytearray):
        return ("bytes", bytes(value))
    if isinstance(value, list | tuple):
        return ("seq", tuple(spec(item) for item in value))
    if isinstance(value, set | frozenset):
        return ("set", tuple(sorted((spec(item) for item in value), key=repr)))
    if isinstance(value, dict):
        pairs = ((spec(key), spec(item)) for key, item in value.items())
        return ("dict", tuple(sorted(pairs, key=repr)))
    if isinstance(value, dt.datetime):
        wall = value.timetuple()[:6] + (value.microsecond,)
        return ("datetime", wall, value.utcoffset())
    if isinstance(value, dt.date):
        return ("date", value.toordinal())
    if isinstance(value, dt.time):
        return (
            "time",
            (value.hour, value.minute, value.second, value.microsecond),
            value.utcoffset(),
        )
    if isinstance(value, dt.timedelta):
        return ("timedelta", value)
    if isinstance(value, UUID):
        return ("uuid", value.int)
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if dataclasses.is_dataclass(value):
        return ("dataclass", type(value), spec(dataclasses.asdict(value)))
    raise AssertionError(f"no rule for {type(value)}")


offsets = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(-dt.timedelta(minutes=90))]
)
hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, 2, -1])
    | st.floats(allow_nan=True)
    | st.sampled_from([0.0, -0.0, 1.0, 2.0, math.inf, -math.inf, math.nan])
    | st.text(max_size=6)
    | st.sampled_from(["", "1", "$set", "$bytes", "nan", "2024-01-01"])
    | st.binary(max_size=4)
    | st.datetimes(timezones=st.none() | offsets)
    | st.dates()
    | st.times(timezones=st.none() | offsets)
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False, places=2)
    | st.sampled_from([Decimal("1"), Decimal("1.0"), Decimal("NaN")])
    | st.sampled_from([Color.RED, Color.BLUE, Level.LOW, Mode.FAST])
    | st.builds(Point, st.integers(0, 2), st.integers(0, 2))
)
key_values = st.recursive(
    hashable_leaves
    | st.frozensets(hashable_leaves, max_size=3)
    | st.sets(hashable_leaves, max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(
            st.text(max_size=4) | st.sampled_from(["$set", "$dict"]), children, max_size=4
        )
        | st.dictionaries(hashable_leaves, children, max_size=3)
    ),
    max_leaves=12,
)


def twin(value: Any) -> Any:
    """A near copy of ``value``: equal in Python, or nearly, and sometimes equal by the rule."""
    if isinstance(value, enum.Enum) or dataclasses.is_dataclass(value):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value) if abs(value) < 2**53 else value + 0
    if isinstance(value, float):
        return -value
    if isinstance(value, str):
        return Text(value)
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, list):
        return tuple(twin(item) for item in value)
    if isinstance(value, tuple):
        return [twin(item) for item in value]
    if isinstance(value, set | frozenset):
        # Reversed insertion: colliding items iterate in another order.
        return type(value)(reversed(list(value)))
    if isinstance(value, dict):
        return {key: twin(value[key]) for key in reversed(list(value))}
    if isinstance(value, dt.datetime | dt.time):
        shifted = dt.timezone(dt.timedelta(hours=2))
        return value.replace(tzinfo=None if value.tzinfo is shifted else shifted)
    if isinstance(value, Decimal):
        return value + Decimal("0.0")
    return value


@settings(max_examples=400, deadline=None)
@given(values=st.lists(key_values, min_size=1, max_size=4))
def test_canonical_forms_agree_exactly_when_the_rule_says_equal(values: list[Any]) -> None:
    # Each value with a near copy and the plain JSON it is written as: look-alikes.
    look_alikes = [orjson.loads(canonical_json(value)) for value in values]
    pool = values + [twin(value) for value in values] + look_alikes
    for a in pool:
        for b in pool:
            same_rule = spec(a) == spec(b)
            assert (canonical_json(a) == canonical_json(b)) is same_rule, (a, b)


@settings(max_examples=200, deadline=None)
@given(value=key_values)
def test_order_of_dicts_and_sets_never_matters(value: Any) -> None:
    def shuffled(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: shuffled(item[key]) for key in reversed(list(item))}
        if isinstance(item, list | tuple):
            return type(item)(shuffled(element) for element in item)
        return item

    assert canonical_json(shuffled(value)) == canonical_json(value)
    assert digest(shuffled(value), "p") == digest(value, "p")
