"""Worked examples (few-shot) for df.gptoss.map: earlier chat turns ahead of every row."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm

SHOTS = pd.DataFrame({"text": ["the food was great", "the room was awful"],
                      "answer": ["positive", "negative"]})
ROWS = pd.DataFrame({"text": ["the show was lovely", "the train was boring", "the city park",
                              "a wonderful trip"]})
EXPECTED = ["positive", "negative", "neutral", "positive"]
TURN = "<|start|>user<|message|>{}<|end|><|start|>assistant<|channel|>final<|message|>{}<|end|>"


def test_examples_become_earlier_turns_in_every_prompt() -> None:
    plan = ROWS.gptoss.plan("What is the sentiment of: {text}", examples=SHOTS)
    first = TURN.format("What is the sentiment of: the food was great", "positive")
    second = TURN.format("What is the sentiment of: the room was awful", "negative")
    row = "<|start|>user<|message|>What is the sentiment of: the show was lovely<|end|>"
    prompt = plan.first_prompt
    assert prompt.index(first) < prompt.index(second) < prompt.index(row)
    pairs = ROWS.gptoss.plan("What is the sentiment of: {text}",
                             examples=[("the food was great", "positive"),
                                       ({"text": "the room was awful"}, "negative")])
    assert pairs.first_prompt == prompt
    as_json = pd.DataFrame({"a": [1]}).gptoss.plan("Describe {a}", examples=[(2, {"n": 2})])
    assert TURN.format("Describe 2", '{"n": 2}') in as_json.first_prompt


def test_bad_examples_get_one_clear_line() -> None:
    with pytest.raises(ValueError, match="needs an 'answer' column"):
        ROWS.gptoss.plan("Sentiment: {text}", examples=SHOTS.drop(columns="answer"))
    with pytest.raises(gm.TemplateError, match="no column 'text'"):
        ROWS.gptoss.plan("Sentiment: {text}", examples=SHOTS.rename(columns={"text": "t"}))
    two = pd.DataFrame({"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match="give each example's input as a dict"):
        two.gptoss.plan("{a} and {b}", examples=[("x", "z")])
    with pytest.raises(ValueError, match=r"\(input, answer\) pairs"):
        ROWS.gptoss.plan("Sentiment: {text}", examples=["positive"])


@pytest.mark.engine
def test_a_map_with_examples(engine: dict) -> None:
    kw = {"effort": "low", "temperature": 0, "max_tokens": 120, "progress": False,
          "choices": ["positive", "negative", "neutral"]}
    plain = ROWS.gptoss.map("What is the sentiment of: {text}", **kw)
    shot = ROWS.gptoss.map("What is the sentiment of: {text}", examples=SHOTS, **kw)
    # the examples are part of every prompt, so of the cache key too
    assert shot.attrs["gptoss"]["summary"]["generated"] == len(ROWS)
    assert shot.attrs["gptoss"]["examples"] == [
        ["What is the sentiment of: the food was great", "positive"],
        ["What is the sentiment of: the room was awful", "negative"]]
    if engine["model"] == "tiny":  # trained with earlier turns: it answers the last question
        assert list(shot) == EXPECTED and list(plain) == EXPECTED


@pytest.mark.engine
def test_examples_from_the_map_magic(engine: dict, ip: InteractiveShell) -> None:
    ip.user_ns.update(rows=ROWS.copy(), shots=SHOTS)
    ip.run_line_magic("gptoss_map", 'rows "What is the sentiment of: {text}" -o label '
                                    "--examples shots -e low -t 0 -n 120 "
                                    "--choices positive,negative,neutral")
    if engine["model"] == "tiny":
        assert list(ip.user_ns["rows"]["label"]) == EXPECTED
    with pytest.raises(UsageError, match="--examples nothing: no such variable"):
        ip.run_line_magic("gptoss_map", 'rows "{text}" -o x --examples nothing')


@pytest.mark.engine
def test_the_sweep_measures_the_prompts_with_examples(engine: dict) -> None:
    df = ROWS.assign(expected=EXPECTED)
    result = gm.compare_efforts(df, "What is the sentiment of: {text}", expected="expected",
                                efforts=["low"], examples=SHOTS, max_tokens=120,
                                temperature=0)
    reply = result.replies["low"][0]
    assert reply.provenance["history"][0] == ["What is the sentiment of: the food was great",
                                              "positive"]
    assert gm.reproduce(reply).identical  # the examples are part of what is re-run
    if engine["model"] == "tiny":
        assert result.table.loc["low", "accuracy"] == 1.0
    with pytest.raises(ValueError, match="examples go with a DataFrame"):
        gm.compare_efforts("hi", examples=SHOTS)
