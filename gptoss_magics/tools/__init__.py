"""Tools gpt-oss can call: the user's Python functions and the sandboxed python tool.

    import gptoss_magics as gm
    def fx_rate(base: str, quote: str, date: str) -> float:
        \"\"\"Closing FX rate from the desk's own database.\"\"\"
    reply = gm.complete("EUR/USD on 2026-03-31?", tools=[fx_rate])
    reply.tool_calls     # (ToolCall(name='functions.fx_rate', arguments={...}, ...),)

Tools sit above :mod:`gptoss_magics.harmony` and below prompting, the DataFrame map and
the magics; the engine never sees them. :class:`Conversation` is the loop's state, which
every surface drives (see :mod:`gptoss_magics.tools.loop`).
"""

from __future__ import annotations

from typing import Any

from .base import Tool, ToolCall, ToolOutcome, ToolSession
from .functions import MAX_RESULT_CHARS, FunctionTool, function_tool
from .loop import (
    LIMIT_TEXT,
    MAX_ROUNDS,
    TIMEOUT_S,
    Conversation,
    PendingCall,
    Round,
    run_conversations,
    run_pending_calls,
)
from .registry import RecordedTool, declarations, recorded_tools, resolve_tools, tools_identity
from .trail import describe_call, trail_lines, trail_record

__all__ = [
    "LIMIT_TEXT", "MAX_RESULT_CHARS", "MAX_ROUNDS", "TIMEOUT_S", "Conversation",
    "FunctionTool", "PendingCall", "PythonTool", "RecordedTool", "Round", "Tool", "ToolCall",
    "ToolOutcome", "ToolSession", "declarations", "describe_call", "function_tool",
    "recorded_tools", "resolve_tools", "run_conversations", "run_pending_calls",
    "tools_identity", "trail_lines", "trail_record",
]


def __getattr__(name: str) -> Any:
    """``PythonTool`` is imported when first asked for (its module may be absent)."""
    if name == "PythonTool":
        from .registry import python_tool_class

        return python_tool_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
