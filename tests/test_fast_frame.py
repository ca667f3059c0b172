"""df.gptoss.map, submit and plan on the scripted engine: what the map itself does with
rows, answers, the cache, interrupts and background jobs (no vLLM)."""

from __future__ import annotations

import _thread
import json
import math
import os
import re
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytest
from pydantic import BaseModel

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine.scripted import default_script, harmony_completion, user_message
from gptoss_magics.frame import MapJob, MapPlan
from gptoss_magics.session import using
from gptoss_magics.settings import settings
from gptoss_magics.views import StatusView

LABELS = ["positive", "negative", "neutral"]


def frame(n: int, start: int = 100) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"row {i}" for i in range(n)]},
                        index=range(start, start + 2 * n, 2))


def answering(fn: Callable[[str], str]) -> Callable[[list[int], Sampling], list[int]]:
    """A script answering ``fn(the user's message)``."""
    return lambda ids, sampling: harmony_completion(fn(user_message(ids)))


def sentiment(message: str) -> str:
    if any(w in message for w in ("great", "lovely")):
        return "positive"
    return "negative" if any(w in message for w in ("awful", "rude")) else "neutral"


def saved_rows() -> int:
    path = settings().cache_path("results.sqlite")
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not made yet
            return 0


def poll(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``condition`` on the engine's thread (never raises there)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def users(engine: ScriptedEngine) -> list[str]:
    return [user_message(r.prompt_ids) for r in engine.requests]


# ---------------------------------------------------------------------- rows and answers
def test_answers_are_aligned_to_a_non_default_index(scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"w": ["f", "a", "e", "b"]}, index=["F", "A", "E", "B"])
    out = df.gptoss.map("Say {w}", progress=False)
    assert isinstance(out, pd.Series) and str(out.dtype) == "string"
    assert out.to_dict() == {k: f"echo: Say {k.lower()}" for k in "FAEB"}
    info = out.attrs["gptoss"]
    assert info["template"] == "Say {w}" and info["model"] == "scripted"
    assert info["summary"]["rows"] == 4 and info["summary"]["generated"] == 4


def test_duplicates_are_generated_once_in_one_batch(scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"text": ["same", "other", "same", "same", "other", "third"]})
    out = df.gptoss.map("Say: {text}", progress=False)
    assert users(scripted) == ["Say: same", "Say: other", "Say: third"]
    assert len({r.job_id for r in scripted.requests}) == 1  # one submission
    assert list(out) == [f"echo: Say: {t}" for t in df["text"]]
    assert out.attrs["gptoss"]["summary"]["unique_prompts"] == 3


def test_missing_values_are_never_sent(scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"text": ["a", None, float("nan"), "d", pd.NA, "nan"]})
    with pytest.warns(gm.GptOssWarning, match="3 of 6 rows had missing values and were not "
                                              "sent"):
        out = df.gptoss.map("Say: {text}", progress=False)
    assert users(scripted) == ["Say: a", "Say: d", "Say: nan"]  # the string "nan" is a value
    assert out.isna().tolist() == [False, True, True, False, True, False]
    info = out.attrs["gptoss"]
    assert info["summary"]["missing"] == 3 and info["missing_rows"] == [1, 2, 4]


def test_a_missing_column_is_named_before_generating(scripted: ScriptedEngine) -> None:
    with pytest.raises(gm.TemplateError, match=r"'txt'.*did you mean 'text'.*'text'"):
        frame(3).gptoss.map("Summarise {txt}")
    assert scripted.requests == []


def test_choices_give_a_categorical_column(scripted: ScriptedEngine) -> None:
    scripted.script = answering(sentiment)
    df = pd.DataFrame({"text": ["the food was great", "the room was awful", "the park",
                                None]}, index=list("wxyz"))
    out = df.gptoss.map("Sentiment of: {text}", choices=LABELS, progress=False)
    assert isinstance(out.dtype, pd.CategoricalDtype)
    assert list(out.cat.categories) == LABELS
    assert out.tolist()[:3] == ["positive", "negative", "neutral"] and pd.isna(out["z"])
    assert {r.sampling.choice for r in scripted.requests} == {tuple(LABELS)}


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    stars: int


def test_a_schema_gives_typed_columns(scripted: ScriptedEngine) -> None:
    scripted.script = answering(lambda m: json.dumps(
        {"sentiment": sentiment(m), "stars": 5 if "great" in m else 1}))
    df = pd.DataFrame({"text": ["great food", "awful room"]})
    out = df.gptoss.map("Review: {text}", schema=Review, progress=False)
    assert list(out.columns) == ["sentiment", "stars", "truncated", "error"]
    assert str(out["sentiment"].dtype) == "category" and str(out["stars"].dtype) == "Int64"
    assert out["sentiment"].tolist() == ["positive", "negative"]
    assert out["stars"].tolist() == [5, 1]
    assert str(out["truncated"].dtype) == "boolean" and not out["truncated"].any()
    assert out["error"].isna().all()


def test_a_schema_failure_is_retried_once_then_marked(scripted: ScriptedEngine) -> None:
    scripted.script = answering(lambda m: '{"sentiment": "furious", "stars": 3}')
    df = pd.DataFrame({"text": ["a", "b"]}, index=["r0", "r1"])
    out = df.gptoss.map("Review: {text}", schema=Review, seed=7, progress=False)
    assert out.attrs["gptoss"]["summary"]["retried"] == 2
    assert [r.sampling.seed for r in scripted.requests] == [7, 7, 8, 8]  # a new seed
    assert out["error"].str.contains("ValidationError").all()
    assert out["sentiment"].isna().all()
    with pytest.raises(gm.RowError, match=r"row 'r0' failed: .*on_error='mark'"):
        df.gptoss.map("Review: {text}", schema=Review, on_error="raise", progress=False)


def test_confidence_reasoning_and_usage_columns(scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"text": ["one", "two", "one"]})
    out = df.gptoss.map("Say {text}", confidence=True, reasoning=True, usage=True,
                        progress=False)
    assert list(out.columns) == ["answer", "prompt_tokens", "reasoning_tokens",
                                 "completion_tokens", "confidence", "reasoning", "truncated",
                                 "error"]
    ids = harmony_completion("echo: Say one")
    start, end = H.final_span(ids) or (0, 0)
    assert out.loc[0, "confidence"] == pytest.approx(math.exp(-0.1 * (end - start)))
    assert str(out["confidence"].dtype) == "Float64"
    assert out.loc[0, "completion_tokens"] == len(ids)
    assert out.loc[0, "prompt_tokens"] == len(scripted.requests[0].prompt_ids)
    assert 0 < out.loc[0, "reasoning_tokens"] < out.loc[0, "completion_tokens"]
    assert all(str(out[c].dtype) == "Int64" for c in ("prompt_tokens", "reasoning_tokens",
                                                      "completion_tokens"))
    assert (out["reasoning"] == "scripted reasoning").all()
    assert out.iloc[0].equals(out.iloc[2])  # a duplicate row shares its generation
    summary = out.attrs["gptoss"]["summary"]
    assert summary["completion_tokens"] == out["completion_tokens"].iloc[:2].sum()
    assert all(r.sampling.logprobs for r in scripted.requests)


def test_truncation_is_flagged_and_summarised(scripted: ScriptedEngine) -> None:
    with pytest.warns(gm.GptOssWarning, match=r"3 of 3 rows hit max_tokens \(2\); raise "
                      "max_tokens or lower effort, or set reasoning_budget well below 2"):
        out = frame(3).gptoss.map("Explain {text}", max_tokens=2, reasoning=True,
                                  progress=False)
    assert out["truncated"].all() and out["answer"].isna().all()
    assert (out["error"] == "hit max_tokens").all()
    assert out.attrs["gptoss"]["truncated_rows"] == [100, 102, 104]


def test_a_reasoning_budget_cuts_every_row(scripted: ScriptedEngine) -> None:
    scripted.enqueue(("a long chain of thought " * 5, "x"), ("again " * 9, "y"))
    out = frame(2).gptoss.map("Think {text}", reasoning_budget=2, progress=False)
    assert out.tolist() == ["x", "y"]
    info = out.attrs["gptoss"]
    assert info["summary"]["reasoning_cut"] == 2 and info["reasoning_cut_rows"] == [100, 102]
    assert info["sampling"]["reasoning_budget"] == 2


@pytest.mark.scripted(fail={1})
def test_a_failed_row_is_marked_or_raised_and_never_cached(scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"text": ["a", "b", "c"]}, index=["x", "y", "z"])
    with pytest.warns(gm.GptOssWarning, match="1 of 3 rows failed"):
        out = df.gptoss.map("Say {text}", reasoning=True, progress=False)
    assert "ScriptedFailure" in out.loc["y", "error"] and pd.isna(out.loc["y", "answer"])
    assert out.loc["x", "answer"] == "echo: Say a" and pd.isna(out.loc["x", "error"])
    assert out.attrs["gptoss"]["summary"]["errors"] == 1
    again = df.gptoss.map("Say {text}", reasoning=True, progress=False)  # alone: it works
    assert users(scripted)[3:] == ["Say b"] and again.loc["y", "answer"] == "echo: Say b"
    with pytest.raises(gm.RowError, match=r"row 'y' failed: .*ScriptedFailure"):
        df.gptoss.map("Say {text}", on_error="raise", cache=False, progress=False)


@pytest.mark.scripted(max_model_len=200)
def test_a_prompt_too_long_for_the_context(scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"text": ["short", "word " * 300]}, index=["ok", "long"])
    plan = df.gptoss.plan("Say {text}")
    assert plan.too_long == ["long"]
    with pytest.warns(gm.GptOssWarning, match="1 of 2 rows failed"):
        out = df.gptoss.map("Say {text}", reasoning=True, progress=False)
    assert "max_model_len" in out.loc["long", "error"]
    df.gptoss.map("Say {text}", reasoning=True, progress=False)
    assert [u[:8] for u in users(scripted)] == ["Say shor", "Say word", "Say word"]  # no cache


# ---------------------------------------------------------------------- the cache
def test_a_second_identical_run_comes_from_the_cache(scripted: ScriptedEngine) -> None:
    df = frame(5)
    first = df.gptoss.map("Cache {text}", max_tokens=64, progress=False)
    second = df.gptoss.map("Cache {text}", max_tokens=64, progress=False)
    assert len(scripted.requests) == 5
    summary = second.attrs["gptoss"]["summary"]
    assert (summary["cached"], summary["generated"]) == (5, 0)
    pd.testing.assert_series_equal(first, second)
    db = settings().cache_path("results.sqlite")
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    df.gptoss.map("Cache {text}", max_tokens=65, progress=False)  # another key
    assert len(scripted.requests) == 10
    df.gptoss.map("Cache {text}", max_tokens=64, cache=False, progress=False)
    assert len(scripted.requests) == 15


def test_rows_cached_without_log_probabilities_are_made_again(
        scripted: ScriptedEngine) -> None:
    df = frame(2)
    df.gptoss.map("Say {text}", progress=False)
    out = df.gptoss.map("Say {text}", confidence=True, progress=False)
    assert out.attrs["gptoss"]["summary"]["generated"] == 2 and out["confidence"].notna().all()
    again = df.gptoss.map("Say {text}", confidence=True, progress=False)
    assert again.attrs["gptoss"]["summary"]["generated"] == 0
    assert again["confidence"].tolist() == out["confidence"].tolist()
    assert len(scripted.requests) == 4


@pytest.mark.scripted(max_num_seqs=1, tokens_per_step=1)
def test_an_interrupt_keeps_finished_rows_and_a_rerun_does_the_rest(
        scripted: ScriptedEngine) -> None:
    df = frame(10)
    started: list[str] = []

    def script(ids: list[int], sampling: Sampling) -> list[int]:
        started.append(user_message(ids))
        if len(started) == 4:  # three rows are done: press Ctrl-C once they are saved
            poll(lambda: saved_rows() >= 3)
            _thread.interrupt_main()
        return default_script(ids, sampling)

    scripted.script = script
    with pytest.raises(KeyboardInterrupt, match="generates only the rest") as info:
        df.gptoss.map("Interrupt {text}", progress=False)
    match = re.search(r"(\d+) of 10 distinct prompts are saved", str(info.value))
    assert match, info.value
    saved = int(match.group(1))
    assert 3 <= saved < 10 and saved == saved_rows()
    partial = gm.last_result()
    assert partial is not None and list(partial.index) == list(df.index)
    assert int(partial.notna().sum()) == saved
    assert scripted.in_flight == 0  # the unfinished rows were aborted
    before = len(scripted.requests)
    out = df.gptoss.map("Interrupt {text}", progress=False)
    summary = out.attrs["gptoss"]["summary"]
    assert (summary["cached"], summary["generated"]) == (saved, 10 - saved)
    assert len(scripted.requests) - before == 10 - saved
    assert out.notna().all()


@pytest.mark.scripted(tokens_per_step=1, step_s=0.005)
def test_an_engine_that_stops_mid_map_loses_nothing_finished(
        scripted: ScriptedEngine) -> None:
    df = frame(12)
    release = threading.Event()
    started: list[str] = []

    def script(ids: list[int], sampling: Sampling) -> list[int]:
        started.append(user_message(ids))
        if len(started) == 9:
            release.wait(30)
        return default_script(ids, sampling)

    def stop() -> None:  # once rows are saved, the engine goes away under the map
        poll(lambda: saved_rows() >= 1)
        release.set()
        scripted.close()

    scripted.script = script
    threading.Thread(target=stop, daemon=True).start()
    with pytest.raises(gm.EngineDeadError, match="while this request was running") as info:
        df.gptoss.map("Stop {text}", progress=False)
    match = re.search(r"(\d+) of 12 distinct prompts are saved", str(info.value))
    assert match, info.value
    saved = int(match.group(1))
    assert 1 <= saved < 12
    with pytest.raises(gm.EngineDeadError, match="unloaded"):
        gm.complete("anything")
    with using(ScriptedEngine()) as session:
        out = df.gptoss.map("Stop {text}", progress=False)
        fresh = session.engine.requests  # type: ignore[attr-defined]
        session.engine.close()
    summary = out.attrs["gptoss"]["summary"]
    assert (summary["cached"], summary["generated"]) == (saved, 12 - saved)
    assert len(fresh) == 12 - saved and out.notna().all()


# ---------------------------------------------------------------------- background jobs
def test_a_background_job_gives_the_map_result(scripted: ScriptedEngine) -> None:
    df = frame(4)
    job = df.gptoss.submit("Say {text}", cache=False)
    assert isinstance(job, MapJob)
    result = job.result(timeout=60)
    assert job.done and job.rows_done == job.rows == 4
    assert repr(job).startswith("MapJob done: 4 of 4 rows (100%)")
    assert "<progress value='4' max='4'>" in job._repr_html_()
    assert list(result) == list(df.gptoss.map("Say {text}", cache=False, progress=False))
    assert gm.status()["background"] == []  # it reported its end


@pytest.mark.scripted(max_num_seqs=2)
def test_interactive_requests_go_ahead_of_its_rows(scripted: ScriptedEngine,
                                                   wait_until: Any) -> None:
    order: list[str] = []
    gate = threading.Event()

    def script(ids: list[int], sampling: Sampling) -> list[int]:
        order.append(user_message(ids))
        if order == ["Row 0"]:
            gate.wait(30)  # the engine holds the first row until the test lets it go
        return harmony_completion("ok")

    scripted.script = script
    job = pd.DataFrame({"q": [f"Row {i}" for i in range(12)]}).gptoss.submit("{q}",
                                                                             cache=False)
    replies: list[gm.Reply] = []
    try:
        wait_until(lambda: order == ["Row 0"])
        assert re.search(r"background\s+map 0/12 rows", repr(StatusView(gm.status())))
        worker = threading.Thread(target=lambda: replies.append(gm.complete("Interactive")))
        worker.start()
        wait_until(lambda: len(scripted.requests) == 13)  # it is queued behind 11 rows
    finally:
        gate.set()
    worker.join(30)
    job.result(timeout=60)
    assert [r.priority for r in scripted.requests] == [MapJob.PRIORITY] * 12 + [0]
    # of the two slots, the job's rows take one and leave the other (the reserve) free:
    # the interactive request started there while the first row was still running
    assert order.index("Interactive") == 1 and replies[0].final == "ok"


@pytest.mark.scripted(max_num_seqs=1)
def test_cancel_keeps_the_finished_rows(scripted: ScriptedEngine, wait_until: Any) -> None:
    df = frame(20)
    gate = threading.Event()

    def script(ids: list[int], sampling: Sampling) -> list[int]:
        if user_message(ids) == "Cancel row 3":
            gate.wait(30)  # rows 0-2 are done; row 3 is running when the job is cancelled
        return default_script(ids, sampling)

    scripted.script = script
    job = df.gptoss.submit("Cancel {text}")
    wait_until(lambda: job.rows_done == 3)
    job.cancel(wait=False)
    gate.set()  # row 3 may finish before the cancel reaches the engine
    assert job.wait(60)
    with pytest.raises(gm.CancelledError, match="map cancelled: ") as info:
        job.result()
    match = re.search(r"(\d+) of 20 distinct prompts are saved", str(info.value))
    assert match, info.value
    kept = int(match.group(1))
    assert kept in (3, 4) and repr(job).startswith(f"MapJob cancelled: {kept} of 20 rows")
    partial = gm.last_result()
    assert partial is not None and int(partial.notna().sum()) == kept
    again = df.gptoss.map("Cancel {text}", progress=False)
    summary = again.attrs["gptoss"]["summary"]
    assert (summary["cached"], summary["generated"]) == (kept, 20 - kept)


def test_a_background_warning_comes_with_the_result(scripted: ScriptedEngine) -> None:
    job = frame(3).gptoss.submit("{text}", max_tokens=2, cache=False)
    with pytest.warns(gm.GptOssWarning, match="3 of 3 rows hit max_tokens"):
        job.result(timeout=60)


# ---------------------------------------------------------------------- plan, Series, args
def test_the_plan_counts_the_cache_and_shows_the_first_prompt(
        scripted: ScriptedEngine) -> None:
    df = pd.DataFrame({"text": ["good", "bad", None, "good", "meh"]}, index=list("abcde"))
    df.iloc[:2].gptoss.map("Plan {text}", max_tokens=8, effort="low", progress=False)
    plan = df.gptoss.plan("Plan {text}", max_tokens=8, effort="low")
    assert isinstance(plan, MapPlan) and len(scripted.requests) == 2  # nothing generated
    assert (plan.rows, plan.missing, plan.distinct_prompts) == (5, 1, 3)
    assert (plan.cached, plan.to_generate, plan.most_tokens) == (2, 1, 8)
    assert plan.too_long == [] and plan.constraint == "none"
    assert plan.first_prompt.endswith("<|start|>user<|message|>Plan good<|end|>"
                                      "<|start|>assistant")
    assert "Reasoning: low" in plan.first_prompt
    choices = df.gptoss.plan("Plan {text}", max_tokens=8, choices=["a", "b"])
    assert choices.cached == 0 and choices.constraint == "choices"  # another cache key
    assert "5 (1 with missing values, not sent)" in repr(plan)
    assert "<details>" in plan._repr_html_()


def test_the_series_accessor(scripted: ScriptedEngine) -> None:
    s = pd.Series(["a", "b", None], index=[5, 6, 7], name="letters")
    with pytest.warns(gm.GptOssWarning, match="missing values"):
        out = s.gptoss.map("Letter {} or {value}", progress=False)
    assert out.to_dict()[5] == "echo: Letter a or a" and pd.isna(out[7])
    assert out.attrs["gptoss"]["summary"]["unique_prompts"] == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"choices": ["a"], "regex": "a"}, "at most one"),
    ({"on_error": "ignore"}, "on_error must be 'mark' or 'raise'"),
    ({"schema": {"type": "string"}}, "schema must describe an object"),
    ({"max_token": 5}, "unknown option 'max_token' .did you mean 'max_tokens'"),
    ({"usage": "yes"}, "usage must be True or False"),
    ({"temperature": -1}, "temperature must be"),
])
def test_bad_arguments_fail_before_generating(scripted: ScriptedEngine,
                                              options: dict[str, Any], message: str) -> None:
    with pytest.raises(gm.InvalidOptionError, match=message):
        frame(2).gptoss.map("{text}", **options)
    assert scripted.requests == []


def test_the_progress_bar_counts_rows(scripted: ScriptedEngine,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    frame(5).gptoss.map("Progress {text}")
    err = capsys.readouterr().err
    assert "5/5" in err and "row" in err and "tok/s" in err


def test_every_reply_and_row_goes_to_the_audit_log(scripted: ScriptedEngine,
                                                   fresh_settings: Any,
                                                   tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fresh_settings.audit_log = str(log)
    reply = gm.complete("What is 17 + 25?")
    df = pd.DataFrame({"text": ["great", "awful", "great"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df.gptoss.map("Sentiment of: {text}", cache=False, progress=False)
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["reply", "map_row", "map_row", "map"]
    assert records[0]["final"] == reply.final == "echo: What is 17 + 25?"
    assert {r["prompt"] for r in records[1:3]} == {"Sentiment of: great",
                                                   "Sentiment of: awful"}
    assert records[-1]["summary"]["unique_prompts"] == 2
    assert records[-1]["run"] == records[1]["run"]
