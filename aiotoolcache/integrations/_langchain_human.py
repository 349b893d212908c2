"""What a LangChain tool call depends on beyond its arguments: injected context, human answers."""

from __future__ import annotations

from typing import Any

from langgraph.prebuilt.tool_node import ToolCallRequest

__all__ = ["answers_an_interrupt", "takes_injected_args"]

# LangGraph keeps a task's interrupt() answers in its config under this key
# (``langgraph._internal._constants.CONFIG_KEY_SCRATCHPAD``); no public name exists.
_SCRATCHPAD = "__pregel_scratchpad"


def takes_injected_args(tool: Any) -> bool:
    """Whether ``tool`` gets arguments the model does not give (``ToolRuntime``, ``Injected*``).

    Those are the fields of its input schema missing from the schema the model
    sees. A tool that cannot be inspected (or is unknown) counts as taking some.
    """
    if tool is None:
        return True
    try:
        full = _field_names(tool.get_input_schema())
        visible = _field_names(tool.tool_call_schema)
    except Exception:  # a tool's schema hooks may raise anything: not cached then
        return True
    return bool(full - visible)


def answers_an_interrupt(request: ToolCallRequest) -> bool:
    """Whether this leg of the call resumes after a human answered an ``interrupt()``.

    A resumed task finds the answers in its scratchpad before it runs again:
    the ones meant for it, or a resume value given to the whole run. Outside
    a graph there is no scratchpad, and no interrupt can be answered.
    """
    runtime = getattr(request, "runtime", None)
    config = getattr(runtime, "config", None)
    configurable = config.get("configurable") if isinstance(config, dict) else None
    scratchpad = configurable.get(_SCRATCHPAD) if isinstance(configurable, dict) else None
    if scratchpad is None:
        return False
    try:
        return bool(scratchpad.resume) or scratchpad.get_null_resume(False) is not None
    except Exception:  # another LangGraph layout: treat the leg as answered, never cached
        return True


def _field_names(schema: Any) -> frozenset[str]:
    if isinstance(schema, dict):
        properties = schema.get("properties")
        return frozenset(properties) if isinstance(properties, dict) else frozenset()
    fields = getattr(schema, "model_fields", None)
    return frozenset(fields) if isinstance(fields, dict) else frozenset()
