"""A reply's tool calls as text: one line per call, for displays and streams, and a
compact record for provenance."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .. import harmony
from .base import ToolCall

#: how many characters of a call's arguments and of its result a trail line shows
ARGUMENTS_CHARS = 160
RESULT_CHARS = 200


def short_name(recipient: str) -> str:
    """``functions.fx_rate`` -> ``fx_rate``; ``python`` stays."""
    return recipient.removeprefix("functions.")


def _squash(text: str, limit: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit - 1] + "…"


def _arguments(call: ToolCall) -> str:
    if isinstance(call.arguments, str):
        return call.arguments
    try:
        return json.dumps(call.arguments, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(call.arguments)


def describe_call(call: ToolCall) -> str:
    """One line: ``fx_rate({"base": "EUR"}) → 1.08 (0.01 s)``, or ``… ✗ the error``.
    Plain text: displays escape it."""
    name = short_name(call.name)
    args = _squash(_arguments(call), ARGUMENTS_CHARS)
    head = f"{name}: {args}" if call.name == harmony.PYTHON_RECIPIENT else f"{name}({args})"
    if call.error is not None:
        tail = f"✗ {_squash(call.error, RESULT_CHARS)}"
    else:
        tail = f"→ {_squash(call.output, RESULT_CHARS)}"
    return f"{head} {tail} ({call.latency_s:.2f} s)"


def trail_lines(calls: Sequence[ToolCall]) -> list[str]:
    """One line per call (see :func:`describe_call`)."""
    return [describe_call(c) for c in calls]


def trail_record(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """What provenance keeps of the calls: who was called with what, whether it failed,
    and a digest of the text the model received (the full trail is in
    ``Reply.tool_calls``)."""
    return [{"name": c.name, "arguments": c.arguments, "error": c.error,
             "output_sha256": hashlib.sha256(c.output.encode()).hexdigest()}
            for c in calls]
