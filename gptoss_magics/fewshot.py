"""Worked examples (few-shot) as earlier chat turns, shared by the map and the sweep."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import harmony
from . import template as tmpl
from .errors import InvalidOptionError, TemplateError


def _pairs(fields: list[str], examples: Any) -> list[tuple[Any, Any]]:
    import pandas as pd

    if isinstance(examples, pd.DataFrame):
        if "answer" not in examples.columns:
            raise InvalidOptionError("examples needs an 'answer' column next to the "
                                     f"template's columns ({', '.join(fields)})")
        missing = [f for f in fields if f not in examples.columns]
        if missing:
            raise TemplateError(f"examples has no column {missing[0]!r}, which the "
                                "template uses")
        return [(dict(zip(fields, values, strict=True)), answer) for *values, answer
                in examples[[*fields, "answer"]].itertuples(index=False, name=None)]
    if isinstance(examples, (str, bytes, Mapping)) or not hasattr(examples, "__iter__"):
        raise InvalidOptionError("examples must be a DataFrame with an 'answer' column or a "
                                 f"list of (input, answer) pairs, not {type(examples).__name__}")
    pairs = []
    for item in examples:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise InvalidOptionError("examples must be a DataFrame with an 'answer' column or "
                                     f"(input, answer) pairs, not {type(item).__name__} "
                                     f"{item!r:.60}")
        pairs.append((item[0], item[1]))
    return pairs


def examples_to_turns(template_text: str, examples: Any) -> tuple[harmony.Turn, ...]:
    """Worked examples as earlier chat turns: ``template_text`` filled with each example's
    values as the question, its answer as the final answer.

    ``examples`` is a DataFrame with the template's columns and an ``answer`` column, or
    ``(input, answer)`` pairs whose input is a dict of the fields (or, for a template with
    one field, its value). Raises InvalidOptionError / TemplateError saying what is wrong."""
    if examples is None:
        return ()
    fields = tmpl.fields(template_text)
    turns = []
    for given, answer in _pairs(fields, examples):
        if not isinstance(given, Mapping):
            if len(fields) != 1:
                raise InvalidOptionError(f"the template has {len(fields)} fields "
                                         f"({', '.join(fields)}): give each example's input "
                                         "as a dict of them")
            given = {fields[0]: given}
        missing = [f for f in fields if f not in given]
        if missing:
            raise TemplateError(f"an example has no value for {missing[0]!r}")
        if isinstance(answer, (dict, list)):
            answer = json.dumps(answer, default=str)  # as a schema answer is written
        turns.append(harmony.Turn(tmpl.render(template_text, tmpl.namespace_lookup(
            dict(given))), str(answer)))
    return tuple(turns)
