"""Tool policies: per-tool caching rules, and the decisions made from them, without I/O.

A ``ToolPolicy`` says how one tool's results are cached (TTL, key arguments,
minimum load time, size cap) and which cached results a call of it drops
once it ends. ``ToolPolicies`` finds the policy in force for
``"<server_id>/<tool>"`` among fnmatch patterns: an exact name wins over any
pattern, then the longest pattern. The decisions (``cacheable``, ``writes``, the tags of a read
and of a write) are pure functions, so every integration makes them the
same way.

Invalidation by writes uses tags, so it is O(1) and reaches every worker:

- every cached tool result carries ``server:<id>`` (everything about the
  server), ``tool:<id>/<name>`` and ``reads:<id>`` (the server's tool results);
- ``invalidates=["*"]`` (the default of a write) bumps ``reads:<id>``, so
  discovery and search entries of the server stay;
- a pattern without wildcards names one tool: it bumps ``tool:<id>/<name>``;
- a pattern with wildcards bumps ``reads:<id>:<pattern>``, a tag every result
  whose tool name matches it carries. The patterns come from the configured
  policies, so every worker must be configured with the same policies (as
  they must be for TTLs and keys to agree anyway).

A write drops the results of its own partition only: each of the three
tags above also exists per partition (``reads:<id>@p:<digest of the
partition>``), a result carries both forms, and a write bumps the
partition's form. So one tenant's write never flushes another tenant's
results. ``ToolPolicy(invalidates_partitions="all")`` bumps the plain form
instead, reaching every partition (a write to data that tenants share). A
write whose partition its caller does not know (``EVERY_PARTITION``) reaches
every partition too.
"""

from __future__ import annotations

import enum
import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import Any, Final, Literal, TypeVar

from aiotoolcache.errors import ConfigurationError

__all__ = [
    "DEFAULT_POLICY",
    "EVERY_PARTITION",
    "PartitionScope",
    "ToolPolicies",
    "ToolPolicy",
    "cacheable",
    "partition_tag",
    "read_only",
    "with_lists",
    "writes",
]

_WILDCARDS = frozenset("*?[")
_PARTITION_SCOPES = ("own", "all")


class PartitionScope(enum.Enum):
    """PartitionScope names the partition of a write its caller cannot tell."""

    EVERY = "every"


EVERY_PARTITION: Final = PartitionScope.EVERY
"""A write's partition when the caller does not know it: its invalidation reaches every one."""


def partition_tag(tag: str, partition: str | None) -> str:
    """``tag`` scoped to ``partition``: a short digest, so no partition name is stored in clear."""
    if partition is None:
        return f"{tag}@p:-"
    return (
        f"{tag}@p:{blake2b(partition.encode('utf-8', 'surrogatepass'), digest_size=8).hexdigest()}"
    )


def _names(value: Iterable[str] | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigurationError(f"{what} takes a list of names, got the string {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"{what} must hold non-empty strings, got {items!r}")
    return items


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """ToolPolicy is how one tool's results are cached and what a call of it invalidates.

    Args:
        cache: True caches the tool's results whatever its annotations say;
            False never caches them; None lets the integration decide from
            the tool's annotations (cached only when marked read-only).
        ttl: Seconds a result stays fresh (None: the call's or the layer's TTL).
        key_args: Only these arguments form the key (None: all of them); an
            argument the call leaves out is part of the key as "absent".
        min_load_time: A result that loaded faster than this many seconds is
            returned but not stored (cheap calls are not worth an entry).
        invalidates: Tool-name patterns on the same server whose cached results
            a call of this tool drops once it ends (however it ends), in every
            worker. None means the default: ``["*"]`` (all of the server's
            results) when the call is a write. A non-empty list also marks the
            tool as a write; ``[]`` turns invalidation off.
        max_value_bytes: Results whose encoded size exceeds this are returned
            but not stored (a lower cap than the layer's ``max_value_bytes``).
        invalidates_partitions: Whose cached results a write drops:
            ``"own"`` (the default) those of the caller's partition only, so
            one tenant cannot flush another's; ``"all"`` those of every
            partition, for a tool that changes data every tenant reads.
        client_directives: Whether a client may send a cache directive with the
            request (the FastMCP middleware reads ``_meta``
            ``"io.aiotoolcache/cache-control"``); off by default because a
            client could otherwise force loads of an expensive tool.
    """

    cache: bool | None = None
    ttl: float | None = None
    key_args: Sequence[str] | None = None
    min_load_time: float = 0.0
    invalidates: Sequence[str] | None = None
    max_value_bytes: int | None = None
    client_directives: bool = False
    invalidates_partitions: Literal["own", "all"] = "own"

    def __post_init__(self) -> None:
        # Lists are accepted and kept as tuples, so a policy stays hashable and immutable.
        object.__setattr__(self, "key_args", _names(self.key_args, "key_args"))
        object.__setattr__(self, "invalidates", _names(self.invalidates, "invalidates"))
        if self.ttl is not None and self.ttl <= 0:
            raise ConfigurationError(f"ttl must be positive or None, got {self.ttl!r}")
        if self.min_load_time < 0:
            raise ConfigurationError(f"min_load_time must be >= 0, got {self.min_load_time!r}")
        if self.max_value_bytes is not None and self.max_value_bytes <= 0:
            raise ConfigurationError("max_value_bytes must be positive or None")
        if self.invalidates_partitions not in _PARTITION_SCOPES:
            raise ConfigurationError(
                "invalidates_partitions must be 'own' or 'all', "
                f"got {self.invalidates_partitions!r}"
            )

    def with_options(self, **changes: Any) -> ToolPolicy:
        """Return a copy with some fields changed."""
        return replace(self, **changes)


DEFAULT_POLICY = ToolPolicy()
# Distinct (server, tool[, partition]) whose policy and read tags a ToolPolicies remembers.
MEMO_SIZE = 4096
KeyT = TypeVar("KeyT")
ValueT = TypeVar("ValueT")


def _remember(memo: dict[KeyT, ValueT], key: KeyT, value: ValueT) -> ValueT:
    """Keep ``value`` under ``key`` in a memo of at most MEMO_SIZE entries (emptied when full)."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


"""The policy of a tool no configured pattern matches."""


@dataclass(frozen=True, slots=True)
class ToolPolicies:
    """ToolPolicies resolves the policy in force for a tool from ``"<server_id>/<tool>"`` patterns.

    An exact name wins over every pattern; among matching fnmatch patterns
    the longest wins (ties go to the one configured first). The key ``"*"``
    matches every server's tools (the least specific pattern). A tool nothing
    matches gets ``default``.
    """

    patterns: Mapping[str, ToolPolicy] = field(default_factory=dict)
    default: ToolPolicy = DEFAULT_POLICY
    # Every cached call asks for its policy and its read tags, with the same answers.
    _resolved: dict[tuple[str, str], ToolPolicy] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _read_tags: dict[tuple[str, str, object], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        checked: dict[str, ToolPolicy] = {}
        for pattern, policy in dict(self.patterns).items():
            # "*" is the one key without a "/": fnmatch's "*" spans it, so it matches every tool.
            if not isinstance(pattern, str) or ("/" not in pattern and pattern != "*"):
                raise ConfigurationError(
                    f"tool policy keys are '<server_id>/<tool>' patterns or '*', got {pattern!r}"
                )
            if not isinstance(policy, ToolPolicy):
                raise ConfigurationError(f"{pattern!r} maps to {policy!r}, not a ToolPolicy")
            checked[pattern] = policy
        object.__setattr__(self, "patterns", checked)

    @classmethod
    def of(
        cls, value: ToolPolicies | Mapping[str, ToolPolicy] | str | os.PathLike[str] | None
    ) -> ToolPolicies:
        """Return ``value`` as ToolPolicies (None: no configured policy; a path: its file)."""
        if isinstance(value, ToolPolicies):
            return value
        if isinstance(value, str | os.PathLike):
            return cls.from_file(value)
        return cls(dict(value or {}))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ToolPolicies:
        """Read a TOML policy file (see ``aiotoolcache.policy_file``).

        Raises ConfigurationError naming the file, the line and the field of a mistake.
        """
        from aiotoolcache.policy_file import read_policy_file  # it builds on this module

        return read_policy_file(path)

    def resolve(self, server_id: str, tool: str) -> ToolPolicy:
        """Return the policy in force for ``tool`` on ``server_id``."""
        policy = self._resolved.get((server_id, tool))
        if policy is None:
            policy = _remember(self._resolved, (server_id, tool), self._resolve(server_id, tool))
        return policy

    def _resolve(self, server_id: str, tool: str) -> ToolPolicy:
        name = f"{server_id}/{tool}"
        exact = self.patterns.get(name)
        if exact is not None:
            return exact
        best: tuple[int, str] | None = None
        for pattern in self.patterns:
            if _is_pattern(pattern) and fnmatch.fnmatchcase(name, pattern):
                if best is None or len(pattern) > best[0]:
                    best = (len(pattern), pattern)
        return self.default if best is None else self.patterns[best[1]]

    def read_tags(
        self, server_id: str, tool: str, partition: str | None | PartitionScope = EVERY_PARTITION
    ) -> list[str]:
        """Return the tags a cached result of ``tool`` in ``partition`` carries, so writes find it.

        Each tag a write can bump comes twice: plain (reached by a write to
        every partition) and scoped to ``partition`` (reached by a write in
        it). Without a partition (``EVERY_PARTITION``) only the plain form.
        """
        memo = (server_id, tool, partition)
        tags = self._read_tags.get(memo)
        if tags is None:
            tags = tuple(self._tags_read(server_id, tool, partition))
            _remember(self._read_tags, memo, tags)
        return list(tags)  # the caller's own list

    def _tags_read(
        self, server_id: str, tool: str, partition: str | None | PartitionScope
    ) -> list[str]:
        targets = [f"tool:{server_id}/{tool}", f"reads:{server_id}"]
        for pattern in self._wildcard_targets(server_id):
            if fnmatch.fnmatchcase(tool, pattern):
                targets.append(f"reads:{server_id}:{pattern}")
        tags = [f"server:{server_id}", *targets]
        if not isinstance(partition, PartitionScope):
            tags.extend(partition_tag(tag, partition) for tag in targets)
        return tags

    def write_tags(
        self,
        server_id: str,
        policy: ToolPolicy,
        partition: str | None | PartitionScope = EVERY_PARTITION,
    ) -> list[str]:
        """Return the tags a write in ``partition`` under ``policy`` bumps (empty: none).

        Scoped to ``partition`` unless the policy says ``invalidates_partitions="all"``
        or the partition is not known (``EVERY_PARTITION``).
        """
        targets = ("*",) if policy.invalidates is None else policy.invalidates
        tags: list[str] = []
        if "*" in targets:
            tags.append(f"reads:{server_id}")
        else:
            for pattern in targets:
                if _is_pattern(pattern):
                    tags.append(f"reads:{server_id}:{pattern}")
                else:
                    tags.append(f"tool:{server_id}/{pattern}")
        if policy.invalidates_partitions == "own" and not isinstance(partition, PartitionScope):
            tags = [partition_tag(tag, partition) for tag in tags]
        return sorted(set(tags))

    def _wildcard_targets(self, server_id: str) -> list[str]:
        """Wildcard ``invalidates`` patterns of every policy that can apply on ``server_id``."""
        found: list[str] = []
        for key, policy in self.patterns.items():
            key_server = key.split("/", 1)[0]
            if key_server != server_id and not (
                _is_pattern(key_server) and fnmatch.fnmatchcase(server_id, key_server)
            ):
                continue
            for pattern in policy.invalidates or ():
                if pattern != "*" and _is_pattern(pattern) and pattern not in found:
                    found.append(pattern)
        return found


def _is_pattern(text: str) -> bool:
    return any(char in _WILDCARDS for char in text)


# -- decisions --------------------------------------------------------------------------------


def read_only(annotations: Any) -> bool:
    """True when tool ``annotations`` say ``readOnlyHint: true``.

    Accepts MCP ``ToolAnnotations`` objects and mappings (``{"readOnlyHint": true}``,
    or framework metadata holding them under ``"annotations"``); anything else is False.
    """
    if annotations is None:
        return False
    if isinstance(annotations, Mapping):
        if "readOnlyHint" in annotations or "read_only_hint" in annotations:
            hint = annotations.get("readOnlyHint", annotations.get("read_only_hint"))
            return hint is True
        return read_only(annotations.get("annotations"))
    if hasattr(annotations, "read_only_hint"):  # MCP SDK 2 (the old name warns there)
        return annotations.read_only_hint is True
    return getattr(annotations, "readOnlyHint", None) is True


def cacheable(policy: ToolPolicy, annotations: Any, trusted: bool = True) -> bool:
    """Whether a tool's results may be cached: the policy first, annotations only to restrict.

    ``ToolPolicy(cache=True)`` (what an allow list means) is the only way to
    cache a tool its annotations do not mark read-only; ``cache=False`` (a
    deny) is never loosened by annotations. With ``cache=None`` the tool is
    cached only when trusted annotations mark it read-only and the policy
    does not mark it a write.
    """
    if policy.invalidates:
        return False  # a write: its results are never served to a later call
    if policy.cache is not None:
        return policy.cache
    return trusted and read_only(annotations)


def writes(policy: ToolPolicy, annotations: Any, trusted: bool = True) -> bool:
    """Whether a call of the tool is a write that drops cached reads.

    Any tool not proven read-only counts as a write: a non-empty
    ``invalidates`` always marks one; ``cache=True`` marks a read; otherwise
    only trusted annotations saying ``readOnlyHint: true`` make it a read.
    """
    if policy.invalidates:
        return True
    if policy.cache is True:
        return False
    return not (trusted and read_only(annotations))


def with_lists(policy: ToolPolicy, allowed: bool, denied: bool) -> ToolPolicy:
    """Return ``policy`` with an integration's allow and deny lists applied (a deny wins)."""
    if denied or policy.cache is False:
        return policy if policy.cache is False else replace(policy, cache=False)
    if allowed and policy.cache is None:
        return replace(policy, cache=True)
    return policy
