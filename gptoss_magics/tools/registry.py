"""Which tools a request may call: ``tools=[...]`` resolved, identified and re-made.

``resolve_tools`` turns what a user passes (functions, :class:`Tool` objects, the name
``"python"``) into tools; ``tools_identity`` is what provenance and cache keys record of
them; ``recorded_tools`` re-makes tools from that record, for
:func:`gptoss_magics.reproduce`, which replays recorded results and calls nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import harmony
from ..errors import InvalidOptionError, MissingDependencyError
from .base import Tool, ToolOutcome, ToolSession
from .functions import FunctionTool, error_outcome


def python_tool_class() -> type:
    """The class of the built-in sandboxed python tool (imported on first use)."""
    try:
        from .python import PythonTool  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("tools.python"):
            raise MissingDependencyError(
                "the python tool is not part of this version of gptoss_magics "
                "(gptoss_magics.tools.python is missing): use function tools for now"
            ) from None
        raise
    cls: type = PythonTool
    return cls


def python_tool() -> Tool:
    """The built-in sandboxed python tool (``tools=["python"]``)."""
    tool: Tool = python_tool_class()()
    return tool


def _one(item: Any) -> Tool:
    if isinstance(item, str):
        if item.strip().lower() == harmony.PYTHON_RECIPIENT:
            return python_tool()
        raise InvalidOptionError(
            f"tools takes functions, Tool objects or 'python', not the string {item!r} "
            "(in %%gptoss, --tools NAME looks the function up in the notebook)")
    if isinstance(item, Tool):
        return item
    if callable(item):
        return FunctionTool(item)
    raise InvalidOptionError(f"tools takes functions, Tool objects or 'python', not "
                             f"{type(item).__name__}")


def resolve_tools(value: Any) -> tuple[Tool, ...]:
    """The tools of a ``tools=`` option: a list of functions, :class:`Tool` objects and
    ``"python"`` (one of them alone is accepted too; None or [] means none). Raises
    :class:`InvalidOptionError` for anything else, or for two tools of one name."""
    if value is None:
        return ()
    if isinstance(value, (str, Tool)) or callable(value):
        value = [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidOptionError(f"tools must be a list of functions (or 'python'), not "
                                 f"{type(value).__name__}")
    tools = tuple(_one(item) for item in value)
    seen: set[str] = set()
    for tool in tools:
        if tool.recipient in seen:
            raise InvalidOptionError(f"two tools are named {tool.recipient!r}: give one of "
                                     "them another name (function_tool(fn, name='...'))")
        seen.add(tool.recipient)
    return tools


def declarations(tools: Sequence[Tool]) -> tuple[list[harmony.ToolSpec], bool]:
    """The function tools' declarations, and whether the python tool is among them."""
    specs = [spec for spec in (t.declaration() for t in tools) if spec is not None]
    return specs, any(t.recipient == harmony.PYTHON_RECIPIENT for t in tools)


def tools_identity(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """What identifies ``tools`` (for provenance and cache keys): each tool's recipient,
    its declaration as the model sees it, and its own :meth:`Tool.identity`."""
    out = []
    for tool in tools:
        spec = tool.declaration()
        declared = None if spec is None else {
            "name": spec.name, "description": spec.description,
            "parameters": dict(spec.parameters)}
        out.append({**tool.identity(), "recipient": tool.recipient, "declaration": declared})
    return out


class RecordedTool:
    """A tool re-made from its recorded identity: it declares itself as the original
    did, and refuses to run (a reproduction replays recorded results instead)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        recipient = record.get("recipient")
        declared = record.get("declaration")
        if not isinstance(recipient, str) or not recipient:
            raise InvalidOptionError("a recorded tool has no recipient")
        if declared is not None and not (
                isinstance(declared, Mapping) and isinstance(declared.get("name"), str)
                and isinstance(declared.get("description", ""), str)
                and isinstance(declared.get("parameters", {}), Mapping)):
            raise InvalidOptionError(f"the recorded declaration of {recipient} is not a "
                                     "name, a description and a parameters schema")
        self._recipient = recipient
        self._record = dict(record)
        self._spec = None if declared is None else harmony.ToolSpec(
            declared["name"], declared.get("description", ""),
            dict(declared.get("parameters", {})))

    @property
    def recipient(self) -> str:
        return self._recipient

    def declaration(self) -> harmony.ToolSpec | None:
        return self._spec

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self._record.items()
                if k not in ("recipient", "declaration")}

    def open(self) -> ToolSession:
        return _RefusingSession(self._recipient)


class _RefusingSession:
    def __init__(self, recipient: str) -> None:
        self.recipient = recipient

    def call(self, text: str, timeout_s: float) -> ToolOutcome:
        return error_outcome(f"{self.recipient} is not run when a reply is reproduced")

    def close(self) -> None:
        return None


def recorded_tools(records: Any) -> tuple[Tool, ...]:
    """Tools re-made from a provenance's ``tools`` record (see :func:`tools_identity`)."""
    if records is None:
        return ()
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence) or \
            not all(isinstance(r, Mapping) for r in records):
        raise InvalidOptionError(f"the recorded tools must be a list of tool records, not "
                                 f"{records!r:.60}")
    return tuple(RecordedTool(r) for r in records)
