"""What a map checks before it renders anything: the frame's columns against the
template, and which values count as missing."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import template as tmpl
from ..errors import InvalidOptionError, TemplateError


def is_missing(value: Any) -> bool:
    """None, NaN, NaT and pd.NA are missing; strings (even "nan") and containers are not."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)) or not pd.api.types.is_scalar(value):
        return False
    return bool(pd.isna(value))


def check_frame(frame: pd.DataFrame, template_text: Any) -> list[str]:
    """The template's fields, checked against the frame's columns (raises
    InvalidOptionError / TemplateError naming what is wrong)."""
    if not isinstance(template_text, str):
        raise InvalidOptionError("the template must be a string such as 'Summarise: {text}'")
    if isinstance(frame.columns, pd.MultiIndex):
        raise InvalidOptionError("the DataFrame has MultiIndex columns: flatten them first "
                                 "(df.columns = ['_'.join(map(str, c)) for c in df.columns])")
    fields = tmpl.fields(template_text)
    if not fields:
        raise TemplateError("The template refers to no column: write e.g. "
                            "'Summarise: {text}' with a column name in braces.")
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        cols = ", ".join(repr(c) for c in frame.columns)
        near = tmpl.missing_message(missing[0], [str(c) for c in frame.columns], "column")
        raise TemplateError(f"{near} The columns are: {cols}.")
    twice = [f for f in dict.fromkeys(fields) if list(frame.columns).count(f) > 1]
    if twice:
        raise InvalidOptionError(f"the DataFrame has more than one column named "
                                 f"{twice[0]!r}: rename them so that each name is unique")
    return list(dict.fromkeys(fields))
