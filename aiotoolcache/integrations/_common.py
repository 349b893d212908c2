"""What the framework adapters share: plain-data checks, tool policies, cached tool calls."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from aiotoolcache import calls
from aiotoolcache.errors import ConfigurationError, KeyEncodingError
from aiotoolcache.policy import ToolPolicy, cacheable, with_lists, writes

if TYPE_CHECKING:
    from aiotoolcache.cache import Layer
    from aiotoolcache.layers import LayerConfig
    from aiotoolcache.toolcache import ToolCache

FORMAT = 1
"""Version of the tool-call payloads; a stored payload of another version is a miss."""

UNCACHEABLE_KEY = "uncacheable"
"""Marks a loader's value that is handed back to its callers but never stored."""

ResultT = TypeVar("ResultT")
SubjectT = TypeVar("SubjectT")
ValueT = TypeVar("ValueT")


def partition_for_token(token: str) -> str:
    """Return an opaque partition for an access token: its SHA-256, never the token itself."""
    return "tok:" + hashlib.sha256(token.encode()).hexdigest()


class Uncached(Generic[ValueT]):
    """An outcome a loader hands back to its callers that is never stored."""

    __slots__ = ("value",)

    def __init__(self, value: ValueT) -> None:
        self.value = value


def ensure_layer(cache: ToolCache, name: str, config: LayerConfig) -> Layer:
    """Return the layer ``name``, adding it with ``config`` when the cache has none."""
    try:
        return cache.layer(name)
    except ConfigurationError:
        return cache.add_layer(name, config)


def is_plain(value: Any) -> bool:
    """True when ``value`` survives a msgpack round trip unchanged (no tuples, no non-str keys)."""
    if value is None or isinstance(value, str | bytes | bool | int | float):
        return True
    if isinstance(value, list):
        return all(is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def storable(value: Any) -> bool:
    """Return True for a loader's value the cache may store: a dict not marked uncacheable."""
    return isinstance(value, dict) and not value.get(UNCACHEABLE_KEY, False)


def names(value: Collection[str]) -> frozenset[str]:
    """A set of tool names; a lone string is one name, not its characters."""
    return frozenset([value] if isinstance(value, str) else value)


def allow_policy(
    allow_tools: Collection[str] | Callable[[SubjectT], bool] | None,
) -> frozenset[str] | Callable[[SubjectT], bool] | None:
    """``allow_tools`` with a collection of names made a set; None and predicates unchanged."""
    if allow_tools is None or callable(allow_tools):
        return allow_tools
    return names(allow_tools)


def allowed(
    subject: SubjectT,
    tool_names: Sequence[str],
    allow_tools: Collection[str] | Callable[[SubjectT], bool] | None,
    deny_tools: Collection[str],
) -> bool:
    """False when one of ``tool_names`` is denied, else what ``allow_tools`` says (None: True)."""
    if any(name in deny_tools for name in tool_names):
        return False
    if allow_tools is None:
        return True
    if callable(allow_tools):
        return bool(allow_tools(subject))
    return any(name in allow_tools for name in tool_names)


@dataclass(frozen=True, slots=True)
class ToolDecision:
    """ToolDecision is what one tool's calls do: its policy, whether cached, whether a write."""

    policy: ToolPolicy
    cached: bool
    write: bool


def uncached(decision: ToolDecision) -> ToolDecision:
    """``decision`` with caching off: the call runs every time, a write still invalidates."""
    return ToolDecision(decision.policy, False, decision.write)


class ContextToolNotice:
    """ContextToolNotice logs once per tool that a tool reading its caller's context runs uncached.

    Such a tool's result may depend on who asks (the user, the tenant, the
    thread), which its arguments do not say: caching it on the arguments
    alone would hand one caller's result to another. The message names the
    option that puts the part of the context that matters into the key.
    """

    __slots__ = ("_context", "_fix", "_log", "_told")

    def __init__(self, log: logging.Logger, context: str, fix: str) -> None:
        self._log = log
        self._context = context
        self._fix = fix
        self._told: set[str] = set()  # tool names already logged; grows with the tool set only

    def __call__(self, tool: str) -> None:
        """Log the notice for ``tool`` unless it was logged before."""
        if tool in self._told:
            return
        self._told.add(tool)
        self._log.warning(
            "tool %r takes a %s, so its result may depend on who calls it: it is not cached. %s",
            tool,
            self._context,
            self._fix,
        )


def decide(
    cache: ToolCache,
    server_id: str,
    tool: str,
    annotations: Any,
    *,
    trusted: bool = True,
    allowed: bool = False,
    denied: bool = False,
) -> ToolDecision:
    """Return the decision for ``tool``: its policy with the allow/deny lists, then annotations.

    ``allowed`` (named in an allow list) caches the tool whatever its
    annotations say; ``denied`` never caches it; annotations can restrict
    caching but never loosen a deny. ``annotations=LISTS`` is for frameworks
    with no read-only marker: a tool is a read exactly when it is cached.
    """
    policy = with_lists(cache.tool_policy(server_id, tool), allowed, denied)
    if annotations is LISTS:
        annotations = {"readOnlyHint": policy.cache is not False}
    return ToolDecision(
        policy, cacheable(policy, annotations, trusted), writes(policy, annotations, trusted)
    )


LISTS: Any = object()
"""Annotations placeholder: no read-only marker known, the allow/deny lists and policy decide."""


def annotations_in(metadata: Any) -> Any:
    """MCP-style annotations found in framework tool ``metadata``, else ``LISTS``.

    Tools converted from MCP servers carry ``readOnlyHint`` in their metadata
    (directly or under ``"annotations"``); local function tools usually carry
    nothing, and then the allow and deny lists say which tools are reads.
    """
    if isinstance(metadata, Mapping):
        for candidate in (metadata, metadata.get("annotations")):
            if isinstance(candidate, Mapping) and (
                "readOnlyHint" in candidate or "read_only_hint" in candidate
            ):
                return candidate
    return LISTS


class Outcome(Generic[ResultT]):
    """What this caller's own loader produced; the tool ran for this call only if it ``owns``."""

    __slots__ = ("error", "result", "returned")

    def __init__(self) -> None:
        self.returned: dict[str, Any] | None = None
        self.result: ResultT | None = None
        self.error: Exception | None = None

    def owns(self, value: Any) -> bool:
        """True only for the very object this caller's loader returned."""
        return self.returned is not None and value is self.returned


async def call_through(
    cache: ToolCache,
    server_id: str,
    tool_name: str,
    arguments: Any,
    run: Callable[[], Awaitable[ResultT]],
    *,
    dump: Callable[[ResultT], dict[str, Any] | None],
    restore: Callable[[dict[str, Any]], ResultT],
    partition: str | None,
    ttl: float | None,
    decision: ToolDecision | None = None,
) -> ResultT:
    """A tool call's result from the results layer or ``run()``; exceptions are never stored.

    Under ``decision`` (default: the tool's policy, cached, not a write) a
    write runs and then drops the results it invalidates, however it ended;
    an uncached tool just runs.
    """
    if decision is None:
        decision = ToolDecision(cache.tool_policy(server_id, tool_name), True, False)
    if decision.write:
        return await calls.run_write(cache, server_id, decision.policy, run, partition=partition)
    if not decision.cached:
        return await calls.run_uncached(run)
    # ``dump`` makes a result the payload to store (None: not stored); ``restore``
    # makes a stored payload a result again, raising LookupError or ValueError
    # when it does not fit (then the tool runs). The loader can also run as a
    # background refresh or for a concurrent identical call: only the very object
    # it returned means "ran for us".
    outcome: Outcome[ResultT] = Outcome()

    async def load() -> dict[str, Any]:
        value: dict[str, Any] = {UNCACHEABLE_KEY: True}
        try:
            result = await run()
        except Exception as exc:  # never cached; re-raised below for this caller
            outcome.error = exc
        else:
            outcome.result = result
            payload = dump(result)
            if payload is not None:
                value = {"v": FORMAT, **payload}
        outcome.returned = value
        return value

    policy = decision.policy
    try:
        value = await calls.read_through(
            cache.results,
            cache.policies,
            policy,
            cache.codec,
            calls.policy_key("call_tool", server_id, tool_name, arguments, policy),
            server_id,
            tool_name,
            load,
            partition=partition,
            ttl=ttl,
            should_cache=storable,
        )
    except KeyEncodingError:
        # Arguments with no canonical form: run the tool uncached.
        return await calls.run_uncached(run)
    if outcome.owns(value):
        if outcome.error is not None:
            raise outcome.error
        return cast(ResultT, outcome.result)
    if storable(value):
        if value.get("v") == FORMAT:
            try:
                return restore(value)
            except (LookupError, ValueError):
                pass
        # A stored payload this release cannot read: a miss, counted, and the tool runs.
        cache.results.counters.corrupt += 1
    # Or a concurrent identical call produced an uncacheable result: run our own.
    return await calls.run_uncached(run)
