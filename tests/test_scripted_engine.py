"""The scripted engine: every feature the surfaces' fast tests rely on, without vLLM."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from gptoss_magics import harmony as H
from gptoss_magics.engine import EngineProtocol, Job, Sampling, ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion, user_message
from gptoss_magics.errors import CancelledError, EngineDeadError

GREEDY = Sampling(max_tokens=200, temperature=0)


def prompt(text: str) -> list[int]:
    return H.render_prompt(text)


@pytest.fixture
def engine() -> Iterator[ScriptedEngine]:
    eng = ScriptedEngine()
    yield eng
    eng.close()


def test_it_is_an_engine_and_describes_itself(engine: ScriptedEngine) -> None:
    assert isinstance(engine, EngineProtocol)
    assert engine.alive
    assert engine.info == {
        "model": "scripted", "vllm": "scripted", "device": "cpu", "dtype": "scripted",
        "max_model_len": 4096, "multiprocess": False, "load_s": 0.0,
        "reasoning_budget": True, "priority": True, "max_num_seqs": 8,
        "background_reserve": 4}
    assert engine.scheduling() == {"slots": 8, "reserve": 4, "background_held": 0,
                                   "background_in_flight": 0, "interactive_served": 0}


def test_harmony_completion_parses_back() -> None:
    ids = harmony_completion("42", "add them")
    assert ids[-1] == 200002 == H.RETURN
    parsed = H.parse_completion(ids, "stop")
    assert (parsed.analysis, parsed.final, parsed.truncated) == ("add them", "42", False)
    assert H.parse_completion(harmony_completion("only", None), "stop").final == "only"


def test_default_script_echoes_the_user_message(engine: ScriptedEngine) -> None:
    [c] = engine.generate([prompt("What is 2+2?")], GREEDY)
    parsed = H.parse_completion(c.token_ids, c.finish_reason)
    assert (parsed.analysis, parsed.final) == ("scripted reasoning", "echo: What is 2+2?")
    assert c.finish_reason == "stop" and c.error is None
    assert c.prompt_tokens == len(prompt("What is 2+2?"))
    assert c.first_token_s is not None and c.latency_s >= c.first_token_s
    assert user_message(prompt("hello there")) == "hello there"


def test_choice_answers_the_first_choice(engine: ScriptedEngine) -> None:
    [c] = engine.generate([prompt("Sentiment?")], Sampling(choice=("neutral", "positive")))
    assert H.parse_completion(c.token_ids).final == "neutral"


def test_a_callable_script_gets_the_prompt_and_sampling() -> None:
    seen: list[tuple[str, int]] = []

    def script(ids: list[int], s: Sampling) -> list[int]:
        seen.append((user_message(ids), s.max_tokens))
        return harmony_completion(f"len {len(ids)}", None)

    eng = ScriptedEngine(script)
    try:
        [c] = eng.generate([prompt("abc")], Sampling(max_tokens=50))
    finally:
        eng.close()
    assert seen == [("abc", 50)]
    assert H.parse_completion(c.token_ids).final == f"len {len(prompt('abc'))}"


def test_enqueued_replies_come_first_in_order(engine: ScriptedEngine) -> None:
    engine.enqueue("first", ("thinking", "second"), harmony_completion("third", None))
    out = [engine.generate([prompt(str(i))], GREEDY)[0] for i in range(4)]
    parsed = [H.parse_completion(c.token_ids) for c in out]
    assert [p.final for p in parsed] == ["first", "second", "third", "echo: 3"]
    assert parsed[1].analysis == "thinking" and parsed[2].analysis == ""


def test_a_batch_comes_back_in_prompt_order(engine: ScriptedEngine) -> None:
    texts = [f"q{i}" for i in range(20)]
    out = engine.generate([prompt(t) for t in texts], GREEDY)
    assert [c.index for c in out] == list(range(20))
    assert [H.parse_completion(c.token_ids).final for c in out] == [f"echo: {t}"
                                                                   for t in texts]


def test_streaming_sends_tokens_per_step() -> None:
    eng = ScriptedEngine(tokens_per_step=3)
    try:
        events = list(eng.stream(prompt("stream me"), GREEDY))
    finally:
        eng.close()
    *deltas, last = events
    assert last.done is not None and all(e.done is None for e in deltas)
    sent = [t for e in events for t in e.new_token_ids]
    assert sent == last.done.token_ids
    assert all(len(e.new_token_ids) == 3 for e in deltas)
    assert 1 <= len(last.new_token_ids) <= 3
    assert len(events) == -(-len(sent) // 3)


def test_max_tokens_cuts_with_length(engine: ScriptedEngine) -> None:
    [c] = engine.generate([prompt("long")], Sampling(max_tokens=5))
    assert c.finish_reason == "length" and len(c.token_ids) == 5
    assert H.parse_completion(c.token_ids, c.finish_reason).truncated


def test_a_prompt_too_long_is_an_error_completion() -> None:
    eng = ScriptedEngine(max_model_len=64)
    ids = prompt("word " * 100)
    try:
        [c] = eng.generate([ids], GREEDY)
    finally:
        eng.close()
    assert c.finish_reason == "error" and c.token_ids == []
    assert c.error == (f"the prompt is {len(ids)} tokens but the model's context "
                       "(max_model_len) is 64: shorten it or load with a larger "
                       "max_model_len")


def test_the_context_limits_max_tokens() -> None:
    ids = prompt("hi")
    eng = ScriptedEngine(max_model_len=len(ids) + 4)
    try:
        [c] = eng.generate([ids], GREEDY)
    finally:
        eng.close()
    assert (c.finish_reason, len(c.token_ids)) == ("length", 4)


def test_logprobs_are_reported_when_asked() -> None:
    eng = ScriptedEngine(logprob=-0.5, tokens_per_step=2)
    try:
        [plain, asked] = eng.generate([prompt("a"), prompt("a")],
                                      [GREEDY, Sampling(max_tokens=200, logprobs=True)])
        events = list(eng.stream(prompt("a"), Sampling(max_tokens=200, logprobs=True)))
    finally:
        eng.close()
    assert plain.logprobs is None
    assert asked.logprobs == [-0.5] * len(asked.token_ids)
    done = events[-1].done
    assert done is not None and done.logprobs == [-0.5] * len(done.token_ids)


def test_a_reasoning_budget_forces_the_final(engine: ScriptedEngine) -> None:
    engine.enqueue(("one two three four five six", "done"), ("short", "ok"))
    [cut] = engine.generate([prompt("x")], Sampling(max_tokens=200, reasoning_budget=2))
    [kept] = engine.generate([prompt("x")], Sampling(max_tokens=200, reasoning_budget=50))
    head = 3  # <|channel|>analysis<|message|>
    forced = list(H.forced_final_ids())
    assert cut.token_ids[head + 2:head + 2 + len(forced)] == forced
    parsed = H.parse_completion(cut.token_ids, cut.finish_reason)
    assert parsed.final == "done" and parsed.analysis == H.decode(cut.token_ids[head:head + 2])
    assert kept.token_ids == harmony_completion("ok", "short")


def test_failing_requests_end_alone_with_an_error() -> None:
    eng = ScriptedEngine(fail={1})
    try:
        out = eng.generate([prompt(f"p{i}") for i in range(3)], GREEDY)
    finally:
        eng.close()
    assert [c.finish_reason for c in out] == ["stop", "error", "stop"]
    assert "scripted failure of request 1" in (out[1].error or "")
    assert "the other requests went on" in (out[1].error or "")


def test_a_failure_predicate_picks_by_prompt() -> None:
    eng = ScriptedEngine(fail=lambda ids, s: "boom" in user_message(ids))
    try:
        out = eng.generate([prompt("fine"), prompt("boom"), prompt("also fine")], GREEDY)
        again = eng.generate([prompt("still fine")], GREEDY)
        assert eng.alive
    finally:
        eng.close()
    assert [c.finish_reason for c in out] == ["stop", "error", "stop"]
    assert again[0].finish_reason == "stop"


def test_slots_and_priorities_order_the_start() -> None:
    started: list[str] = []
    gate = threading.Event()

    def script(ids: list[int], s: Sampling) -> list[int]:
        started.append(user_message(ids))
        if started == ["blocker"]:
            gate.wait(10)  # holds the engine's thread until every job is queued
        return harmony_completion("x", None)

    eng = ScriptedEngine(script, max_num_seqs=1, tokens_per_step=1)
    try:
        blocker = eng.submit([prompt("blocker")], GREEDY)
        while not started:
            threading.Event().wait(0.001)
        low = eng.submit([prompt("a0"), prompt("a1")], GREEDY, priority=1)
        high = eng.submit([prompt("b")], GREEDY, priority=0)
        high2 = eng.submit([prompt("c")], GREEDY, priority=0)
        gate.set()
        for job in (blocker, low, high, high2):
            list(job.iter_events())
    finally:
        eng.close()
    # no preemption; then lower priority value first, first come first served within one
    assert started == ["blocker", "b", "c", "a0", "a1"]
    assert [r.priority for r in eng.requests] == [0, 1, 1, 0, 0]


def test_abort_cancel_and_closing_a_stream_let_go() -> None:
    eng = ScriptedEngine(tokens_per_step=1, step_s=0.05)
    try:
        job = eng.submit([prompt("a"), prompt("b")], GREEDY)
        job.abort()
        assert [c.finish_reason for c in job.completions if c] == ["abort", "abort"]
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(CancelledError):
            eng.generate([prompt("c")], GREEDY, cancel=cancel)
        stream = eng.stream(prompt("d"), GREEDY)
        next(stream)
        stream.close()
        assert eng.in_flight == 0
        [c] = eng.generate([prompt("after")], Sampling(max_tokens=3))
        assert c.finish_reason == "length"
    finally:
        eng.close()


def test_an_interrupt_aborts_the_batch_and_keeps_what_finished() -> None:
    eng = ScriptedEngine(tokens_per_step=1, step_s=0.005, max_num_seqs=1)
    done: list[int] = []

    def on_done(c: object) -> None:
        done.append(c.index)  # type: ignore[attr-defined]
        if len(done) == 1:
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            eng.generate([prompt(f"r{i}") for i in range(3)], GREEDY, on_done=on_done)
        assert eng.in_flight == 0 and eng.alive
    finally:
        eng.close()
    assert done == [0]


def test_tokens_requests_and_close(engine: ScriptedEngine) -> None:
    s = Sampling(max_tokens=7, seed=3)
    out = engine.generate([prompt("x"), prompt("y")], s, priority=1)
    assert engine.tokens_generated == sum(len(c.token_ids) for c in out) == 14
    assert [(r.prompt_ids, r.sampling, r.priority, r.stream, r.index)
            for r in engine.requests] == [(tuple(prompt("x")), s, 1, False, 0),
                                          (tuple(prompt("y")), s, 1, False, 1)]
    assert isinstance(engine.submit([prompt("z")], s), Job)
    engine.close()
    engine.close()  # twice is fine
    assert not engine.alive
    with pytest.raises(EngineDeadError, match="load a model again"):
        engine.generate([prompt("x")], s)


def test_a_request_still_running_at_close_raises_in_its_caller() -> None:
    eng = ScriptedEngine(tokens_per_step=1, step_s=0.01)
    job = eng.submit([prompt("slow")], GREEDY)
    eng.close()
    with pytest.raises(EngineDeadError, match="unloaded"):
        list(job.iter_events())


def test_the_scripted_engine_never_imports_vllm_or_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from gptoss_magics import harmony as H
        from gptoss_magics.engine import Sampling, ScriptedEngine
        eng = ScriptedEngine(tokens_per_step=2)
        eng.generate([H.render_prompt("x")], Sampling(max_tokens=20, choice=("a", "b")))
        list(eng.stream(H.render_prompt("y"), Sampling(max_tokens=20, reasoning_budget=1)))
        eng.close()
        print("HEAVY", sorted(m for m in ("vllm", "torch") if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout
