"""A Python function's parameters as a pydantic model and a JSON schema (what the model
sees in the tool's declaration, and what its arguments are validated against).

Each parameter becomes a field: its type hint is the field's type (no hint: any JSON
value), its default makes it optional. ``Annotated[str, Field(description="...")]``
describes a parameter to the model. ``*args`` and ``**kwargs`` cannot be called with
JSON arguments by name, so they are refused with one :class:`InvalidOptionError`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidOptionError

#: nested schemas are inlined up to this depth (a model that contains itself stops here)
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Signature:
    """A function's parameters as a pydantic model whose fields are aliased to the
    parameters' names (so that no name can clash with pydantic's own attributes)."""

    model: Any  # a pydantic BaseModel subclass
    names: tuple[str, ...]  # the parameters, in order
    positional_only: frozenset[str]
    parameters: Mapping[str, Any]  # the JSON schema shown to the model

    def validate(self, arguments: Any) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for the function from the model's JSON
        arguments (a dict); raises pydantic's ValidationError when they do not fit."""
        values = self.model.model_validate(arguments)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        given = values.model_fields_set
        for i, name in enumerate(self.names):
            field = f"p{i}"
            if field not in given and name not in self.positional_only:
                continue  # the function's own default applies
            value = getattr(values, field)
            if name in self.positional_only:
                args.append(value)
            else:
                kwargs[name] = value
        return args, kwargs


def signature_of(fn: Callable[..., Any], name: str) -> Signature:
    """The :class:`Signature` of ``fn``; raises :class:`InvalidOptionError` (one line)
    when it cannot be a tool."""
    import pydantic

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(f"cannot make a tool of {name}: its signature cannot be "
                                 f"read ({exc})") from None
    hints = _hints(fn, sig, name)
    fields: dict[str, Any] = {}
    names: list[str] = []
    positional_only: set[str] = set()
    for i, param in enumerate(sig.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise InvalidOptionError(
                f"cannot make a tool of {name}: it takes {star}{param.name}, and a tool's "
                "arguments must be named parameters (write them out, or wrap the function)")
        if param.kind is param.POSITIONAL_ONLY:
            positional_only.add(param.name)
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[f"p{i}"] = (annotation, pydantic.Field(default, alias=param.name))
        names.append(param.name)
    try:
        model = pydantic.create_model(
            f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        schema = model.model_json_schema()
    except Exception as exc:  # pydantic cannot describe a type hint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidOptionError(f"cannot make a tool of {name}: a parameter's type has no "
                                 f"JSON schema ({first})") from None
    return Signature(model, tuple(names), frozenset(positional_only), clean_schema(schema))


def _hints(fn: Callable[..., Any], sig: inspect.Signature, name: str) -> dict[str, Any]:
    """The parameters' type hints, with string annotations resolved one by one (so that
    a return annotation that cannot be resolved does not matter)."""
    target = fn if inspect.isroutine(fn) else type(fn).__call__  # a callable object
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    globalns = getattr(inspect.unwrap(target), "__globals__", {})
    try:
        localns = dict(inspect.getclosurevars(target).nonlocals)
    except (TypeError, ValueError):
        localns = {}
    out: dict[str, Any] = {}
    for param in sig.parameters.values():
        hint = param.annotation
        if hint is param.empty:
            continue
        if isinstance(hint, str):
            try:
                hint = eval(hint, globalns, localns)  # what get_type_hints does
            except Exception:
                raise InvalidOptionError(
                    f"cannot make a tool of {name}: the type hint of {param.name!r} "
                    f"({hint}) cannot be resolved; define or import its type at the top "
                    "level of the function's module") from None
        out[param.name] = hint
    return out


def clean_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema as harmony renders it well: references inlined, titles
    dropped, ``Optional[X]`` as ``X | null`` and other unions as ``oneOf``."""
    defs = dict(schema.get("$defs") or {})
    out = _clean(schema, defs, 0)
    out.pop("$defs", None)
    return out


def _clean(node: Any, defs: Mapping[str, Any], depth: int) -> Any:
    if isinstance(node, list):
        return [_clean(x, defs, depth) for x in node]
    if not isinstance(node, Mapping):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.rsplit("/", 1)[1])
        if target is None or depth >= _MAX_DEPTH:
            return {}
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {k: _clean(v, defs, depth) for k, v in value.items()}
        else:
            out[key] = _clean(value, defs, depth)
    return _union(out)


def _union(node: dict[str, Any]) -> dict[str, Any]:
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    real = [o for o in options if o != {"type": "null"}]
    nullable = len(real) < len(options)
    if len(real) == 1 and isinstance(real[0], dict):
        merged = {**real[0], **rest}
        kind = merged.get("type")
        if nullable and isinstance(kind, str) and kind not in ("array", "object"):
            merged["type"] = [kind, "null"]  # (arrays, objects: their shape shows)
        return merged
    return {**rest, "oneOf": options}
