"""Prompt templates: ``{name}``, ``{name.attr}``, ``{name[key]}``, ``{{`` and ``}}``.

Templates are expanded exactly once, from a namespace (the notebook's variables,
or a DataFrame row), and never evaluate code: only plain names, attribute
access (no names starting with ``_``) and item access with literal keys are
allowed. A field that names nothing raises :class:`TemplateError` naming it,
with close matches, before anything is generated.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .errors import TemplateError

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


def resolve(field: str, lookup: Callable[[str], Any]) -> Any:
    """The value of one field, e.g. ``filing.text`` or ``row['amount']``."""
    root = _root(field)
    value = lookup(root)
    rest = field[len(root):]
    pos = 0
    while pos < len(rest):
        match = _PART.match(rest, pos)
        if not match:
            raise TemplateError(f"{{{field}}}: cannot read {rest[pos:]!r}")
        attr, key = match.groups()
        if attr is not None:
            if attr.startswith("_"):
                raise TemplateError(
                    f"{{{field}}}: attributes starting with '_' are not allowed in templates"
                )
            try:
                value = getattr(value, attr)
            except AttributeError:
                raise TemplateError(
                    f"{{{field}}}: {type(value).__name__} object has no attribute {attr!r}"
                ) from None
        else:
            k = _key(key or "")
            try:
                value = value[k]
            except (KeyError, IndexError, TypeError) as exc:
                raise TemplateError(
                    f"{{{field}}}: no item {k!r} ({type(exc).__name__})"
                ) from None
        pos = match.end()
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
