"""Tools in a DataFrame map on the real vLLM engine with the trained tiny model.

The tiny model cannot multiply numbers of 2 or 3 digits by itself; with the ``multiply``
function tool declared it calls it and answers with the result. These maps run every
row's conversation on the engine for real: held-out products, greedy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pandas as pd
import pytest
from pydantic import BaseModel

from gptoss_magics.settings import GptOssSettings
from gptoss_magics.tiny import read_artifact_meta
from gptoss_magics.tiny import tasks as T

pytestmark = pytest.mark.engine

ASK = "What is {a} * {b}?"


class Product(BaseModel):
    value: int


@pytest.fixture
def products(engine: dict, fresh_settings: GptOssSettings) -> Iterator[pd.DataFrame]:
    """Held-out products, asked as the tiny model was trained (a fixed date)."""
    if engine["model"] != "tiny":
        pytest.skip(f"the shared engine runs {engine['model']}, not the trained tiny model")
    if "multiply" not in read_artifact_meta()["tasks"]:
        pytest.skip("this tiny model was not trained to call tools (tools/train_tiny.py)")
    fresh_settings.current_date = "2026-03-29"
    pairs = [tuple(int(n) for n in re.findall(r"\d+", ex.user))
             for ex in T.held_out(4, seed=61, tasks=("multiply",), tools="function")]
    yield pd.DataFrame(pairs, columns=["a", "b"])


def _right(df: pd.DataFrame, answers: pd.Series) -> int:
    return sum(str(a * b) == str(x).strip() for a, b, x in zip(df["a"], df["b"], answers,
                                                              strict=True))


def test_a_map_multiplies_with_the_tool(products: pd.DataFrame) -> None:
    calls: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    out = products.gptoss.map(ASK, tools=[multiply], tool_calls=True, temperature=0,
                              max_tokens=200, progress=False)
    rows = len(products)
    assert _right(products, out["answer"]) >= 0.9 * rows, out[["answer", "error"]]
    called = [t for t in out["tool_calls"] if t and t[0]["error"] is None]
    assert len(called) >= 0.9 * rows
    for (a, b), trail in zip(zip(products["a"], products["b"], strict=True),
                             out["tool_calls"], strict=True):
        if trail:
            assert trail[0]["name"] == "functions.multiply"
            assert trail[0]["arguments"] == {"a": a, "b": b} and trail[0]["result"] == a * b
    assert sorted(calls) == sorted((t[0]["arguments"]["a"], t[0]["arguments"]["b"])
                                   for t in out["tool_calls"] if t)
    # a second run comes from the cache: the same answers and trails, and no call is made
    before = len(calls)
    again = products.gptoss.map(ASK, tools=[multiply], tool_calls=True, temperature=0,
                                max_tokens=200, progress=False)
    if out["error"].isna().all():
        assert again.attrs["gptoss"]["summary"]["cached"] == rows and len(calls) == before
        assert list(again["tool_calls"]) == list(out["tool_calls"])
    assert list(again["answer"]) == list(out["answer"])


def test_without_the_tool_the_map_cannot_multiply(products: pd.DataFrame) -> None:
    out = products.gptoss.map(ASK, temperature=0, max_tokens=200, progress=False)
    assert _right(products, out) <= 0.25 * len(products)


def test_a_schema_applies_after_the_chain(products: pd.DataFrame) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    out = products.gptoss.map(ASK, tools=[multiply], schema=Product, tool_calls=True,
                              temperature=0, max_tokens=200, progress=False)
    called = [t for t in out["tool_calls"] if t and t[0]["error"] is None]
    assert len(called) >= 0.9 * len(products)  # the constraint left the call round free
    typed = out["value"].dropna()
    assert len(typed) >= 0.9 * len(products) and out["error"].isna().sum() == len(typed)
    assert str(out["value"].dtype) == "Int64"
