"""Prompt templates: names, attributes, keys, escapes, missing names, no code."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gptoss_magics import template
from gptoss_magics.errors import TemplateError

NS = {
    "filing": SimpleNamespace(text="Revenue fell 12%.", year=2025),
    "d": {"key": "value", 3: "three"},
    "items": ["a", "b"],
    "braces": "{not_a_field}",
    "x": 3.14159,
}


def test_names_attributes_and_keys() -> None:
    out = template.render_from(
        "{filing.text} ({filing.year}) {d[key]} {d[3]} {items[1]} {x:.2f} {x!r}", NS)
    assert out == "Revenue fell 12%. (2025) value three b 3.14 3.14159"


def test_double_braces_escape() -> None:
    assert template.render_from("{{literal}} and {{ {d[key]} }}", NS) == \
        "{literal} and { value }"


def test_values_are_inserted_once_never_re_expanded() -> None:
    assert template.render_from("see {braces}", NS) == "see {not_a_field}"


def test_missing_name_is_named_with_close_matches() -> None:
    with pytest.raises(TemplateError, match=r"\{filng\}.*did you mean 'filing'"):
        template.render_from("Summarise {filng.text}", NS)


def test_missing_attribute_and_key() -> None:
    with pytest.raises(TemplateError, match="no attribute 'txt'"):
        template.render_from("{filing.txt}", NS)
    with pytest.raises(TemplateError, match="no item 'nope'"):
        template.render_from("{d[nope]}", NS)


def test_templates_never_evaluate_code() -> None:
    for bad in ("{filing.__class__}", "{x.real.__class__}", "{x + 1}", "{d[key].__len__}",
                "{d[key]()}"):
        with pytest.raises(TemplateError):
            template.render_from(bad, NS)


def test_fields_lists_root_names() -> None:
    assert template.fields("{a} {b.c} {a[1]} {{x}}") == ["a", "b"]


def test_broken_template_is_one_clear_error() -> None:
    with pytest.raises(TemplateError, match="literal braces"):
        template.render_from("a { b", NS)
    with pytest.raises(TemplateError, match="empty"):
        template.render_from("a {} b", NS)
