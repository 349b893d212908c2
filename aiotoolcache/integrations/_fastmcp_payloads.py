"""What ToolCacheMiddleware stores for FastMCP answers, and how it reads them back.

Each ``dump_*`` makes a FastMCP object plain data (lists, dicts, strings,
bytes, numbers) the cache can encode; each ``load_*`` validates such data
against the MCP types and builds the object again. A stored value that does
not fit — written by another release, or holding a content type this one does
not know — raises ``Undecodable``, and the middleware treats it as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import mcp_types
from fastmcp.prompts.base import Message, PromptResult
from fastmcp.resources.base import ResourceContent, ResourceResult
from fastmcp.tools.base import ToolResult
from pydantic import BaseModel, ConfigDict

__all__ = [
    "Undecodable",
    "dump_components",
    "dump_prompt_result",
    "dump_resource_result",
    "dump_tool_result",
    "load_components",
    "load_prompt_result",
    "load_resource_result",
    "load_tool_result",
]

ComponentT = TypeVar("ComponentT", bound=BaseModel)


class Undecodable(ValueError):
    """Raised when a stored value is not the plain data of the object it should hold."""


# The stored forms, validated field by field. FastMCP's own result classes
# cannot validate them: their constructors turn any unknown content into JSON
# text instead of refusing it.
class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StoredToolResult(_Stored):
    content: list[mcp_types.ContentBlock]
    structured_content: dict[str, Any] | None
    meta: dict[str, Any] | None
    raw: mcp_types.CallToolResult | None


class _StoredResourceContent(_Stored):
    content: str | bytes
    mime_type: str | None
    meta: dict[str, Any] | None


class _StoredResourceResult(_Stored):
    contents: list[_StoredResourceContent]
    meta: dict[str, Any] | None


class _StoredPromptResult(_Stored):
    # PromptMessage's content is the protocol's whole ContentBlock union
    # (text, image, audio, resource links and embedded resources).
    messages: list[mcp_types.PromptMessage]
    description: str | None
    meta: dict[str, Any] | None


def _validate(model: type[_Stored], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        name = model.__name__.removeprefix("_Stored")
        raise Undecodable(f"stored value is not a {name}: {exc}") from exc


# -- listings -------------------------------------------------------------------------------


def dump_components(components: Sequence[BaseModel], base: type[ComponentT]) -> list[Any]:
    """Plain data of each component, as its public base class (subclass state is dropped)."""
    fields = [name for name, field in base.model_fields.items() if not field.exclude]
    return [
        base.model_validate({name: getattr(item, name) for name in fields}).model_dump(mode="json")
        for item in components
    ]


def load_components(data: Any, base: type[ComponentT]) -> list[ComponentT]:
    """The components stored by ``dump_components``; raises Undecodable when they do not fit."""
    if not isinstance(data, list):
        raise Undecodable(f"stored listing is a {type(data).__name__}, not a list")
    try:
        return [base.model_validate(item) for item in data]
    except ValueError as exc:
        raise Undecodable(f"stored listing holds an invalid {base.__name__}: {exc}") from exc


# -- tool results ---------------------------------------------------------------------------


def dump_tool_result(result: ToolResult) -> dict[str, Any]:
    """Plain data of a tool result, with the exact protocol result when FastMCP kept one."""
    raw = getattr(result, "_raw_mcp_result", None)
    return {
        "content": [block.model_dump(mode="json", by_alias=True) for block in result.content],
        "structured_content": result.structured_content,
        "meta": result.meta,
        "raw": raw.model_dump(mode="json", by_alias=True) if raw is not None else None,
    }


def load_tool_result(data: Any) -> ToolResult:
    """The tool result stored by ``dump_tool_result``; raises Undecodable when it does not fit."""
    stored: _StoredToolResult = _validate(_StoredToolResult, data)
    if stored.raw is not None:
        return ToolResult.from_mcp_result(stored.raw)
    return ToolResult.model_construct(
        content=stored.content,
        structured_content=stored.structured_content,
        meta=stored.meta,
        is_error=False,
    )


# -- resources and prompts -------------------------------------------------------------------


def dump_resource_result(result: ResourceResult) -> dict[str, Any]:
    """Plain data of a resource read (text stays str, binary stays bytes)."""
    return {
        "contents": [
            {"content": item.content, "mime_type": item.mime_type, "meta": item.meta}
            for item in result.contents
        ],
        "meta": result.meta,
    }


def load_resource_result(data: Any) -> ResourceResult:
    """The resource read stored by ``dump_resource_result``; Undecodable when it does not fit."""
    stored: _StoredResourceResult = _validate(_StoredResourceResult, data)
    return ResourceResult.model_construct(
        contents=[
            ResourceContent.model_construct(
                content=item.content, mime_type=item.mime_type, meta=item.meta
            )
            for item in stored.contents
        ],
        meta=stored.meta,
    )


def dump_prompt_result(result: PromptResult) -> dict[str, Any]:
    """Plain data of a rendered prompt."""
    return {
        "messages": [
            {
                "role": message.role,
                "content": message.content.model_dump(mode="json", by_alias=True),
            }
            for message in result.messages
        ],
        "description": result.description,
        "meta": result.meta,
    }


def load_prompt_result(data: Any) -> PromptResult:
    """The prompt stored by ``dump_prompt_result``; raises Undecodable when it does not fit."""
    stored: _StoredPromptResult = _validate(_StoredPromptResult, data)
    return PromptResult.model_construct(
        messages=[
            Message.model_construct(role=message.role, content=message.content)
            for message in stored.messages
        ],
        description=stored.description,
        meta=stored.meta,
    )
