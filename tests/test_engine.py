"""The core API on the real vLLM engine with the tiny model."""

from __future__ import annotations

import random

import pytest

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.options import Options
from gptoss_magics.session import current

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_round_trip_at_each_effort(engine: dict, effort: str) -> None:
    reply = gm.complete("What is 2+2?", effort=effort, max_tokens=12, temperature=0)
    assert isinstance(reply, gm.Reply)
    assert reply.effort == effort and reply.provenance["effort"] == effort
    # the prompt that was sent carries the effort in its system message
    sent = Options.resolve(effort=effort).render("What is 2+2?")
    assert f"Reasoning: {effort}" in H.decode(sent)
    assert reply.prompt_tokens == len(sent)
    assert reply.completion_tokens == len(reply.token_ids) > 0
    assert reply.latency_s > 0 and reply.first_token_s is not None
    assert reply.model == engine["model"] and "not a language model" in (reply.notice or "")
    # the parse of what came back is the harmony codec's
    parsed = H.parse_completion(reply.token_ids, reply.finish_reason)
    assert (reply.final, reply.analysis, reply.truncated) == (
        parsed.final, parsed.analysis, parsed.truncated)


def test_batch_returns_replies_in_prompt_order(engine: dict) -> None:
    prompts = [f"Question number {i}: " + "why " * (i * 3) for i in range(8)]
    random.Random(0).shuffle(prompts)
    replies = gm.complete_batch(prompts, max_tokens=6, temperature=0)
    assert len(replies) == len(prompts)
    opts = Options.resolve(temperature=0, max_tokens=6)
    assert [r.prompt_tokens for r in replies] == [len(opts.render(p)) for p in prompts]
    # each reply is the one its own prompt gives when sent alone (greedy)
    for i in (0, 5):
        alone = gm.complete(prompts[i], max_tokens=6, temperature=0)
        assert alone.token_ids == replies[i].token_ids


def test_batch_is_one_engine_submission(engine: dict, count_requests: list[int]) -> None:
    gm.complete_batch([f"p{i}" for i in range(10)], max_tokens=2)
    assert count_requests == [10]


def test_max_tokens_3_truncates_without_error(engine: dict) -> None:
    reply = gm.complete("Explain everything.", max_tokens=3, effort="high")
    assert reply.truncated is True
    assert reply.finish_reason == "length"
    assert reply.completion_tokens == 3
    assert reply.warning and "max_tokens" in reply.warning
    assert not reply.ok


def test_same_seed_same_answer(engine: dict) -> None:
    a = gm.complete("Pick a word.", max_tokens=8, temperature=1.0, seed=7)
    b = gm.complete("Pick a word.", max_tokens=8, temperature=1.0, seed=7)
    assert a.token_ids == b.token_ids
    assert a.provenance["sampling"]["seed"] == 7


def test_stream_yields_text_before_the_reply(engine: dict) -> None:
    pieces = list(gm.stream("What is 17 + 25?", max_tokens=200, temperature=0))
    *deltas, reply = pieces
    assert isinstance(reply, gm.Reply) and len(deltas) >= 2
    streamed = "".join(text for channel, text in deltas
                       if channel not in ("analysis", "commentary"))
    reasoning = "".join(text for channel, text in deltas if channel == "analysis")
    assert streamed == reply.final and reasoning == reply.analysis
    assert reply.completion_tokens == len(reply.token_ids)


def test_closing_a_stream_aborts_and_the_engine_keeps_working(engine: dict) -> None:
    stream = gm.stream("Talk for a long time.", max_tokens=2000)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert current().engine.in_flight == 0  # nothing left running
    reply = gm.complete("Still there?", max_tokens=4)
    assert reply.completion_tokens == 4


def test_prompt_longer_than_the_context_is_an_error_reply(engine: dict) -> None:
    reply = gm.complete("word " * 5000, max_tokens=4)
    assert reply.finish_reason == "error" and "max_model_len" in (reply.error or "")
    assert reply.warning and reply.warning.startswith("error:")


def test_loading_twice_says_what_to_do(engine: dict) -> None:
    with pytest.raises(gm.EngineAlreadyLoadedError, match="unload"):
        gm.load("tiny")


def test_bad_arguments_raise_clear_errors(engine: dict) -> None:
    with pytest.raises(ValueError, match="effort must be 'low', 'medium' or 'high'"):
        gm.complete("x", effort="max")
    with pytest.raises(ValueError, match="max_tokens"):
        gm.complete("x", max_tokens=0)


def test_status_describes_the_engine(engine: dict) -> None:
    st = gm.status()
    assert st["state"] == "ready" and st["model"] == engine["model"] and st["device"] == "cpu"
    assert st["weights_fingerprint"].startswith("sha256:")
    assert st["vllm"].startswith("vllm")
    assert st["tokens_generated"] > 0


def test_reply_displays_in_every_format(engine: dict) -> None:
    reply = gm.complete("Hello", max_tokens=5)
    data, meta = reply._repr_mimebundle_()
    assert set(data) == {"text/plain", "text/markdown", "text/html",
                         "application/vnd.gptoss.reply+json"}
    assert reply.final in data["text/plain"]
    assert "not a language model" in data["text/html"]
    assert meta["gptoss"]["weights_fingerprint"].startswith("sha256:")
    assert meta["gptoss"]["completion_tokens"] == 5
    only_plain, _ = reply._repr_mimebundle_(include=["text/plain"])
    assert set(only_plain) == {"text/plain"}


def test_reply_json_parses_fenced_or_plain_answers(engine: dict) -> None:
    from dataclasses import replace

    reply = gm.complete("What is 17 + 25?", max_tokens=200, temperature=0)
    assert replace(reply, final='```json\n{"a": 1}\n```').json() == {"a": 1}
    assert replace(reply, final="[1, 2]").json() == [1, 2]
    with pytest.raises(ValueError, match="not valid JSON"):
        replace(reply, final="RIVER").json()
