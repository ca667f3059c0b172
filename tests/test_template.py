"""Prompt templates: names, attributes, keys, escapes, missing names, no code."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

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


# -- what a template can reach: data, never the interpreter's insides --------------------

SECRET = "s3cret-token"


def _gen() -> Any:
    yield 1


class Holder:
    """An ordinary object holding things a template must not reach through it."""

    def __init__(self) -> None:
        self.module = os
        self.gen = _gen()
        self.func = _gen
        self.cls = Holder
        self.globals = globals()
        self.modules = sys.modules
        self.inner = SimpleNamespace(module=os, value=7)
        self.other = Holder.__new__(Holder)
        self.other.name = "other"
        self.other.deeper = Holder.__new__(Holder)

    def method(self) -> str:
        return SECRET


def _unsafe_ns() -> dict[str, Any]:
    return {"os": os, "gen": _gen(), "f": _gen, "cls": Holder, "h": Holder(),
            "frame": sys._getframe(), "code": _gen.__code__, "print": print,
            "bound": Holder().method, "mods": sys.modules, "g": globals(), "x": 3.14159}


@pytest.mark.parametrize("bad, what", [
    ("{os}", "os is a module"),
    ("{os.path}", "os is a module"),
    ("{os.sys.modules[__main__].SECRET}", "os is a module"),
    ("{os.environ}", "os is a module"),
    ("{gen}", "gen is a generator"),
    ("{gen.gi_frame}", "gen is a generator"),
    ("{gen.gi_frame.f_globals[SECRET]}", "gen is a generator"),
    ("{gen.gi_code}", "gen is a generator"),
    ("{f}", "f is a function"),
    ("{f.func_globals}", "f is a function"),
    ("{f.__globals__}", "f is a function"),
    ("{cls}", "cls is a class"),
    ("{cls.mro}", "cls is a class"),
    ("{frame.f_globals}", "frame is a frame"),
    ("{code.co_consts}", "code is a code object"),
    ("{print}", "print is a function"),
    ("{bound}", "bound is a function or method"),
    ("{mods}", "mods is a module's namespace"),
    ("{mods[os]}", "mods is a module's namespace"),
    ("{g[SECRET]}", "g is a module's namespace"),
    ("{h.module}", "h.module is a module"),
    ("{h.module.environ}", "h.module is a module"),
    ("{h.gen.gi_frame.f_globals}", "h.gen is a generator"),
    ("{h.func}", "h.func is a function"),
    ("{h.cls.mro}", "h.cls is a class"),
    ("{h.method}", "h.method is a function or method"),
    ("{h.globals[SECRET]}", "h.globals is a module's namespace"),
    ("{h.modules[__main__]}", "h.modules is a module's namespace"),
    ("{h.inner.module}", "h.inner.module is a module"),
    ("{h.other.deeper}", "past the first attribute or key"),
    ("{x.__class__.__subclasses__}", "starting with '_'"),
])
def test_templates_reach_only_data(bad: str, what: str) -> None:
    with pytest.raises(TemplateError) as info:
        template.render_from(bad, _unsafe_ns())
    message = str(info.value)
    assert what in message and "\n" not in message
    assert SECRET not in message


def test_an_unknown_conversion_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"\{x!z\}: unknown conversion '!z': use !r, !s"):
        template.render_from("{x!z}", NS)
    assert template.render_from("{x!r} {x!s} {x!a} {d[key]!r:>9}", NS) == \
        "3.14159 3.14159 3.14159   'value'"


@dataclass
class Author:
    name: str
    tags: list[str]


def test_ordinary_data_still_renders() -> None:
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({"amount": [1.5, 2.25], "who": ["a", "b"]})
    ns = {
        "filing": SimpleNamespace(text="Revenue fell.", author=Author("Ann", ["cfo"]),
                                  meta={"q": [1, {"deep": "yes"}]}),
        "meta": {"ticker": "ACME", "when": date(2025, 3, 31)},
        "row": df.iloc[1], "df": df, "arr": np.arange(4), "price": Decimal("9.50"),
        "cfg": SimpleNamespace(db=SimpleNamespace(pool=SimpleNamespace(size=5))),
    }
    out = template.render_from(
        "{filing.text} {filing.author.name} {filing.author.tags[0]} {filing.meta[q][1][deep]} "
        "{meta[ticker]} {meta[when]:%Y} {row['amount']:.1f} {row.who} {df.shape[0]} "
        "{df.amount[1]} {df.columns[1]} {arr[3]} {arr.shape[0]} {price:.1f} "
        "{cfg.db.pool.size}", ns)
    assert out == "Revenue fell. Ann cfo yes ACME 2025 2.2 b 2 2.25 who 3 4 9.5 5"
