"""The magics' options: argparse declarations made from the one options table
(:data:`gptoss_magics.options.OPTION_DOCS`), and their conversion back to options."""

from __future__ import annotations

import ast
import re
from argparse import SUPPRESS, Namespace
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument
from IPython.utils.process import arg_split

from .options import OPTION_DOCS
from .settings import EFFORTS

F = TypeVar("F", bound=Callable[..., Any])


def _budget(text: str) -> int | None:
    """argparse type of --reasoning-budget: a token count, or 'none' for no limit."""
    if text.lower() in ("none", "off"):
        return None
    value = int(text)  # argparse turns the ValueError into "invalid token count value"
    if value < 0:
        raise ValueError(text)
    return value


def _seed(text: str) -> int | None:
    """argparse type of --seed: a whole number, or 'none' for a fresh draw."""
    return None if text.lower() == "none" else int(text)


def _labels(text: str) -> list[str]:
    """argparse type of --choices: comma-separated labels."""
    labels = [c.strip() for c in text.split(",")]
    if not any(labels):
        raise ValueError(text)
    return labels


def _tool_names(text: str) -> list[str]:
    """argparse type of --tools: comma-separated names (of functions, or python)."""
    names = [n.strip() for n in text.split(",")]
    if not all(n.isidentifier() for n in names):
        raise ValueError(text)
    return names


for _fn, _name in ((_budget, "token count"), (_seed, "seed"), (_labels, "label list"),
                   (_tool_names, "tool name list")):
    _fn.__name__ = _name  # argparse names the type in its error message

#: argparse keyword arguments per option (the flags and help come from OPTION_DOCS)
_ARGPARSE: dict[str, dict[str, Any]] = {
    "effort": {"choices": EFFORTS},
    "max_tokens": {"type": int, "metavar": "N"},
    "temperature": {"type": float, "metavar": "T"},
    "top_p": {"type": float, "metavar": "P"},
    "seed": {"type": _seed, "metavar": "S"},
    "instructions": {"metavar": "TEXT"},
    "reasoning_budget": {"type": _budget, "metavar": "N"},
    "confidence": {"action": "store_true", "default": SUPPRESS},
    "choices": {"type": _labels, "metavar": "A,B,C"},
    "regex": {"metavar": "R"},
    "schema": {"metavar": "NAME"},
    "examples": {"metavar": "NAME"},
    "reasoning": {"action": "store_true", "default": SUPPRESS},
    "usage": {"action": "store_true", "default": SUPPRESS},
    "tools": {"type": _tool_names, "metavar": "NAME,NAME"},
    "tool_calls": {"action": "store_true", "default": SUPPRESS},
}
#: options whose magic value names a notebook variable
_VARIABLES = ("schema", "examples")
#: what the magics' help adds to an option's own
_HELP_TAIL = {**{n: " A variable's name." for n in _VARIABLES},
              "tools": " Names of the notebook's functions; 'python' is the built-in "
                       "sandboxed tool."}


def option_arguments(names: Sequence[str]) -> Callable[[F], F]:
    """``@argument`` declarations for the options ``names``, in that order."""

    def decorate(fn: F) -> F:
        for name in reversed(names):
            doc = OPTION_DOCS[name]
            if not doc.flags:
                continue  # a Python-only option (or one a magic declares itself)
            kwargs = {"default": SUPPRESS, **_ARGPARSE[name]}
            help_text = doc.help + _HELP_TAIL.get(name, "")
            fn = argument(*doc.flags, dest=name, help=help_text, **kwargs)(fn)
        return fn

    return decorate


def options_from(args: Namespace, names: Sequence[str],
                 namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The options given on the magic's line (unset ones are left out), with variable
    names looked up in ``namespace``."""
    out: dict[str, Any] = {}
    for name in names:
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if name == "tools":
            value = tools_from(value, namespace)
        elif name in _VARIABLES:
            if value not in namespace:
                raise UsageError(f"--{name} {value}: no such variable in the notebook")
            value = namespace[value]
        out[name] = value
    return out


def with_approval(options: dict[str, Any]) -> None:
    """``%%gptoss --approve``: the python tool asks before each piece of code runs (a
    widget in a notebook, a prompt in a terminal); a refusal goes back to the model."""
    from .tools.approve import WidgetApprover
    from .tools.python import PythonTool

    tools = list(options.get("tools") or [])
    found = False
    for i, tool in enumerate(tools):
        if tool == "python":
            tools[i], found = PythonTool(approve=WidgetApprover()), True
        elif isinstance(tool, PythonTool):
            tools[i], found = tool.with_approver(WidgetApprover()), True
    if not found:
        raise UsageError("--approve asks before the python tool runs code: add --tools python")
    options["tools"] = tools


def tools_from(names: Sequence[str], namespace: Mapping[str, Any]) -> list[Any]:
    """The tools ``--tools`` names: 'python' is the built-in tool, other names are the
    notebook's functions (or Tool objects)."""
    out: list[Any] = []
    for name in names:
        if name == "python":
            out.append(name)
        elif name not in namespace:
            raise UsageError(f"--tools {name}: no such function in the notebook (define it, "
                             "or use python for the built-in tool)")
        else:
            out.append(namespace[name])
    return out


_ENGINE_FLAG = re.compile(r"^--([A-Za-z][\w-]*)(?:=(.*))?$")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        return text


def engine_extras(extras: list[str]) -> dict[str, Any]:
    """``--some-arg value`` / ``--some-arg=value`` / ``--flag`` -> {'some_arg': value}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extras):
        match = _ENGINE_FLAG.match(extras[i])
        if not match:
            raise UsageError(f"unexpected argument {extras[i]!r}: engine options look like "
                             "--name value or --name=value")
        name, value = match.group(1).replace("-", "_"), match.group(2)
        if value is None and i + 1 < len(extras) and not extras[i + 1].startswith("--"):
            value = extras[i + 1]
            i += 1
        out[name] = True if value is None else _literal(value)
        i += 1
    return out


def split(line: str) -> list[str]:
    """Split a magic's line like a POSIX shell: quotes group words and are removed."""
    try:
        return list(arg_split(line, posix=True))
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(f"cannot parse the options: {exc}") from None
