"""Tools on the real vLLM engine with the tiny model.

Until the tiny model is retrained to call tools it never makes a call by itself, so these
tests check what can be checked without one: prompts that declare tools render and
generate, a constraint still leaves a tool-call round free, and the engine continues a
conversation after a tool result (the call itself is written into the prompt).
"""

from __future__ import annotations

import json

import pytest

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import Sampling
from gptoss_magics.options import Options
from gptoss_magics.session import current
from gptoss_magics.tools import Conversation, FunctionTool

pytestmark = pytest.mark.engine

LABELS = ["positive", "negative", "neutral"]
CALL_HEAD = "<|channel|>commentary to=functions.fx_rate <|constrain|>json<|message|>"


def fx_rate(base: str, quote: str, date: str) -> float:
    """Closing FX rate from the desk's own database."""
    return 1.0821


def test_a_prompt_with_tools_generates_and_answers_under_a_constraint(engine: dict) -> None:
    reply = gm.complete("What is the sentiment of: the food was great", tools=[fx_rate],
                        temperature=0, max_tokens=160, choices=LABELS)
    assert reply.error is None and reply.finish_reason in ("stop", "length")
    assert all(c.output for c in reply.tool_calls)  # had it called, the loop answered
    if reply.ok:
        assert reply.value in LABELS
    assert reply.provenance["tools"][0]["name"] == "fx_rate"
    assert "type fx_rate = (_: {" in H.decode(
        Options.resolve(tools=[fx_rate]).render(reply.prompt, run_tools=True))
    pieces = list(gm.stream("What is 2 + 3?", tools=[fx_rate], temperature=0, max_tokens=80))
    assert isinstance(pieces[-1], gm.Reply) and pieces[-1].error is None


def test_a_constraint_leaves_a_tool_call_free(engine: dict) -> None:
    """The gptoss_final reasoning parser starts the constraint only at the final channel:
    a round that writes a call samples exactly as without the constraint."""
    ids = Options.resolve(tools=[fx_rate]).render("EUR/USD on 2026-03-31?", run_tools=True)
    ids += list(H.encoding().encode(CALL_HEAD, allowed_special="all"))  # a call begins
    eng = current().engine
    free, constrained = eng.generate(
        [ids, ids], [Sampling(max_tokens=24, temperature=0, seed=0),
                     Sampling(max_tokens=24, temperature=0, seed=0, choice=tuple(LABELS))])
    span = H.final_span(constrained.token_ids)
    upto = len(constrained.token_ids) if span is None else span[0]
    assert constrained.token_ids[:upto] == free.token_ids[:upto]
    assert upto > 0


def test_the_engine_continues_after_a_tool_result(engine: dict) -> None:
    options = Options.resolve(tools=[fx_rate], max_tokens=60, temperature=0)
    ids = options.render("EUR/USD on 2026-03-31?", run_tools=True)
    conv = Conversation(ids, [FunctionTool(fx_rate)])
    args = json.dumps({"base": "EUR", "quote": "USD", "date": "2026-03-31"})
    call = list(H.encoding().encode(f"{CALL_HEAD}{args}<|call|>", allowed_special="all"))
    [first] = current().engine.generate([ids], options.sampling())
    first.token_ids, first.finish_reason = call, "stop"  # what a trained model would write
    assert conv.feed(first) is not None and conv.calls[0].result == 1.0821
    prompt = conv.next_prompt()
    assert prompt == ids + call + H.tool_result_ids("functions.fx_rate", "1.0821")
    [second] = current().engine.generate([prompt], options.sampling())
    conv.feed(second)
    conv.close()
    assert second.error is None and second.finish_reason in ("stop", "length")
    assert second.token_ids and conv.rounds[-1].parsed.analysis_tokens + \
        conv.rounds[-1].parsed.final_tokens > 0
