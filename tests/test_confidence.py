"""Confidence: the model's probability of its answer, from the engine's log-probabilities.

On the real vLLM engine with the trained tiny model.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.display import footer
from gptoss_magics.options import Options
from gptoss_magics.session import current
from gptoss_magics.tiny import tasks as T


def E(text: str) -> list[int]:
    return list(H.encoding().encode(text, allowed_special="all"))


def test_the_answer_span_and_its_logprob() -> None:
    ids = E("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final"
            "<|message|>positive<|return|>")
    start, end = H.final_span(ids) or (0, 0)
    assert H.decode(ids[start:end]) == "positive"
    lps = [-9.0] * len(ids)
    lps[start:end] = [-0.25] * (end - start)
    assert H.answer_logprob(ids, lps) == pytest.approx(-0.25 * (end - start))
    assert H.answer_logprob(E("<|channel|>analysis<|message|>think"), [0.0] * 4) is None
    empty = E("<|channel|>final<|message|><|return|>")
    assert H.answer_logprob(empty, [0.0] * len(empty)) is None
    cut = E("<|channel|>final<|message|>posi")  # truncated: the tokens so far
    assert H.answer_logprob(cut, [-1.0] * len(cut)) == pytest.approx(-1.0 * (len(cut) - 3))


@pytest.mark.engine
def test_confidence_is_the_probability_vllm_reports(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip("needs the trained tiny model")
    prompt = "What is the sentiment of: the room was lovely"
    reply = gm.complete(prompt, effort="medium", temperature=0, max_tokens=120,
                        confidence=True)
    assert reply.confidence is not None and 0 < reply.confidence <= 1
    assert f"confidence {reply.confidence:.2f}" in footer(reply)
    ids = Options.resolve(effort="medium").render(prompt)

    def raw(llm: Any) -> list[Any]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=120, temperature=0, logprobs=0,
                                stop_token_ids=[H.RETURN, H.CALL], skip_special_tokens=False)
        out = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0].outputs[0]
        return [list(out.token_ids), out.logprobs]

    tokens, logprobs = current().engine.call(raw)
    assert tokens == list(reply.token_ids)
    start, end = H.final_span(tokens) or (0, 0)
    expected = math.exp(sum(logprobs[i][tokens[i]].logprob for i in range(start, end)))
    assert reply.confidence == pytest.approx(expected, rel=1e-4)
    assert gm.complete(prompt, effort="medium", temperature=0,
                       max_tokens=120).confidence is None  # only when asked for


@pytest.mark.engine
def test_confidence_in_a_stream(engine: dict) -> None:
    *_, last = list(gm.stream("Uppercase the word: river", temperature=0, max_tokens=120,
                              confidence=True))
    assert isinstance(last, gm.Reply)
    if engine["model"] == "tiny":
        assert last.confidence is not None and 0 < last.confidence <= 1


@pytest.mark.engine
def test_a_confidence_column_and_the_cache(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip("needs the trained tiny model")
    examples = [ex for ex in T.held_out(6, seed=31) if ex.task == "sentiment"]
    df = pd.DataFrame({"text": [ex.user for ex in examples]})
    labels = ["positive", "negative", "neutral"]
    kw = {"effort": "low", "temperature": 0, "max_tokens": 120, "choices": labels,
          "progress": False}
    plain = df.gptoss.map("{text} (confidence run)", **kw)
    assert isinstance(plain, pd.Series)
    out = df.gptoss.map("{text} (confidence run)", confidence=True, **kw)
    # the rows were cached without log-probabilities: they are generated again
    assert out.attrs["gptoss"]["summary"]["generated"] == len(df)
    assert list(out.columns[:2]) == ["answer", "confidence"]
    assert str(out["confidence"].dtype) == "Float64"
    assert out["confidence"].between(0, 1).all() and out["confidence"].median() > 0.5
    assert list(out["answer"]) == list(plain)  # the same answers, with their confidence
    again = df.gptoss.map("{text} (confidence run)", confidence=True, **kw)
    assert again.attrs["gptoss"]["summary"]["generated"] == 0
    assert list(again["confidence"]) == list(out["confidence"])
    plain_again = df.gptoss.map("{text} (confidence run)", **kw)
    assert plain_again.attrs["gptoss"]["summary"]["generated"] == 0


@pytest.mark.engine
def test_confidence_from_the_magics(engine: dict, ip: InteractiveShell) -> None:
    ip.run_cell_magic("gptoss", "-t 0 -n 120 --confidence", "Uppercase the word: river")
    reply = ip.user_ns["_"]
    if engine["model"] == "tiny":
        assert reply.confidence is not None and 0 < reply.confidence <= 1
    ip.user_ns["words"] = pd.DataFrame({"w": ["river", "stone"]})
    ip.run_line_magic("gptoss_map", 'words "Uppercase the word: {w}" -o up -t 0 -n 120 '
                                    "--confidence --no-cache")
    frame = ip.user_ns["words"]
    assert "up_confidence" in frame.columns and "up" in frame.columns
    if engine["model"] == "tiny":
        assert list(frame["up"]) == ["RIVER", "STONE"]
        assert frame["up_confidence"].between(0, 1).all()
