"""Where a ToolCache keeps its data: arguments first, then the environment.

``AIOTOOLCACHE_URL`` (absent: the embedded in-process default),
``AIOTOOLCACHE_NAMESPACE`` and ``AIOTOOLCACHE_SECRET``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from aiotoolcache.errors import ConfigurationError
from aiotoolcache.urls import check_url

__all__ = ["Settings", "parse_backend_url"]

DEFAULT_NAMESPACE = "atc"
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings are the resolved connection options of one ToolCache."""

    url: str | None
    namespace: str
    secret: str | None

    @classmethod
    def resolve(
        cls, url: str | None = None, namespace: str | None = None, secret: str | None = None
    ) -> Settings:
        url = url if url is not None else os.environ.get("AIOTOOLCACHE_URL") or None
        namespace = namespace or os.environ.get("AIOTOOLCACHE_NAMESPACE") or DEFAULT_NAMESPACE
        secret = secret if secret is not None else os.environ.get("AIOTOOLCACHE_SECRET") or None
        if not _NAMESPACE.match(namespace):
            raise ConfigurationError(
                f"namespace must be 1-64 characters of [A-Za-z0-9_.-], got {namespace!r}"
            )
        if url is not None:
            parse_backend_url(url)
        return cls(url=url, namespace=namespace, secret=secret)


def parse_backend_url(url: str) -> tuple[str, str]:
    """Return ``(kind, location)`` of a strictly checked cache URL (see :mod:`aiotoolcache.urls`).

    kind is memory, file, redis, cluster, sentinel or cassette. Raises
    ConfigurationError naming the problem, with any password masked.
    """
    return check_url(url)
