"""A server's flavour, version and fast paths, from its INFO reply and from live servers."""

from __future__ import annotations

import logging
import os

import pytest

import aiotoolcache as atc
from aiotoolcache.local_server import SERVER_ENV, ServerBinary, find_server, require_server
from aiotoolcache.server_info import ServerInfo, read_server_info, server_info
from tests.servers import RedisServer


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"redis_version": "7.0.15", "redis_mode": "standalone"}, ("Redis", (7, 0, 15))),
        ({"redis_version": "7.2.4", "valkey_version": "9.1.2"}, ("Valkey", (9, 1, 2))),
        ({"redis_version": "7.2.4", "server_name": "valkey"}, ("Valkey", (7, 2, 4))),
        ({"redis_version": "8.4.0-rc1"}, ("Redis", (0, 0, 0))),
        ({"redis_version": "8"}, ("Redis", (8, 0, 0))),
        ({}, ("Redis", (0, 0, 0))),
    ],
)
def test_flavour_and_version_come_from_info(
    info: dict[str, str], expected: tuple[str, tuple[int, int, int]]
) -> None:
    server = server_info(info)
    assert (server.flavour, server.version) == expected


@pytest.mark.parametrize(
    ("flavour", "version", "nx_get", "ifeq", "delete"),
    [
        ("Redis", (6, 2, 14), False, False, None),
        ("Redis", (7, 0, 15), True, False, None),
        ("Redis", (8, 2, 0), True, False, None),
        ("Redis", (8, 4, 0), True, True, "DELEX"),
        ("Valkey", (8, 0, 1), True, False, None),
        ("Valkey", (8, 1, 0), True, True, None),
        ("Valkey", (9, 0, 0), True, True, "DELIFEQ"),
        ("Valkey", (9, 1, 2), True, True, "DELIFEQ"),
    ],
)
def test_fast_paths_follow_flavour_and_version(
    flavour: str, version: tuple[int, int, int], nx_get: bool, ifeq: bool, delete: str | None
) -> None:
    server = ServerInfo(flavour, version)
    assert (server.set_nx_get, server.set_ifeq, server.compare_and_delete) == (nx_get, ifeq, delete)
    assert server.describe().startswith(f"{flavour} {server.version_text} (standalone); ")


@pytest.mark.parametrize("which", ["chosen", "bundled"])
async def test_the_fast_paths_a_live_server_is_said_to_have_are_accepted(
    which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = require_server() if which == "chosen" else bundled_server()
    with monkeypatch.context() as patched:  # the suite's own choice of server stays as it was
        patched.setenv(SERVER_ENV, binary.path)
        server = RedisServer().start()
    try:
        async with atc.ToolCache.from_url(server.url, namespace="info") as cache:
            described = cache.server
        assert described is not None
        assert (described.flavour, described.version_text) == (binary.flavour, binary.version)
        with server.client() as client:
            assert client.set("k", b"a")
            if described.set_nx_get:
                assert client.set("k", b"x", nx=True, get=True) == b"a"
            if described.set_ifeq:
                client.execute_command("SET", "k", b"b", "IFEQ", b"a")
                assert client.get("k") == b"b"
            if described.compare_and_delete == "DELIFEQ":
                assert client.execute_command("DELIFEQ", "k", b"b") == 1
            elif described.compare_and_delete == "DELEX":
                assert client.execute_command("DELEX", "k", "IFEQ", b"b") == 1
    finally:
        server.stop()


def bundled_server() -> ServerBinary:
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = ""
    try:
        found = find_server()
    finally:
        os.environ["PATH"] = saved
    assert found is not None and found.flavour == "Valkey"
    return found


async def test_start_logs_the_server_in_one_line(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiotoolcache")
    async with atc.ToolCache.from_url(redis_url, namespace="info") as cache:
        assert cache.server is not None
    line = next(r.getMessage() for r in caplog.records if "cache backend:" in r.getMessage())
    expected = require_server()
    assert f"{expected.flavour} {expected.version} (standalone); SET NX GET on" in line


async def test_a_server_that_refuses_info_is_simply_not_described(own_redis: RedisServer) -> None:
    with own_redis.client() as client:
        client.execute_command("ACL", "SETUSER", "default", "-info")
    async with atc.ToolCache.from_url(own_redis.url, namespace="info") as cache:
        assert cache.server is None
        assert await read_server_info(cache.client) is None
        assert await cache.results.get_or_load("k", _one) == 1


async def _one() -> int:
    return 1
