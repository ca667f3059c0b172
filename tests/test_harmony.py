"""The harmony codec: rendering prompts and parsing completions (no engine)."""

from __future__ import annotations

import pytest

from gptoss_magics import harmony as H


def E(text: str) -> list[int]:
    return list(H.encoding().encode(text, allowed_special="all"))


FULL = ("<|channel|>analysis<|message|>User asks 2+2. Simple.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4<|return|>")


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_system_message_carries_the_effort(effort: str) -> None:
    ids = H.render_prompt("What is 2+2?", effort=effort, current_date="2026-01-02")
    text = H.decode(ids)
    assert f"Reasoning: {effort}" in text
    assert "Current date: 2026-01-02" in text
    assert "Knowledge cutoff: 2024-06" in text
    assert text.startswith("<|start|>system<|message|>")
    assert text.endswith("<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant")
    assert ids[-2:] == [200006, 173781]


def test_render_developer_instructions_and_no_date() -> None:
    text = H.decode(H.render_prompt("hi", instructions="Answer in French.", current_date=None))
    assert "<|start|>developer<|message|># Instructions\n\nAnswer in French.<|end|>" in text
    assert "Current date" not in text


def test_history_keeps_answers_and_drops_reasoning() -> None:
    history = [H.Turn("first question", "first answer"), H.Turn("second", "second answer")]
    text = H.decode(H.render_prompt("third", history=history))
    assert "<|start|>assistant<|channel|>final<|message|>first answer<|end|>" in text
    assert "<|start|>assistant<|channel|>final<|message|>second answer<|end|>" in text
    assert "<|channel|>analysis" not in text
    assert text.index("first question") < text.index("second") < text.index("third")


def test_bad_effort_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="low, medium or high"):
        H.render_prompt("x", effort="extreme")


def test_parse_complete_reply() -> None:
    p = H.parse_completion(E(FULL), "stop")
    assert (p.final, p.analysis) == ("4", "User asks 2+2. Simple.")
    assert not p.truncated and not p.malformed and not p.recovered and p.error is None
    assert p.analysis_tokens > 0 and p.final_tokens == 1
    assert [m.channel for m in p.messages] == ["analysis", "final"]


def test_parse_without_finish_reason_uses_the_stop_token() -> None:
    assert not H.parse_completion(E(FULL)).truncated
    assert H.parse_completion(E(FULL)[:-1]).truncated


def test_truncated_mid_analysis_keeps_reasoning_and_flags() -> None:
    p = H.parse_completion(E(FULL)[:7], "length")
    assert p.truncated and not p.malformed
    assert p.final == "" and p.analysis.startswith("User asks")
    assert p.messages[-1].complete is False


def test_truncated_mid_final_keeps_partial_answer() -> None:
    ids = E("<|channel|>analysis<|message|>ok<|end|><|start|>assistant<|channel|>final"
            "<|message|>The answer is forty")
    p = H.parse_completion(ids, "length")
    assert p.truncated and p.final == "The answer is forty" and p.has_final


def test_channel_less_text_is_recovered_as_the_answer() -> None:
    p = H.parse_completion(E("The answer is 4."), "stop")
    assert p.final == "The answer is 4."
    assert p.recovered and p.malformed and p.error


def test_text_after_return_does_not_lose_the_answer() -> None:
    p = H.parse_completion(E(FULL) + E(" trailing junk"), "length")
    assert p.final == "4" and p.malformed


def test_unknown_role_keeps_earlier_messages() -> None:
    p = H.parse_completion(E("<|channel|>final<|message|>4<|end|><|start|>wizard<|message|>x"))
    assert p.final == "4" and p.malformed and "wizard" in (p.error or "")


def test_ids_outside_the_vocabulary_are_skipped() -> None:
    ids = E(FULL)
    p = H.parse_completion([*ids[:5], 250000, *ids[5:]], "stop")
    assert p.final == "4" and p.malformed and "outside the vocabulary" in (p.error or "")


def test_empty_completion_never_raises() -> None:
    p = H.parse_completion([], "length")
    assert p.final == "" and p.truncated


def test_stream_decoder_deltas_add_up_to_the_batch_parse() -> None:
    ids = E(FULL)
    decoder = H.StreamDecoder()
    pieces = []
    for t in ids:
        pieces.extend(decoder.feed([t]))
    by_channel: dict[str | None, str] = {}
    for channel, text in pieces:
        by_channel[channel] = by_channel.get(channel, "") + text
    assert by_channel == {"analysis": "User asks 2+2. Simple.", "final": "4"}
    assert decoder.finish("stop") == H.parse_completion(ids, "stop")


def test_stream_decoder_streams_raw_text_when_there_is_no_header() -> None:
    decoder = H.StreamDecoder()
    pieces = [p for t in E("Plain words, no channels at all.") for p in decoder.feed([t])]
    assert "".join(text for _, text in pieces) == "Plain words, no channels at all."
    assert all(channel is None for channel, _ in pieces)


def test_final_header_ids() -> None:
    assert H.decode(H.final_header_ids()) == "<|start|>assistant<|channel|>final<|message|>"


FORCED = "<|end|><|start|>assistant<|channel|>final<|message|>"


@pytest.mark.parametrize("natural", [
    "", "<|end|>", "<|end|><|start|>", "<|end|><|start|>assistant",
    "<|end|><|start|>assistant<|channel|>", "<|end|><|start|>assistant<|channel|>final",
])
def test_a_budget_cut_during_the_models_own_end_parses_cleanly(natural: str) -> None:
    # the budget ran out while the model was writing the end of its analysis: the
    # engine's forced sequence follows the model's partial one
    ids = E(f"<|channel|>analysis<|message|>guitar -> GUITAR.{natural}{FORCED}GUITAR<|return|>")
    parsed = H.parse_completion(ids, "stop")
    assert (parsed.analysis, parsed.final) == ("guitar -> GUITAR.", "GUITAR")
    assert not parsed.malformed and not parsed.truncated
    streamed: dict[str | None, str] = {}
    decoder = H.StreamDecoder()
    for t in ids:  # one token at a time, as when streaming
        for channel, text in decoder.feed([t]):
            streamed[channel] = streamed.get(channel, "") + text
    assert streamed == {"analysis": "guitar -> GUITAR.", "final": "GUITAR"}
    assert decoder.finish("stop").final == "GUITAR"


def test_header_lookalikes_that_are_not_the_forced_sequence_still_parse() -> None:
    two = E("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>analysis"
            "<|message|>b<|end|><|start|>assistant<|channel|>final<|message|>c<|return|>")
    parsed = H.parse_completion(two, "stop")
    assert (parsed.analysis, parsed.final, parsed.malformed) == ("a\n\nb", "c", False)
    cut = E("<|channel|>analysis<|message|>thinking<|end|><|start|>assistant")
    parsed = H.parse_completion(cut, "length")
    assert parsed.truncated and parsed.analysis == "thinking" and not parsed.malformed
    assert H.forced_final_ids() == tuple(E(FORCED))
