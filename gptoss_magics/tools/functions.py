"""Python callables as harmony function tools.

    def fx_rate(base: str, quote: str, date: str) -> float:
        \"\"\"Closing FX rate from the desk's own database.\"\"\"
    gm.complete("EUR/USD on 2026-03-31?", tools=[fx_rate])

A tool's name is the function's ``__name__``, its description the first paragraph of its
docstring, its parameters a JSON schema made from the type hints (pydantic). A call
from the model is parsed as JSON, validated against the schema, and run in a thread with
a time limit; the result goes back to the model as JSON (a string as it is), cut to a
size limit with a note. Nothing a call does raises into the notebook: bad JSON, arguments
that do not fit, an exception in the function or a timeout come back as an error text,
which the model reads and the :class:`~gptoss_magics.tools.ToolCall` records.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from .. import harmony
from ..errors import InvalidOptionError
from .base import ToolOutcome, ToolSession
from .schema import Signature, signature_of

#: the most characters of a result sent back to the model (the rest is cut, with a note)
MAX_RESULT_CHARS = 8000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def description_of(fn: Callable[..., Any]) -> str:
    """The first paragraph of ``fn``'s docstring, on one line ("" without one)."""
    doc = inspect.getdoc(fn) or ""
    first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(first.split())


def result_text(value: Any) -> str:
    """What the model reads for a function's result: a string as it is, anything else as
    JSON (pydantic models, dataclasses, dates... included; what JSON cannot hold, as
    ``str``)."""
    if isinstance(value, str):
        return value
    from pydantic_core import to_jsonable_python

    try:
        return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)
    except Exception:
        return str(value)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a note saying so, and whether it was."""
    if len(text) <= limit:
        return text, False
    return (text[:limit] + f"\n[truncated: the result has {len(text):,} characters; only the "
            f"first {limit:,} are shown]"), True


class FunctionTool:
    """A Python callable as a harmony function tool (``functions.NAME``).

    ``name`` defaults to the function's ``__name__``, ``description`` to its docstring's
    first paragraph; ``max_result_chars`` caps the text of a result sent to the model."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None,
                 max_result_chars: int = MAX_RESULT_CHARS) -> None:
        if not callable(fn):
            raise InvalidOptionError(f"a tool must be a function, not {type(fn).__name__}")
        tool_name = name if name is not None else getattr(fn, "__name__", "")
        if not isinstance(tool_name, str) or not _NAME.match(tool_name):
            raise InvalidOptionError(
                f"a tool's name must be a Python-style identifier (letters, digits, _), not "
                f"{tool_name!r}: pass function_tool(fn, name='...')")
        if isinstance(max_result_chars, bool) or not isinstance(max_result_chars, int) or \
                max_result_chars < 1:
            raise InvalidOptionError(f"max_result_chars must be a whole number from 1, not "
                                     f"{max_result_chars!r}")
        self.fn = fn
        self.name = tool_name
        self.description = description_of(fn) if description is None else str(description)
        self.max_result_chars = max_result_chars
        self.signature: Signature = signature_of(fn, tool_name)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name})"

    @property
    def recipient(self) -> str:
        """``functions.NAME``: how the model addresses this tool."""
        return f"functions.{self.name}"

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the parameters, as the model sees it."""
        return dict(self.signature.parameters)

    def declaration(self) -> harmony.ToolSpec:
        """The tool as declared in the developer message."""
        return harmony.ToolSpec(self.name, self.description, self.parameters)

    def identity(self) -> dict[str, Any]:
        """Name, description, schema and where the function comes from."""
        module = getattr(self.fn, "__module__", None) or ""
        qualname = getattr(self.fn, "__qualname__", None) or self.name
        return {"kind": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters,
                "function": f"{module}.{qualname}" if module else qualname}

    def open(self) -> ToolSession:
        """A session for one conversation (function tools keep no state)."""
        return _FunctionSession(self)

    def run(self, text: str, timeout_s: float) -> ToolOutcome:
        """Parse, validate and run one call; never raises."""
        try:
            arguments = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            return _failed(f"the arguments are not valid JSON ({exc}); send a JSON object "
                           f"with the parameters of {self.name}")
        if not isinstance(arguments, dict):
            return _failed(f"the arguments must be a JSON object with the parameters of "
                           f"{self.name}, not {type(arguments).__name__}")
        try:
            args, kwargs = self.signature.validate(arguments)
        except Exception as exc:  # pydantic's ValidationError, or a validator's own error
            return _failed(f"invalid arguments for {self.name}: {_reasons(exc)}")
        finished, ok, value = _call_with_timeout(self.fn, args, kwargs, timeout_s, self.name)
        if not finished:
            return _failed(f"{self.name} did not return within {timeout_s:g} s (timed out); "
                           "it was left running and its result will not be used")
        if not ok:
            return _failed(f"{self.name} raised {type(value).__name__}: {_one_line(value)}")
        text, cut = truncate(result_text(value), self.max_result_chars)
        return ToolOutcome(text=text, value=value, truncated=cut)


class _FunctionSession:
    def __init__(self, tool: FunctionTool) -> None:
        self.tool = tool

    def call(self, text: str, timeout_s: float) -> ToolOutcome:
        return self.tool.run(text, timeout_s)

    def close(self) -> None:
        return None


def function_tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
                  description: str | None = None,
                  max_result_chars: int = MAX_RESULT_CHARS) -> Any:
    """Make a :class:`FunctionTool` of ``fn``, overriding its name, description or
    result size; also usable as a decorator (``@function_tool(name="rate")``)."""
    if fn is None:
        return lambda f: FunctionTool(f, name=name, description=description,
                                      max_result_chars=max_result_chars)
    return FunctionTool(fn, name=name, description=description,
                        max_result_chars=max_result_chars)


def error_outcome(message: str) -> ToolOutcome:
    """A failed call: the model reads ``Error: message``."""
    return _failed(message)


def _failed(message: str) -> ToolOutcome:
    return ToolOutcome(text=f"Error: {message}", error=message)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _reasons(exc: Exception) -> str:
    """pydantic's complaints as one line: ``where: what; where: what``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or 'arguments'}: "
                     f"{e.get('msg', '')}" for e in errors()]
            return _one_line(ValueError("; ".join(parts)))
        except Exception:
            pass
    return _one_line(exc)


def _call_with_timeout(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                       timeout_s: float, name: str) -> tuple[bool, bool, Any]:
    """Run ``fn`` in a daemon thread: (finished in time, returned normally, result or
    exception). A function still running at the timeout is abandoned."""
    box: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box.append((True, context.run(fn, *args, **kwargs)))
        except BaseException as exc:  # a tool's SystemExit must not end the kernel either
            box.append((False, exc))

    worker = threading.Thread(target=target, name=f"gptoss-tool-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not box:
        return False, False, None
    ok, value = box[0]
    return True, ok, value
