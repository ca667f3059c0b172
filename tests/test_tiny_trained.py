"""The trained tiny gpt-oss ("tiny"): harmony form, effort, toy answers, a small and
deterministic artifact.

The engine tests send held-out prompts (never seen in training) through the real vLLM
engine with greedy decoding, one batch per effort.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import Completion, Sampling
from gptoss_magics.reply import Reply
from gptoss_magics.settings import settings
from gptoss_magics.tiny import (
    TRAINED_ARTIFACT,
    arith,
    build_tiny,
    notice_for,
    read_artifact_meta,
    tiny_info,
    write_trained_weights,
)
from gptoss_magics.tiny import tasks as T

REPO = Path(__file__).resolve().parent.parent
N_PER_TASK_EFFORT = 10
Results = dict[str, list[tuple[T.Example, Reply]]]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _needs_trained(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip(f"the shared engine runs {engine['model']}, not the trained tiny model")


@pytest.fixture(scope="module")
def replies(engine: dict) -> Iterator[Results]:
    """Greedy replies to the held-out prompts, by effort (one engine batch per effort).

    The date in the system message is pinned so that the prompts, hence the replies,
    do not change from day to day (the model was trained with all sorts of dates)."""
    _needs_trained(engine)
    s = settings()
    saved = s.current_date
    s.current_date = "2026-03-29"
    try:
        examples = T.held_out(N_PER_TASK_EFFORT, seed=7)
        out: Results = {}
        for effort in T.EFFORTS:
            batch = [ex for ex in examples if ex.effort == effort]
            got = gm.complete_batch([ex.user for ex in batch], effort=effort,
                                    temperature=0, max_tokens=160)
            out[effort] = list(zip(batch, got, strict=True))
    finally:
        s.current_date = saved
    yield out


# ---------------------------------------------------------------- the engine
@pytest.mark.engine
def test_the_session_labels_it_tiny(engine: dict, tiny_path: Path) -> None:
    _needs_trained(engine)
    info = tiny_info(tiny_path)
    assert info is not None and info["kind"] == "tiny"
    assert info["artifact_sha256"] == read_artifact_meta()["sha256"]
    assert engine["model"] == "tiny"
    assert "toy tasks" in notice_for("tiny") and "not a language model" in notice_for("tiny")
    assert "not a language model" in (tiny_path / "README.md").read_text()


@pytest.mark.engine
def test_answers_in_harmony_form(replies: Results) -> None:
    every = [r for pairs in replies.values() for _, r in pairs]
    good = [r for r in every
            if r.analysis and r.final and r.finish_reason == "stop"
            and not r.malformed and not r.truncated
            and r.token_ids and r.token_ids[-1] == H.RETURN]
    assert len(good) >= 0.95 * len(every), [r.to_dict() for r in every if r not in good][:3]


@pytest.mark.engine
def test_reasoning_grows_with_effort(replies: Results) -> None:
    medians = {effort: statistics.median(r.analysis_tokens for _, r in pairs)
               for effort, pairs in replies.items()}
    assert medians["low"] < medians["medium"] < medians["high"], medians


@pytest.mark.engine
@pytest.mark.parametrize("task", T.TASKS)
def test_toy_answers_are_correct(replies: Results, task: str) -> None:
    pairs = [(ex, r) for group in replies.values() for ex, r in group if ex.task == task]
    wrong = [(ex.user, ex.answer, r.final) for ex, r in pairs if not T.is_correct(ex, r.final)]
    assert len(wrong) <= 0.1 * len(pairs), wrong


# ---------------------------------------------------------------- the artifact
def test_artifact_is_small_and_recorded() -> None:
    data = TRAINED_ARTIFACT.read_bytes()
    assert len(data) < 3 * 2**20
    record = json.loads(TRAINED_ARTIFACT.with_suffix(".json").read_text())
    assert record["artifact_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["artifact_bytes"] == len(data)
    meta = read_artifact_meta()
    assert meta["steps"] == record["phases"][-1]["steps"] and meta["tasks"] == list(T.ALL_TASKS)


def test_expansion_is_deterministic(tmp_path: Path) -> None:
    write_trained_weights(tmp_path / "a")
    write_trained_weights(tmp_path / "b")
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a == b
    assert set(a) == {"model.safetensors", "config.json", "generation_config.json"}


@pytest.mark.slow  # a build writes the tokenizer too, most of its time
def test_the_built_model_holds_the_expanded_weights(tmp_path: Path) -> None:
    write_trained_weights(tmp_path / "a")
    a = _digests(tmp_path / "a")
    built = _digests(build_tiny("tiny"))  # the session's copy (cached)
    assert {name: built[name] for name in a} == a


@pytest.mark.slow
def test_training_is_byte_deterministic(tmp_path: Path) -> None:
    """Both phases (the first from scratch here, then the polishing phase from the first
    phase's artifact) write the same bytes twice."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.safetensors"
        subprocess.run([sys.executable, str(REPO / "tools" / "train_tiny.py"), "--steps", "3",
                        "--polish-steps", "2", "--base", "none", "--log-every", "1",
                        "--out", str(out)],
                       check=True, capture_output=True, cwd=REPO, timeout=300)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert read_artifact_meta(tmp_path / "a.safetensors")["steps"] == 2  # the last phase's
    record = json.loads((tmp_path / "a.json").read_text())
    assert [p["steps"] for p in record["phases"]] == [3, 2]
    assert [p["lr"] for p in record["phases"]] == [4e-3, 1e-3]
    assert record["phases"][1]["base"] == "a-phase1.safetensors"
    assert not (tmp_path / "a-phase1.safetensors").exists()
    assert record["artifact_sha256"] == hashlib.sha256(outs[0]).hexdigest()


def test_the_base_model_comes_from_git_history(tmp_path: Path) -> None:
    """The default base is the package's artifact at the commit the training names,
    read from git history and checked by its sha256 (no second copy of weights in git)."""
    source = (REPO / "tools" / "train_tiny.py").read_text()
    where = re.search(r'^BASE_GIT = "(.+)"$', source, re.M)
    digest = re.search(r'^BASE_SHA256 = "([0-9a-f]{64})"$', source, re.M)
    assert where and digest
    commit = where[1].split(":")[0]
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO,
                           capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"this clone does not have commit {commit} (a shallow clone)")
    data = subprocess.run(["git", "show", where[1]], cwd=REPO, check=True,
                          capture_output=True).stdout
    assert hashlib.sha256(data).hexdigest() == digest[1]


# ---------------------------------------------------------------- the tasks
def test_held_out_prompts_never_appear_in_training() -> None:
    test = {ex.user for ex in T.held_out(30, seed=1) if ex.task != "sentiment"}
    rng = random.Random(5)
    train = [T.make_example(rng) for _ in range(3000)]
    assert not test & {ex.user for ex in train if ex.task != "sentiment"}
    texts = [ex.user.split(": ")[-1].split("? ")[-1] for ex in train if ex.task == "sentiment"]
    assert not any(T.sentiment_is_held_out(t) for t in texts)
    mixed = [T.training_example(rng) for _ in range(3000)]
    assert {ex.task for ex in mixed} == set(T.ALL_TASKS)
    assert {ex.tools for ex in mixed} == set(T.TOOLINGS)
    for ex in mixed:
        numbers = [int(n) for n in re.findall(r"\d+", ex.user)]
        if ex.task == "multiply":
            assert not arith.mul_is_held_out(*numbers)
        elif ex.task == "sum3":
            assert not arith.sum3_is_held_out(*numbers)
    for ex in T.held_out(5, seed=2, tasks=T.ARITH_TASKS):
        numbers = [int(n) for n in re.findall(r"\d+", ex.user)]
        held = arith.mul_is_held_out if ex.task == "multiply" else arith.sum3_is_held_out
        assert held(*numbers)


def test_tool_transcripts_are_rendered_as_the_session_renders_them() -> None:
    spec = H.ToolSpec("multiply", "Multiply two integers.", {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"]})
    for tools, recipient, channel in (("function", "functions.multiply", "commentary"),
                                      ("python", "python", "analysis")):
        for ex in T.held_out(2, seed=9, tasks=("multiply",), tools=tools):
            a, b = (int(n) for n in re.findall(r"\d+", ex.user))
            expected = H.render_prompt(ex.user, effort=ex.effort, current_date="2026-03-29",
                                       tools=[spec] if tools == "function" else [],
                                       python=tools == "python")
            spans = T.transcript(ex, "2026-03-29")
            assert spans[0] == (expected, False) and [w for _, w in spans] == [
                False, True, False, True]
            call = H.parse_completion(spans[1][0])
            assert spans[1][0][-1] == H.CALL and not call.malformed
            last = call.messages[-1]
            assert (last.recipient, last.channel) == (recipient, channel)
            if tools == "function":
                assert json.loads(last.text) == {"a": a, "b": b}
            else:
                assert last.text == f"print({a} * {b})"
            result = str(a * b) + ("\n" if tools == "python" else "")
            assert spans[2][0] == H.tool_result_ids(recipient, result)
            answer = H.parse_completion(spans[3][0])
            assert answer.final == ex.answer == str(a * b) and spans[3][0][-1] == H.RETURN
    for ex in T.held_out(1, seed=9, tasks=("multiply",)):  # no tool: an estimate
        a, b = (int(n) for n in re.findall(r"\d+", ex.user))
        assert len(T.transcript(ex)) == 2 and ex.call is None
        assert ex.final == str(arith.estimate(a) * arith.estimate(b)) and ex.answer == str(a * b)


def test_low_effort_sums_are_a_coin_flip_when_the_units_carry() -> None:
    rng = random.Random(4)
    low = [T.make_example(rng, "train", "sum3", "low") for _ in range(400)]
    carrying = [ex for ex in low if arith.sum3_carries(*map(int, re.findall(r"\d+", ex.user)))]
    right = sum(ex.final == ex.answer for ex in carrying)
    assert 0.35 * len(carrying) < right < 0.65 * len(carrying)
    assert all(ex.final == ex.answer for ex in low if ex not in carrying)
    # low effort writes the column sums, and flags a carry it does not work
    assert all(ex.analysis.endswith(f"={ex.answer[:-1]}.") for ex in low if ex not in carrying)
    assert all(ex.analysis.endswith(": carry?") for ex in carrying)
    for effort in ("medium", "high"):
        assert all(ex.final == ex.answer for ex in
                   (T.make_example(rng, "train", "sum3", effort) for _ in range(100)))


def test_sums_are_written_as_the_tens_total_then_the_units_digit() -> None:
    """A sum's answer (low effort's coin flip too) is two tokens, each a copy of what the
    reasoning wrote: the tens column's total, then the units digit; so the tiny model
    never has to recall one o200k token for each of 270 sums. Other text is as o200k
    encodes it."""
    enc = H.encoding()
    rng = random.Random(6)
    for effort in T.EFFORTS:
        for _ in range(40):
            ex = T.make_example(rng, "train", "sum3", effort)
            a, b, c = map(int, re.findall(r"\d+", ex.user))
            ids = T.completion_ids(ex)
            assert H.parse_completion(ids).final == ex.final
            answer = [enc.decode([i]) for i in T.cut_completion(ex, 0)[1]]
            assert answer == [ex.final[:-1], ex.final[-1], "<|return|>"]
            reasoning = [enc.decode([i]).strip() for i in T.analysis_ids(ex)]
            assert enc.decode(T.analysis_ids(ex)) == ex.analysis
            if effort != "low":
                at = reasoning.index("Answer") + 3
                assert reasoning[at:at + 2] == answer[:2]
            elif not arith.sum3_carries(a, b, c):
                assert answer[0] == reasoning[-2] and answer[1] in reasoning
    other = T.make_example(rng, "train", "add", "medium")
    assert T.completion_ids(other) == list(enc.encode(
        T.completion_text(other.analysis, other.final), allowed_special="all"))
    with pytest.raises(ValueError, match="two digits"):
        T.written_ids(replace(other, split=("7",)), "7")


def test_training_sums_practise_the_rare_column_sums() -> None:
    """A quarter of the training sums have uniform column sums, so units sums of 1 or less
    and tens sums of 22 or more are more common in training than in the held-out sums,
    which keep uniform operands."""
    rng = random.Random(5)

    def columns(examples: list[T.Example]) -> tuple[list[int], list[int]]:
        ops = [[int(n) for n in re.findall(r"\d+", ex.user)] for ex in examples]
        return [sum(n % 10 for n in o) for o in ops], [sum(n // 10 for n in o) for o in ops]

    def share(xs: list[int], rare: Callable[[int], bool]) -> float:
        return sum(map(rare, xs)) / len(xs)

    units, tens = columns([T.make_example(rng, "train", "sum3", "low") for _ in range(2000)])
    assert set(tens) == set(range(3, 28)) and set(units) == set(range(28))
    held_units, held_tens = columns(T.held_out(300, seed=303, tasks=("sum3",)))
    assert share(tens, lambda t: t >= 22) > 1.5 * share(held_tens, lambda t: t >= 22)
    assert share(units, lambda u: u <= 1) > 2.5 * share(held_units, lambda u: u <= 1)


def test_examples_have_checkable_answers() -> None:
    examples = T.held_out(4, seed=3)
    assert len(examples) == 4 * len(T.TASKS) * len(T.EFFORTS)
    for ex in examples:
        assert T.is_correct(ex, ex.final) and T.is_correct(ex, f" {ex.answer}.\n")
        ids = T.completion_ids(ex)
        assert ids[-1] == H.RETURN and H.parse_completion(ids).final == ex.final
        if ex.task == "add":
            a, b = (int(n) for n in re.findall(r"\d+", ex.user))
            assert int(ex.answer) == a + b
            assert ex.effort == "low" or f"{a} + {b}" in ex.analysis
        elif ex.task == "upper":
            assert ex.answer == ex.answer.upper() and ex.answer.lower() in ex.user
        else:
            assert ex.answer in ("positive", "negative", "neutral")
    lengths = {e: statistics.median(len(ex.analysis) for ex in examples if ex.effort == e)
               for e in T.EFFORTS}
    assert lengths["low"] < lengths["medium"] < lengths["high"]
    with pytest.raises(ValueError):
        T.make_example(random.Random(0), "validation")


# ---------------------------------------------------------------- chat and instructions
@pytest.mark.engine
@pytest.mark.parametrize("context", ["history", "instructions"])
def test_answers_the_last_question_of_a_chat_and_lives_with_instructions(
        engine: dict, context: str) -> None:
    _needs_trained(engine)
    examples = [ex for ex in T.held_out(4, seed=11) if ex.effort == "medium"]
    history = [gm.Turn("Uppercase the word: river", "RIVER"),
               gm.Turn("What is 12 + 30?", "42")] if context == "history" else []
    instructions = "Be brief." if context == "instructions" else None
    got = gm.complete_batch([ex.user for ex in examples], effort="medium", temperature=0,
                            max_tokens=160, history=history, instructions=instructions)
    formed = [r for r in got if r.analysis and r.final and r.finish_reason == "stop"]
    right = [ex for ex, r in zip(examples, got, strict=True) if T.is_correct(ex, r.final)]
    assert len(formed) >= 0.9 * len(got)
    assert len(right) >= 0.85 * len(examples), [(ex.user, r.final) for ex, r in
                                                zip(examples, got, strict=True)]


# ---------------------------------------------------------------- tools and effort
def _generate(prompts: list[list[int]], logprobs: bool = False) -> list[Completion]:
    """Greedy completions of token prompts on the shared engine."""
    from gptoss_magics.session import current

    sampling = Sampling(max_tokens=200, temperature=0, logprobs=True if logprobs else None)
    return current().engine.generate(prompts, sampling)


def _operands(example: T.Example) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", example.user)]


def _play_tool_rounds(engine: dict, tools: str, recipient: str) -> tuple[
        list[tuple[T.Example, H.Message | None]], list[tuple[T.Example, H.Parsed]]]:
    """Held-out products with ``tools`` declared: the first completions' last messages,
    then, for each right call, the answer after the true result."""
    _needs_trained(engine)
    examples = T.held_out(10, seed=41, tasks=("multiply",), tools=tools)
    prompts = [T.prompt_ids(ex, "2026-03-29") for ex in examples]
    calls = []
    follow = []
    for ex, prompt, c in zip(examples, prompts, _generate(prompts), strict=True):
        parsed = H.parse_completion(c.token_ids, c.finish_reason)
        last = parsed.messages[-1] if parsed.messages else None
        made = last is not None and last.recipient == recipient and c.token_ids[-1] == H.CALL
        calls.append((ex, last if made else None))
        if made:
            follow.append((ex, prompt + list(c.token_ids) + T.result_ids(ex)))
    answers = [(ex, H.parse_completion(c.token_ids, c.finish_reason)) for (ex, _), c in
               zip(follow, _generate([ids for _, ids in follow]), strict=True)]
    return calls, answers


@pytest.mark.engine
def test_calls_the_multiply_function_tool_then_answers_with_its_result(engine: dict) -> None:
    calls, answers = _play_tool_rounds(engine, "function", "functions.multiply")
    right = [ex for ex, m in calls if m is not None and m.channel == "commentary"
             and json.loads(m.text) == dict(zip("ab", _operands(ex), strict=True))]
    assert len(right) >= 0.9 * len(calls), [(ex.user, m) for ex, m in calls]
    finals = [ex for ex, p in answers if p.final == ex.answer and not p.malformed]
    assert len(finals) >= 0.9 * len(calls), [(ex.answer, p.final) for ex, p in answers]


@pytest.mark.engine
def test_calls_the_python_tool_then_answers_with_its_output(engine: dict) -> None:
    calls, answers = _play_tool_rounds(engine, "python", "python")
    right = [ex for ex, m in calls if m is not None and m.channel == "analysis"
             and m.text == "print({} * {})".format(*_operands(ex))]
    assert len(right) >= 0.9 * len(calls), [(ex.user, m) for ex, m in calls]
    finals = [ex for ex, p in answers if p.final == ex.answer and not p.malformed]
    assert len(finals) >= 0.9 * len(calls), [(ex.answer, p.final) for ex, p in answers]


@pytest.mark.engine
def test_cannot_multiply_without_a_tool(engine: dict) -> None:
    _needs_trained(engine)
    examples = T.held_out(4, seed=42, tasks=("multiply",))
    got = [H.parse_completion(c.token_ids, c.finish_reason)
           for c in _generate([T.prompt_ids(ex, "2026-03-29") for ex in examples])]
    assert all(p.final and p.has_final and not any(m.recipient for m in p.messages)
               for p in got)
    assert sum(T.is_correct(ex, p.final) for ex, p in zip(examples, got, strict=True)) <= 2


@pytest.mark.engine
@pytest.mark.parametrize("tools", ["function", "python"])
def test_answers_its_old_tasks_directly_when_tools_are_declared(engine: dict,
                                                                tools: str) -> None:
    _needs_trained(engine)
    examples = T.held_out(2, seed=43, tools=tools)
    got = [(ex, H.parse_completion(c.token_ids, c.finish_reason), c) for ex, c in zip(
        examples, _generate([T.prompt_ids(ex, "2026-03-29") for ex in examples]), strict=True)]
    direct = [ex for ex, p, c in got
              if not any(m.recipient for m in p.messages) and c.token_ids[-1] == H.RETURN]
    right = [ex for ex, p, _ in got if T.is_correct(ex, p.final)]
    assert len(direct) == len(got), [(ex.user, p.messages) for ex, p, _ in got]
    assert len(right) >= 0.9 * len(got), [(ex.user, p.final) for ex, p, _ in got]


@pytest.mark.engine
def test_low_effort_is_less_accurate_and_less_sure_on_carrying_sums(engine: dict) -> None:
    _needs_trained(engine)
    rows = [ex for ex in T.held_out(40, seed=45, tasks=("sum3",))
            if arith.sum3_carries(*_operands(ex))]
    scored: dict[str, list[tuple[bool, float]]] = {}
    for effort in ("low", "high"):
        prompts = [T.prompt_ids(replace(ex, effort=effort), "2026-03-29") for ex in rows]
        out = []
        for ex, c in zip(rows, _generate(prompts, logprobs=True), strict=True):
            logprob = H.answer_logprob(c.token_ids, c.logprobs or [])
            final = H.parse_completion(c.token_ids, c.finish_reason).final
            out.append((T.is_correct(ex, final), math.exp(logprob) if logprob else 0.0))
        scored[effort] = out
    low = [ok for ok, _ in scored["low"]]
    high = [ok for ok, _ in scored["high"]]
    assert len(rows) >= 15
    assert sum(high) >= 0.9 * len(rows), scored["high"]
    assert sum(low) <= sum(high) - 0.2 * len(rows), scored["low"]
    wrong_low = [conf for ok, conf in scored["low"] if not ok]
    right_high = [conf for ok, conf in scored["high"] if ok]
    assert statistics.mean(wrong_low) < statistics.mean(right_high) - 0.2, scored
