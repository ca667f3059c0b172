"""Structured-output constraints: the answer is one of some choices, matches a regex, or
is JSON of a schema; how to ask vLLM for it, and how to read the answer back.

Only the final answer is constrained: the ``gptoss_final`` reasoning parser (see
``engine._plugin``) keeps the analysis free. Used by ``complete``/``%%gptoss`` and by
``df.gptoss.map``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidOptionError

ConstraintKind = Literal["none", "choices", "regex", "schema"]


@dataclass
class Constraint:
    """A structured-output constraint, and how to read the answers it shapes."""

    kind: ConstraintKind
    choices: tuple[str, ...] | None = None
    regex: str | None = None
    schema: dict[str, Any] | None = None
    model: Any = None  # pydantic model class, when the schema came from one
    sampling_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, choices: Sequence[str] | None, schema: Any, regex: str | None) -> Constraint:
        """The constraint for these options (at most one given); raises
        :class:`InvalidOptionError` naming the option when a value is unusable."""
        given = [x is not None for x in (choices, schema, regex)]
        if sum(given) > 1:
            raise InvalidOptionError("give at most one of choices, schema and regex")
        if choices is not None:
            return cls._choices(choices)
        if regex is not None:
            return cls._regex(regex)
        if schema is not None:
            return cls._schema(schema)
        return cls("none")

    @classmethod
    def _choices(cls, choices: Any) -> Constraint:
        if isinstance(choices, (str, bytes)) or not isinstance(choices, (Sequence, set)):
            raise InvalidOptionError(
                f"choices must be a list of labels such as ['yes', 'no'], not {choices!r:.60}")
        opts = tuple(choices)
        if not opts or not all(isinstance(c, str) and c.strip() for c in opts):
            raise InvalidOptionError("choices must be a non-empty list of non-empty strings, "
                                     f"not {list(opts)!r:.60}")
        if len(set(opts)) != len(opts):
            raise InvalidOptionError(f"choices must be distinct, not {list(opts)!r:.60}")
        return cls("choices", choices=opts, sampling_args={"choice": opts})

    @classmethod
    def _regex(cls, regex: Any) -> Constraint:
        import re

        if not isinstance(regex, str) or not regex:
            raise InvalidOptionError(f"regex must be a non-empty string, not {regex!r:.60}")
        try:
            re.compile(regex)
        except re.error as exc:
            raise InvalidOptionError(f"regex does not compile: {exc}") from None
        return cls("regex", regex=regex, sampling_args={"regex": regex})

    @classmethod
    def _schema(cls, schema: Any) -> Constraint:
        model = None
        if isinstance(schema, Mapping):
            js = dict(schema)
        elif isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            model, js = schema, schema.model_json_schema()
        else:
            raise InvalidOptionError("schema must be a pydantic model class or a JSON schema "
                                     f"dict, not {type(schema).__name__}")
        if js.get("type") != "object" or not js.get("properties"):
            raise InvalidOptionError("schema must describe an object with properties (one "
                                     "column per property)")
        grammar = json.dumps(_bound_integers(js), sort_keys=True)
        return cls("schema", schema=js, model=model, sampling_args={"json_schema": grammar})

    def read(self, final: str, as_model: bool = False) -> Any:
        """The typed value of an answer; raises ValueError when it does not fit.

        A schema answer is a dict, or with ``as_model`` an instance of the pydantic
        model the schema came from."""
        text = final.strip()
        if self.kind == "choices":
            assert self.choices is not None
            if text not in self.choices:
                raise ValueError(f"answer {text[:40]!r} is not one of the choices")
            return text
        if self.kind == "regex":
            import re

            assert self.regex is not None
            if not re.fullmatch(self.regex, text):
                raise ValueError(f"answer {text[:40]!r} does not match the regex")
            return text
        if self.kind == "schema":
            data = json.loads(text)
            if self.model is not None:
                obj = self.model.model_validate(data)
                return obj if as_model else obj.model_dump()
            _check_schema(data, self.schema or {})
            return data
        return final

    def columns(self) -> list[str]:
        return list((self.schema or {}).get("properties", {}))

    def dtypes(self) -> dict[str, str]:
        out = {}
        for name, prop in (self.schema or {}).get("properties", {}).items():
            t = prop.get("type")
            if "enum" in prop:
                out[name] = "category"
            elif t == "integer":
                out[name] = "Int64"
            elif t == "number":
                out[name] = "Float64"
            elif t == "boolean":
                out[name] = "boolean"
            elif t == "string":
                out[name] = "string"
            else:
                out[name] = "object"
        return out


_SAFE_INT = 2**53 - 1


def _bound_integers(schema: Any) -> Any:
    """A copy of ``schema`` whose unbounded integers are limited to the JSON-safe range.

    Without a bound the grammar lets a model that does not know how to close the number
    write digits until max_tokens; with one, at most 16 digits fit.
    """
    if isinstance(schema, list):
        return [_bound_integers(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bound_integers(v) for k, v in schema.items()}
    if out.get("type") == "integer":
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -_SAFE_INT
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = _SAFE_INT
    return out


_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": (int, float),
                               "boolean": bool, "object": dict, "array": list}


def _check_schema(data: Any, schema: Mapping[str, Any]) -> None:
    """A small JSON-schema check: object, required keys, property types and enums."""
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    for key in schema.get("required", []):
        if key not in data:
            raise ValueError(f"the answer lacks {key!r}")
    for key, prop in schema.get("properties", {}).items():
        if key not in data or data[key] is None:
            continue
        t = prop.get("type")
        py = _JSON_TYPES.get(t) if isinstance(t, str) else None
        if py is not None and (not isinstance(data[key], py) or
                               (t in ("integer", "number") and isinstance(data[key], bool))):
            raise ValueError(f"{key!r} should be {t}")
        if "enum" in prop and data[key] not in prop["enum"]:
            raise ValueError(f"{key!r} must be one of {prop['enum']}")
