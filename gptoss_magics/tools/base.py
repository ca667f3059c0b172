"""What a tool is to the conversation loop: a recipient the model can address, an optional
declaration, and a per-conversation session that runs calls.

Tools sit above :mod:`gptoss_magics.harmony` and below prompting, the DataFrame map and the
magics; the engine never sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..harmony import ToolSpec


@dataclass(frozen=True)
class ToolOutcome:
    """What one call produced: ``text`` goes back to the model as the tool's message;
    ``value`` is the Python result (None for the python tool); ``error`` says why the call
    failed (the model then sees ``text``, which explains it)."""

    text: str
    value: Any = None
    error: str | None = None
    truncated: bool = False


@dataclass(frozen=True)
class ToolCall:
    """One call in a reply's tool chain (``Reply.tool_calls``)."""

    name: str  # the recipient: "functions.NAME" or "python"
    arguments: Any  # parsed JSON arguments (a dict), or the code text for python
    result: Any = None
    error: str | None = None
    latency_s: float = 0.0
    output: str = field(default="", repr=False)  # the text the model received

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable)."""
        import json

        result = self.result
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            from pydantic_core import to_jsonable_python

            try:  # pydantic models, dataclasses, dates...; what else is left, as repr
                result = json.loads(json.dumps(to_jsonable_python(result, fallback=repr)))
            except Exception:
                result = repr(result)
        return {"name": self.name, "arguments": self.arguments, "result": result,
                "error": self.error, "latency_s": self.latency_s, "output": self.output}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, latency: bool = True) -> ToolCall:
        """The call :meth:`to_dict` wrote (``latency=False``: its latency as 0)."""
        return cls(data["name"], data.get("arguments"), data.get("result"), data.get("error"),
                   float(data.get("latency_s") or 0.0) if latency else 0.0,
                   data.get("output", ""))


@runtime_checkable
class ToolSession(Protocol):
    """The tool inside one conversation (the python tool keeps its interpreter here)."""

    def call(self, text: str, timeout_s: float) -> ToolOutcome:
        """Run one call; ``text`` is what the model sent (JSON arguments, or code).
        Never raises for a failing call: the outcome carries the error."""
        ...

    def close(self) -> None:
        """Release what the session holds (idempotent)."""
        ...


@runtime_checkable
class Tool(Protocol):
    """A tool the model can call."""

    @property
    def recipient(self) -> str:
        """Whom the model addresses: ``functions.NAME`` or ``python``."""
        ...

    def declaration(self) -> ToolSpec | None:
        """The function tool's declaration (None for the built-in python tool, which is
        declared in the system message)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What identifies the tool in cache keys and provenance (name and schema)."""
        ...

    def open(self) -> ToolSession:
        """A session for one conversation."""
        ...
