"""The version of what a FastMCP listing can show: a digest that changes with the server.

A cached listing is keyed on it, so it follows the server without waiting
for its TTL: a component added, removed or replaced at runtime
(``server.add_tool``, ``remove_tool``, on the server or a mounted one), a
server-wide ``enable``/``disable``, and the calling session's own visibility
rules (``ctx.enable_components`` / ``disable_components`` /
``reset_visibility``, on every protocol version) all give a new version, so
the next listing is loaded afresh and stored under it. Servers with the same
components (replicas of one deployment) get the same version and share
their listings.
"""

from __future__ import annotations

import weakref
from hashlib import blake2b
from typing import Any

import orjson
from fastmcp.server.context import Context
from fastmcp.server.transforms.visibility import get_visibility_rules

__all__ = ["component_set_version"]

# How deep mounted servers and wrapped providers are followed (a cycle stops here too).
_MAX_DEPTH = 16

# id(component) -> (a weak reference to it, the digest of its content): a
# component's digest is computed once, however often listings are served.
_digests: dict[int, tuple[weakref.ref[Any], str]] = {}


async def component_set_version(ctx: Context) -> str | None:
    """The version of what a listing for this request can show; None when it cannot be known.

    None (the session's rules could not be read) means the listing is
    loaded, never served from the cache.
    """
    parts: list[Any] = []
    _describe(ctx.fastmcp, parts, 0)
    try:
        rules = await get_visibility_rules(ctx)
    except Exception:  # the session state store failed: no version, no cached listing
        return None
    parts.append(rules)
    blob = orjson.dumps(parts, default=repr, option=orjson.OPT_SORT_KEYS)
    return blake2b(blob, digest_size=16).hexdigest()


def _describe(provider: Any, parts: list[Any], depth: int) -> None:
    """Append what ``provider`` contributes to a listing: its kind, transforms and components."""
    if depth > _MAX_DEPTH:
        parts.append("too deep")
        return
    parts.append(type(provider).__qualname__)
    parts.append([repr(transform) for transform in getattr(provider, "transforms", ())])
    # A LocalProvider keeps its registry in ``_components`` (no public accessor
    # that does not build the listing itself).
    components = getattr(provider, "_components", None)
    if isinstance(components, dict):
        parts.append(sorted((str(key), _digest(c)) for key, c in components.items()))
    for child in getattr(provider, "providers", ()):  # an aggregate; a FastMCP server is one
        _describe(child, parts, depth + 1)
    mounted = getattr(provider, "server", None)  # a mounted FastMCP server
    if mounted is not None and mounted is not provider:
        _describe(mounted, parts, depth + 1)
    inner = getattr(provider, "_inner", None)  # a provider wrapped in a transform
    if inner is not None:
        _describe(inner, parts, depth + 1)


def _digest(component: Any) -> str:
    """A digest of ``component``'s content; a replaced component (a new object) gets a new one."""
    key = id(component)
    entry = _digests.get(key)
    if entry is not None and entry[0]() is component:
        return entry[1]
    try:
        content = component.model_dump_json(exclude={"fn"}).encode()
        digest = blake2b(content, digest_size=16).hexdigest()
    except Exception:  # content with no JSON form: this object's identity (not shared)
        digest = f"id:{key}"

    def forget(_: weakref.ref[Any]) -> None:
        _digests.pop(key, None)

    try:
        ref = weakref.ref(component, forget)
    except TypeError:
        return digest
    _digests[key] = (ref, digest)
    return digest
