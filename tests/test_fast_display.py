"""How a Reply shows (text, markdown, HTML, the JSON bundle, metadata) and re-runs from
a saved output, on the scripted engine (no vLLM)."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import BaseModel

import gptoss_magics as gm
from gptoss_magics import display
from gptoss_magics import harmony as H
from gptoss_magics.engine import ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion
from gptoss_magics.session import using
from gptoss_magics.settings import GptOssSettings

MIME = display.MIME


def test_the_bundle_has_every_form_and_honours_include_exclude(
        scripted: ScriptedEngine) -> None:
    reply = gm.complete("Hello")
    data, meta = reply._repr_mimebundle_()
    assert set(data) == {"text/plain", "text/markdown", "text/html", MIME}
    assert data["text/plain"].splitlines()[-2:] == ["echo: Hello", f"-- {display.footer(reply)}"]
    assert "echo: Hello" in data["text/markdown"] and "echo: Hello" in data["text/html"]
    assert data[MIME]["final"] == "echo: Hello" and "token_ids" not in data[MIME]
    assert data[MIME]["final_markdown"].strip() == "echo: Hello"
    assert data[MIME]["footer"] == display.footer(reply)
    json.dumps(data[MIME])
    only, _ = reply._repr_mimebundle_(include=["text/plain"])
    assert set(only) == {"text/plain"}
    less, _ = reply._repr_mimebundle_(exclude=["text/html", MIME])
    assert set(less) == {"text/plain", "text/markdown"}
    prov = meta["gptoss"]
    assert prov["model"] == "scripted" and prov["vllm"] == "scripted"
    assert (prov["prompt_tokens"], prov["completion_tokens"], prov["finish_reason"]) == \
        (reply.prompt_tokens, reply.completion_tokens, "stop")
    assert prov["sampling"]["max_tokens"] == reply.provenance["sampling"]["max_tokens"]
    assert json.loads(json.dumps(meta)) == meta


def test_the_footer_says_what_the_reply_cost(scripted: ScriptedEngine) -> None:
    reply = gm.complete("Hello", effort="high")
    parts = display.footer(reply).split(" · ")
    assert parts[:3] == ["scripted", "effort high",
                         f"{reply.prompt_tokens} prompt + {reply.completion_tokens} "
                         "completion tokens"]
    assert parts[3] == f"{reply.analysis_tokens} reasoning" and reply.analysis_tokens > 0
    assert parts[-2].endswith(" s") and parts[-1].endswith(" tok/s")


def test_a_budget_cut_and_a_confidence_show_in_the_footer(scripted: ScriptedEngine) -> None:
    scripted.enqueue(("think " * 20, "done"))
    cut = gm.complete("Hello", reasoning_budget=3)
    assert cut.reasoning_cut and cut.final == "done"
    assert "reasoning cut at its budget of 3 tokens" in display.footer(cut)
    sure = gm.complete("Hello", confidence=True)
    ids = harmony_completion("echo: Hello")
    start, end = H.final_span(ids) or (0, 0)
    assert sure.confidence == pytest.approx(math.exp(-0.1 * (end - start)), rel=1e-5)
    assert f"confidence {sure.confidence:.2f}" in display.footer(sure)
    assert gm.complete("Hello").confidence is None  # only when asked for


def test_reasoning_is_hidden_or_shown(scripted: ScriptedEngine,
                                      fresh_settings: GptOssSettings) -> None:
    reply = gm.complete("Hello")
    hidden = display.to_text(reply, show_reasoning=False)
    assert f"[reasoning: {reply.analysis_tokens} tokens, hidden; see .analysis]" in hidden
    assert "scripted reasoning" not in hidden
    shown = display.to_text(reply, show_reasoning=True)
    assert "--- reasoning ---\nscripted reasoning\n--- answer ---" in shown
    assert "<details><summary>" in display.to_markdown(reply, show_reasoning=False)
    assert "<details open><summary>" in display.to_html(reply, show_reasoning=True)
    fresh_settings.show_reasoning = True  # the setting decides when the call does not
    assert "--- reasoning ---" in display.to_text(reply)
    assert display.to_json(reply)["show_reasoning"] is True


def test_a_truncated_reply_warns_in_every_form(scripted: ScriptedEngine) -> None:
    reply = gm.complete("Hello", max_tokens=3)
    assert reply.truncated and not reply.final and reply.finish_reason == "length"
    warning = "hit max_tokens (3 tokens) while reasoning, before any answer"
    assert warning in (reply.warning or "")
    data, _ = reply._repr_mimebundle_()
    assert f"[warning: {warning}" in data["text/plain"]
    assert "> **warning:** hit max" in data["text/markdown"]
    assert '<div class="gptoss-warning">' in data["text/html"]
    assert data[MIME]["warning"] == reply.warning


def test_a_notice_goes_with_every_reply(scripted: ScriptedEngine) -> None:
    engine = ScriptedEngine()
    try:
        with using(engine, "toy", notice="a toy model: answers are not meaningful"):
            reply = gm.complete("Hello")
    finally:
        engine.close()
    assert reply.notice == "a toy model: answers are not meaningful" and reply.model == "toy"
    data, _ = reply._repr_mimebundle_()
    assert data["text/plain"].startswith("[a toy model: answers are not meaningful]")
    assert '<div class="gptoss-notice">a toy model' in data["text/html"]
    assert "*a toy model: answers are not meaningful*" in data["text/markdown"]


class Mood(BaseModel):
    sentiment: str


def test_a_constrained_value_is_data_in_the_bundle(scripted: ScriptedEngine) -> None:
    scripted.enqueue('{"sentiment": "positive"}')
    reply = gm.complete("Mood?", schema=Mood)
    assert isinstance(reply.value, Mood) and reply.value.sentiment == "positive"
    assert display.to_json(reply)["value"] == {"sentiment": "positive"}
    labelled = gm.complete("Label?", choices=["yes", "no"])
    assert labelled.value == "yes" == display.to_json(labelled)["value"]
    scripted.enqueue("maybe")
    odd = gm.complete("Label?", choices=["yes", "no"])
    assert odd.value is None and "does not fit the constraint" in (odd.warning or "")


def test_a_saved_output_reproduces(scripted: ScriptedEngine) -> None:
    reply = gm.complete("Uppercase the word: river", seed=11, instructions="Be brief.")
    saved = json.loads(json.dumps(display.to_json(reply)))  # what the .ipynb keeps
    again = gm.reproduce(saved)
    assert again.identical and again.same_prompt and again.same_weights
    assert "identical" in repr(again)
    last = scripted.requests[-1]
    assert last.sampling.seed == 11 and "Be brief." in H.decode(last.prompt_ids)
    saved["final"] = "GARDEN"  # a tampered answer does not reproduce
    assert "DIFFERENT" in repr(gm.reproduce(saved))
    with pytest.raises(gm.InvalidOptionError, match="provenance"):
        gm.reproduce({"final": "x"})


def test_a_reply_without_a_final_message_is_not_ok(scripted: ScriptedEngine) -> None:
    enc = H.encoding()
    scripted.enqueue(list(enc.encode("<|channel|>analysis<|message|>Done.<|return|>",
                                     allowed_special="all")))
    reply = gm.complete("Anything")
    assert reply.final == "" and reply.finish_reason == "stop" and not reply.truncated
    assert not reply.ok
    assert reply.warning == "the model ended without a final answer"
    scripted.enqueue("fine")
    assert gm.complete("Again").ok
