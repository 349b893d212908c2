"""Where a ToolCache keeps its data: arguments first, then the environment.

``AIOTOOLCACHE_URL`` (absent: the embedded in-process default),
``AIOTOOLCACHE_NAMESPACE`` and ``AIOTOOLCACHE_SECRET`` (one secret, or several
separated by commas while rotating: the first signs, every one verifies).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
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
    secret: str | bytes | tuple[str | bytes, ...] | None

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        namespace: str | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
    ) -> Settings:
        url = url if url is not None else os.environ.get("AIOTOOLCACHE_URL") or None
        namespace = namespace or os.environ.get("AIOTOOLCACHE_NAMESPACE") or DEFAULT_NAMESPACE
        if secret is None:
            secret = env_secrets(os.environ.get("AIOTOOLCACHE_SECRET"))
        elif not isinstance(secret, str | bytes):
            secret = tuple(secret)
        if not _NAMESPACE.match(namespace):
            raise ConfigurationError(
                f"namespace must be 1-64 characters of [A-Za-z0-9_.-], got {namespace!r}"
            )
        if url is not None:
            parse_backend_url(url)
        return cls(url=url, namespace=namespace, secret=secret)


def env_secrets(value: str | None) -> str | tuple[str, ...] | None:
    """Return the secrets in an ``AIOTOOLCACHE_SECRET`` value: comma-separated, first signs.

    A secret given in code (``secret=``) is never split; one that contains a
    comma can only be given that way. Raises ConfigurationError for an empty item.
    """
    if not value:
        return None
    if "," not in value:
        return value
    items = tuple(item.strip() for item in value.split(","))
    if not all(items):
        raise ConfigurationError("AIOTOOLCACHE_SECRET holds an empty secret between commas")
    return items


def parse_backend_url(url: str) -> tuple[str, str]:
    """Return ``(kind, location)`` of a strictly checked cache URL (see :mod:`aiotoolcache.urls`).

    kind is memory, file, redis, cluster, sentinel or cassette. Raises
    ConfigurationError naming the problem, with any password masked.
    """
    return check_url(url)
