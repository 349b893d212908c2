"""What the connected server is, and which of its commands save round trips.

Redis and Valkey speak one protocol, but newer servers add commands that let a
cache do in one command what otherwise takes a Lua script: ``SET … NX GET``
(take a lease and read the value at once), ``SET … IFEQ`` (fill only while the
key still holds our lease) and a compare-and-delete (``DELIFEQ`` on Valkey,
``DELEX … IFEQ`` on Redis). Which ones a server has follows from its flavour and
version, read once from ``INFO server``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ServerInfo", "read_server_info", "server_info"]


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """ServerInfo is a server's flavour ("Redis" or "Valkey"), version and mode."""

    flavour: str
    version: tuple[int, int, int]
    mode: str = "standalone"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def _since(self, redis: tuple[int, int], valkey: tuple[int, int]) -> bool:
        return self.version[:2] >= (valkey if self.flavour == "Valkey" else redis)

    @property
    def set_nx_get(self) -> bool:
        """True when ``SET key value NX GET`` is accepted (Redis 7.0, every Valkey)."""
        return self._since(redis=(7, 0), valkey=(7, 2))

    @property
    def set_ifeq(self) -> bool:
        """True when ``SET key value IFEQ expected`` is accepted (Valkey 8.1, Redis 8.4)."""
        return self._since(redis=(8, 4), valkey=(8, 1))

    @property
    def compare_and_delete(self) -> str | None:
        """The one-command compare-and-delete, or None: ``DELIFEQ`` or ``DELEX`` (``IFEQ``)."""
        if self.flavour == "Valkey":
            return "DELIFEQ" if self.version[:2] >= (9, 0) else None
        return "DELEX" if self.version[:2] >= (8, 4) else None

    @property
    def fast_paths(self) -> dict[str, bool]:
        """Each command that saves a round trip, and whether this server has it."""
        delete = "DELIFEQ" if self.flavour == "Valkey" else "DELEX IFEQ"
        return {
            "SET NX GET": self.set_nx_get,
            "SET IFEQ": self.set_ifeq,
            delete: self.compare_and_delete is not None,
        }

    def describe(self) -> str:
        """One line, such as ``Valkey 9.1.2 (standalone); SET NX GET on, SET IFEQ on, …``."""
        paths = ", ".join(f"{name} {'on' if on else 'off'}" for name, on in self.fast_paths.items())
        return f"{self.flavour} {self.version_text} ({self.mode}); {paths}"


def server_info(info: Mapping[str, Any]) -> ServerInfo:
    """Read a server's flavour and version from its ``INFO server`` reply.

    Valkey reports ``redis_version:7.2.4`` for compatibility; its own version is
    ``valkey_version`` (with ``server_name:valkey``). A version that does not
    parse reads as 0.0.0, so no fast path is assumed.
    """
    text = {str(name): value for name, value in info.items()}
    valkey = "valkey_version" in text or str(text.get("server_name", "")).lower() == "valkey"
    raw = text.get("valkey_version", text.get("redis_version"))
    return ServerInfo(
        flavour="Valkey" if valkey else "Redis",
        version=_parse_version(raw),
        mode=str(text.get("redis_mode", text.get("server_mode", "standalone"))),
    )


def _parse_version(raw: Any) -> tuple[int, int, int]:
    parts = str(raw if raw is not None else "").split(".")
    numbers: list[int] = []
    for part in parts[:3]:
        if not part.isdigit():
            return (0, 0, 0)
        numbers.append(int(part))
    while len(numbers) < 3:
        numbers.append(0)
    return (numbers[0], numbers[1], numbers[2])


async def read_server_info(client: Any) -> ServerInfo | None:
    """Ask a connected client's server what it is; None when it does not say (INFO refused).

    A cluster client answers per node; the first node speaks for all of them.
    """
    try:
        reply = await client.info("server")
    except Exception:  # refused by an ACL, or the server went away: not knowing is fine
        return None
    if reply and all(isinstance(value, Mapping) for value in reply.values()):
        reply = next(iter(reply.values()))
    return server_info(reply) if reply else None
