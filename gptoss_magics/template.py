"""Prompt templates: ``{name}``, ``{name.attr}``, ``{name[key]}``, ``{{`` and ``}}``.

Templates are expanded exactly once, from a namespace (the notebook's variables,
or a DataFrame row), and never evaluate code: only plain names, attribute
access (no names starting with ``_``) and item access with literal keys are
allowed. A field that names nothing raises :class:`TemplateError` naming it,
with close matches, before anything is generated.

A template may come from somewhere less trusted than the notebook (a file, a
column), so it reaches only data, never the interpreter's insides:

- the named object (the *root*) may be anything except a module, a function or
  method, a class, a frame, a code object, a generator or coroutine (or a traceback,
  a closure cell, a class's ``__dict__``, a module's namespace, ``sys.modules``):
  ``{os}``, ``{os.path}``, ``{print}``, ``{MyClass}`` are refused;
- the value of an attribute or key named directly on the root may be any object but
  those (``{filing.author}``, ``{meta[ticker]}``, ``{row['amount']}``, ``{df.shape}``);
- every further step must reach *ordinary data*: str, bytes, numbers, bool, None,
  dates, times, decimals, fractions, UUIDs, paths, enums, list, tuple, dict, set,
  SimpleNamespace, dataclass instances, pydantic models, numpy scalars, arrays and
  dtypes, pandas Series, DataFrame, Index, Timestamp and the like
  (``{df.shape[0]}``, ``{filing.author.name}``, ``{d[a][b][0]}``);
- attribute names starting with ``_`` are refused everywhere.

So no template reaches a module, a frame (``gi_frame``, ``f_globals``), a code
object, a function's globals or closure, a class (``mro``, ``__subclasses__``) or
``sys.modules``. Conversions are ``!r``, ``!s`` and ``!a``; format specs work as in
:meth:`str.format` (``{x:.2f}``).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import difflib
import enum
import fractions
import inspect
import pathlib
import re
import string
import sys
import types
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .errors import TemplateError

_FORBIDDEN_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (types.ModuleType, "a module"),
    (type, "a class"),
    ((types.FrameType, types.TracebackType), "a frame"),
    (types.CodeType, "a code object"),
    ((types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType),
     "a generator or coroutine"),
    ((types.CellType, types.MappingProxyType), "an interpreter internal"),
)
_ORDINARY: tuple[type, ...] = (
    str, bytes, bytearray, int, float, complex, type(None), decimal.Decimal,
    fractions.Fraction, datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo,
    uuid.UUID, pathlib.PurePath, enum.Enum, list, tuple, dict, set, frozenset, range,
    types.SimpleNamespace,
)
_KINDS_HINT = ("templates take data: strings, numbers, lists, dicts, DataFrames and objects' "
               "attributes, not modules, functions, methods, classes, frames, code or generators")

_FORMATTER = string.Formatter()
_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]*)\]")
_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """Split a template into (literal, field, format_spec, conversion) pieces."""
    try:
        return list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"The template is not valid: {exc}. Write {{{{ and }}}} for literal braces."
        ) from None


def fields(template: str) -> list[str]:
    """The root names the template refers to, in order, without repeats."""
    out: list[str] = []
    for _, field, _, _ in parse(template):
        if field is None:
            continue
        root = _root(field)
        if root not in out:
            out.append(root)
    return out


def _root(field: str) -> str:
    match = _ROOT.match(field)
    if not match:
        if field == "":
            raise TemplateError(
                "The template has an empty {} field: name a variable inside the braces, or "
                "write {{}} for literal braces."
            )
        raise TemplateError(
            f"{{{field}}} is not a name: templates take {{name}}, {{name.attr}} or "
            "{name[key]} (write {{ and }} for literal braces)."
        )
    return match.group(0)


def _key(raw: str) -> Any:
    raw = raw.strip()
    if raw.isdigit() or (raw.startswith("-") and raw[1:].isdigit()):
        return int(raw)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def _forbidden(value: Any) -> str | None:
    """What ``value`` is, when a template must not reach it; else None."""
    for kinds, what in _FORBIDDEN_KINDS:
        if isinstance(value, kinds):
            return what
    if inspect.isroutine(value) or isinstance(value, (classmethod, staticmethod, property)):
        return "a function or method"
    if value is sys.modules or _is_module_namespace(value):
        return "a module's namespace"
    return None


def _is_module_namespace(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    name = value.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    return module is not None and getattr(module, "__dict__", None) is value


def _ordinary(value: Any) -> bool:
    """True for plain data: the values a template may follow past its first step."""
    if isinstance(value, _ORDINARY):
        return True
    if dataclasses.is_dataclass(value):  # an instance: classes are refused before this
        return True
    cls_names = {(c.__module__.split(".")[0], c.__name__) for c in type(value).__mro__}
    if ("pydantic", "BaseModel") in cls_names:
        return True
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.generic, numpy.ndarray, numpy.dtype)):
        return True
    return any(mod == "pandas" for mod, _ in cls_names)  # Series, Timestamp, NA, ...


def _check(field: str, path: str, value: Any, depth: int) -> None:
    what = _forbidden(value)
    if what is not None:
        raise TemplateError(f"{{{field}}}: {path} is {what}; {_KINDS_HINT}.")
    if depth >= 2 and not _ordinary(value):
        raise TemplateError(
            f"{{{field}}}: {path} is a {type(value).__name__} object; past the first "
            "attribute or key, templates follow only ordinary data (str, numbers, dates, "
            "lists, tuples, dicts, sets, dataclasses, pydantic models, numpy and pandas "
            "values): put that object in a variable of its own and name it."
        )


def _step(field: str, value: Any, attr: str | None, key: str | None) -> Any:
    if attr is not None:
        if attr.startswith("_"):
            raise TemplateError(
                f"{{{field}}}: attributes starting with '_' are not allowed in templates"
            )
        try:
            return getattr(value, attr)
        except AttributeError:
            raise TemplateError(
                f"{{{field}}}: {type(value).__name__} object has no attribute {attr!r}"
            ) from None
    k = _key(key or "")
    try:
        return value[k]
    except (KeyError, IndexError, TypeError) as exc:
        raise TemplateError(f"{{{field}}}: no item {k!r} ({type(exc).__name__})") from None


def resolve(field: str, lookup: Callable[[str], Any]) -> Any:
    """The value of one field, e.g. ``filing.text`` or ``row['amount']``.

    Follows the rules in the module's docstring: the root may not be a module, function,
    class, frame, code object or generator, and past the first attribute or key only
    ordinary data is followed. Raises :class:`TemplateError` saying which part broke them.
    """
    root = _root(field)
    value = lookup(root)
    _check(field, root, value, 0)
    rest = field[len(root):]
    pos = depth = 0
    while pos < len(rest):
        match = _PART.match(rest, pos)
        if not match:
            raise TemplateError(f"{{{field}}}: cannot read {rest[pos:]!r}")
        value = _step(field, value, *match.groups())
        pos = match.end()
        depth += 1
        _check(field, root + rest[:pos], value, depth)
    return value


def namespace_lookup(namespace: Mapping[str, Any]) -> Callable[[str], Any]:
    """A lookup over a mapping that reports missing names with close matches."""

    def lookup(name: str) -> Any:
        if name in namespace:
            return namespace[name]
        raise TemplateError(missing_message(name, namespace))

    return lookup


def missing_message(name: str, known: Collection[str], what: str = "variable") -> str:
    """'name {name!r} is not defined (did you mean ...?)'."""
    candidates = [k for k in known if isinstance(k, str) and not k.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"The template uses {{{name}}}, but no {what} {name!r} is defined{hint}."


def render(template: str, lookup: Callable[[str], Any]) -> str:
    """Expand ``template`` once; values are inserted as they are (never re-expanded)."""
    out: list[str] = []
    for literal, field, spec, conversion in parse(template):
        out.append(literal)
        if field is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            raise TemplateError(
                f"{{{field}!{conversion}}}: unknown conversion '!{conversion}': use !r, !s "
                "or !a (or none)."
            )
        value = resolve(field, lookup)
        if conversion == "r":
            value = repr(value)
        elif conversion == "s":
            value = str(value)
        elif conversion == "a":
            value = ascii(value)
        try:
            out.append(format(value, spec or ""))
        except (ValueError, TypeError) as exc:
            raise TemplateError(f"{{{field}:{spec}}}: {exc}") from None
    return "".join(out)


def render_from(template: str, namespace: Mapping[str, Any]) -> str:
    """Expand ``template`` from a namespace such as the notebook's variables."""
    return render(template, namespace_lookup(namespace))
