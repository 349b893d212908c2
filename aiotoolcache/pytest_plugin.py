"""The pytest plugin: a ``tool_cassette`` fixture that records and replays a test's tool calls.

Registered through the ``pytest11`` entry point, so installing aiotoolcache
enables it. ``tool_cassette`` is a ToolCache bound to
``tests/cassettes/<test module>/<test name>.jsonl`` (under the rootdir;
the ``tool_cassette_dir`` ini option moves it). ``--tool-cassettes=MODE``
sets the mode of every cassette; without it a test replays its cassette, or
records it when the file does not exist yet. ``@pytest.mark.tool_cassette(
path=..., mode=..., order=..., redact=...)`` overrides them for one test.

A test replaying its cassette never runs a loader: a call not on the tape
raises CassetteMiss, and the test fails with it at teardown even when an
agent framework caught the exception and told the model instead.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiotoolcache.cassette import MODES
from aiotoolcache.errors import ConfigurationError
from aiotoolcache.toolcache import ToolCache

__all__ = ["cassette_path", "tool_cassette"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_CALL_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aiotoolcache", "tool-call cassettes (aiotoolcache)")
    group.addoption(
        "--tool-cassettes",
        choices=MODES,
        default=None,
        help="mode of every tool_cassette: record, replay, once or new "
        "(default: replay, or once for a cassette not recorded yet)",
    )
    parser.addini(
        "tool_cassette_dir",
        "directory of tool_cassette files, relative to the rootdir",
        default="tests/cassettes",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tool_cassette(path=None, mode=None, order=None, redact=None): "
        "options of this test's tool_cassette (aiotoolcache)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def cassette_path(request: pytest.FixtureRequest) -> Path:
    """The default cassette of a test: ``<dir>/<test module>/<test name>.jsonl``."""
    root = Path(request.config.rootpath)
    directory = root / str(request.config.getini("tool_cassette_dir"))
    module = Path(str(request.node.path)).stem
    name = _UNSAFE.sub("-", request.node.name).strip("-") or "test"
    return directory / module / f"{name}.jsonl"


@pytest.fixture
def tool_cassette(request: pytest.FixtureRequest) -> Iterator[ToolCache]:
    """A ToolCache that records this test's calls to its cassette, or replays them."""
    marker = request.node.get_closest_marker("tool_cassette")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    unknown = set(options) - {"path", "mode", "order", "redact"}
    if unknown:
        raise ConfigurationError(f"unknown tool_cassette marker options: {sorted(unknown)}")
    path = options.pop("path", None)
    path = cassette_path(request) if path is None else Path(request.config.rootpath) / path
    mode = options.pop("mode", None) or request.config.getoption("--tool-cassettes")
    if mode is None:
        mode = "replay" if path.exists() else "once"
    cache = ToolCache(cassette=path, mode=mode, **options)
    assert cache.cassette is not None
    try:
        yield cache
    finally:
        # Nothing is buffered (every call is on disk when it returns) and a cassette
        # cache has no backend to release; closing the file is all that is left.
        cache.cassette.close()
    # A miss the test did not see (an agent framework caught it and told the model)
    # fails the test here; one that failed the test already is not reported twice.
    if cache.cassette.misses and not request.node.stash.get(_CALL_FAILED, False):
        first = cache.cassette.misses[0]
        more = len(cache.cassette.misses) - 1
        pytest.fail(
            f"{first}" + (f"\n(and {more} more calls not on the cassette)" if more else ""),
            pytrace=False,
        )
