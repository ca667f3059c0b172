"""gm.evaluate, its record and reproduction, the judge, and the effort cascade on the
scripted engine (no vLLM).

The script plays a model summing three numbers: at high effort it works the carries and
is right, with a confident one-token answer; at low effort it is right and as confident
on sums without a carry, but on sums with a carry it guesses (right on even first
terms, ten off on odd ones) in a longer, hedged answer, so its confidence (every token
has log-probability -0.2) is low exactly where it may be wrong.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion, user_message
from gptoss_magics.evaluation import CascadePlan, EvaluationReproduction
from gptoss_magics.evaluation.stats import wilson
from gptoss_magics.evaluation.thresholds import LevelRun, learn_thresholds

TEMPLATE = "What is {a} + {b} + {c}?"
SURE = math.exp(-0.2)  # the confidence of a one-token answer
HIGH_REASONING = "work the carries " * 20
GRID = {"effort": ["low", "high"]}


def carries(a: int, b: int, c: int) -> bool:
    return a % 10 + b % 10 + c % 10 >= 10


def sums(ids: list[int], sampling: Sampling) -> list[int]:
    """The three-term-sum model (see the module docstring); a reasoning budget below 8
    tokens makes high effort guess like low effort."""
    message = user_message(ids)
    if "Answer to grade:" in message:  # the judge: compare the two answers
        ref = re.search(r"Reference answer:\n(.*)\n\nAnswer to grade:\n(.*)\n\n", message, re.S)
        assert ref is not None
        return harmony_completion("correct" if ref.group(1) == ref.group(2) else "incorrect")
    if "Answer 1:" in message:  # the pairwise judge: the right sum wins
        a, b, c = map(int, re.findall(r"\d+", message.split("Question:")[1])[:3])
        first = re.search(r"Answer 1:\n(.*)\n\nAnswer 2:", message, re.S)
        assert first is not None
        return harmony_completion("1" if first.group(1) == str(a + b + c) else "2")
    a, b, c = map(int, re.findall(r"\d+", message)[:3])
    effort = re.findall(r"Reasoning: (\w+)", H.decode(ids))[-1]
    thorough = effort == "high" and (sampling.reasoning_budget or 99) >= 8
    reasoning = HIGH_REASONING if effort == "high" else "add"  # a budget cuts it short
    if thorough or not carries(a, b, c):
        return harmony_completion(str(a + b + c), reasoning)
    guess = a + b + c + (0 if a % 2 == 0 else 10)
    return harmony_completion(f"perhaps it is roughly {guess}", reasoning)


def sum_rows(n: int, seed: int) -> pd.DataFrame:
    """``n`` three-term sums, half of them with a carry, with their answers."""
    rng = random.Random(seed)
    rows: list[tuple[int, int, int]] = []
    while len(rows) < n:
        t = (rng.randrange(10, 99), rng.randrange(10, 99), rng.randrange(10, 99))
        if carries(*t) == (len(rows) % 2 == 0):
            rows.append(t)
    df = pd.DataFrame(rows, columns=["a", "b", "c"], index=[f"r{seed}-{i}" for i in range(n)])
    df["expected"] = (df.a + df.b + df.c).astype(str)
    return df


@pytest.fixture
def model(scripted: ScriptedEngine) -> ScriptedEngine:
    scripted.script = sums
    scripted.logprob = -0.2
    return scripted


def users(engine: ScriptedEngine) -> list[str]:
    return [user_message(r.prompt_ids) for r in engine.requests]


def low_right(df: pd.DataFrame) -> list[bool]:
    return [not carries(a, b, c) or a % 2 == 0 for a, b, c in zip(df.a, df.b, df.c,
                                                                  strict=True)]


# ---------------------------------------------------------------------- evaluate
def test_a_grid_gives_per_setting_figures_with_intervals(model: ScriptedEngine) -> None:
    df = sum_rows(20, 1)
    result = gm.evaluate(df, TEMPLATE, expected="expected",
                         grid={"effort": ["low", "high"], "reasoning_budget": [None, 4]},
                         metric="numeric", progress=False)
    table = result.table
    assert list(table.index) == ["low, no budget", "low, budget 4", "high, no budget",
                                 "high, budget 4"]
    assert len({r.job_id for r in model.requests}) == 4  # one engine batch per setting
    right = sum(low_right(df))
    assert table.loc["low, no budget", "accuracy"] == pytest.approx(right / 20)
    assert table.loc["high, budget 4", "accuracy"] == pytest.approx(right / 20)
    assert table.loc["high, no budget", "accuracy"] == 1.0
    low, high = wilson(right, 20)
    assert (table.loc["low, no budget", "accuracy 95% low"],
            table.loc["low, no budget", "accuracy 95% high"]) == (pytest.approx(low),
                                                                  pytest.approx(high))
    assert table.loc["high, no budget", "reasoning tokens per row"] == 61
    assert table.loc["high, budget 4", "reasoning cut rate"] == 1.0
    assert table.loc["low, no budget", "reasoning cut rate"] == 0.0
    assert (table["truncation rate"] == 0).all() and (table["errors"] == 0).all()
    for col in ("median latency s", "p95 latency s", "engine s per 1k rows"):
        assert (table[col] >= 0).all()
    rows = result.rows
    assert list(rows.index) == list(df.index)
    assert list(rows["expected"]) == list(df["expected"])
    assert list(rows["high, no budget"]) == list(df["expected"])
    assert list(rows["low, no budget score"]) == [float(x) for x in low_right(df)]
    tidy = result.outcomes
    assert len(tidy) == 80 and set(tidy["setting"]) == set(table.index)


def test_the_single_setting_is_labelled_by_its_effort(model: ScriptedEngine) -> None:
    result = gm.evaluate(sum_rows(4, 2), TEMPLATE, expected="expected", effort="high",
                         progress=False)
    assert result.settings == ["high"] and result.table.loc["high", "accuracy"] == 1.0


def test_every_map_option_applies(model: ScriptedEngine) -> None:
    df = sum_rows(6, 3)
    shots = [({"a": 1, "b": 2, "c": 3}, "6")]
    result = gm.evaluate(df, TEMPLATE, expected="expected", grid={"max_tokens": [8, 200]},
                         effort="high", examples=shots, instructions="Be brief.",
                         cache=False, progress=False)
    assert all("What is 1 + 2 + 3?" in H.decode(r.prompt_ids) for r in model.requests)
    assert all("Be brief." in H.decode(r.prompt_ids) for r in model.requests)
    table = result.table
    assert table.loc["max_tokens=8", "truncation rate"] == 1.0
    assert table.loc["max_tokens=8", "accuracy"] == 0.0  # no answer scores 0
    assert table.loc["max_tokens=200", "accuracy"] == 1.0
    assert result.record["settings"][0]["examples"] == [["What is 1 + 2 + 3?", "6"]]


def test_a_failed_row_scores_zero_and_is_counted(scripted: ScriptedEngine) -> None:
    scripted.script = sums
    scripted.fail = {1}
    result = gm.evaluate(sum_rows(4, 4), TEMPLATE, expected="expected", effort="high",
                         progress=False)
    assert result.table.loc["high", "errors"] == 1
    assert result.table.loc["high", "accuracy"] == 0.75
    with pytest.raises(gm.RowError):
        gm.evaluate(sum_rows(4, 4), TEMPLATE, expected="expected", effort="high",
                    on_error="raise", cache=False, progress=False)


def test_the_cache_serves_a_second_evaluation(model: ScriptedEngine) -> None:
    df = sum_rows(6, 5)
    gm.evaluate(df, TEMPLATE, expected="expected", grid=GRID, progress=False)
    sent = len(model.requests)
    again = gm.evaluate(df, TEMPLATE, expected="expected", grid=GRID, progress=False)
    assert len(model.requests) == sent
    assert (again.table["cached rows"] == 6).all()
    assert again.table["engine s per 1k rows"].isna().all()  # nothing was generated
    assert again.table.loc["high", "accuracy"] == 1.0


# ---------------------------------------------------------------------- metrics
def test_numeric_metric_reads_the_number_within_a_tolerance(model: ScriptedEngine) -> None:
    df = sum_rows(10, 6)
    exact = gm.evaluate(df, TEMPLATE, expected="expected", effort="low", progress=False)
    numeric = gm.evaluate(df, TEMPLATE, expected="expected", effort="low", metric="numeric",
                          progress=False)
    loose = gm.evaluate(df, TEMPLATE, expected="expected", effort="low", metric="numeric",
                        tolerance=10, progress=False)
    n_carry = sum(carries(a, b, c) for a, b, c in zip(df.a, df.b, df.c, strict=True))
    assert exact.table.loc["low", "accuracy"] == (10 - n_carry) / 10  # hedged text is wrong
    assert numeric.table.loc["low", "accuracy"] == sum(low_right(df)) / 10
    assert loose.table.loc["low", "accuracy"] == 1.0
    assert loose.record["metric"] == {"kind": "numeric", "name": "numeric (tolerance 10)",
                                      "tolerance": 10.0}


def test_choices_metric_and_a_python_metric(scripted: ScriptedEngine) -> None:
    scripted.script = lambda ids, s: harmony_completion(
        "positive" if "great" in user_message(ids) else "negative")
    df = pd.DataFrame({"text": ["great", "bad", "great day", "meh"],
                       "label": ["Positive", "negative", "negative", "negative"]})
    result = gm.evaluate(df, "Sentiment: {text}", expected="label",
                         choices=["positive", "negative"], progress=False)
    assert result.record["metric"]["kind"] == "choices"
    assert result.table.iloc[0]["accuracy"] == 0.75
    graded = gm.evaluate(df, "Sentiment: {text}", expected="label",
                         metric=lambda answer, want: 0.5 if answer == "negative" else 1.0,
                         choices=["positive", "negative"], progress=False)
    assert graded.table.iloc[0]["accuracy"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    before = len(scripted.requests)
    with pytest.raises(gm.InvalidOptionError, match="'neutral' is not one of the choices"):
        gm.evaluate(df.assign(label="neutral"), "Sentiment: {text}", expected="label",
                    choices=["positive", "negative"])
    with pytest.raises(gm.InvalidOptionError, match="score in"):
        gm.evaluate(df, "Sentiment: {text}", expected="label", metric=lambda a, e: 3,
                    progress=False)
    assert len(scripted.requests) == before + 4  # the bad score came after generating


def test_the_judge_marks_free_text_with_a_rubric(model: ScriptedEngine) -> None:
    df = sum_rows(8, 7)
    result = gm.evaluate(df, TEMPLATE, expected="expected", effort="low", metric="judge",
                         rubric="The answer must be the exact sum.",
                         judge_options={"temperature": 0}, progress=False)
    judged = [r for r in model.requests if r.sampling.choice]
    assert len(judged) == 8 and {r.sampling.choice for r in judged} == {
        ("correct", "incorrect")}
    assert all("The answer must be the exact sum." in user_message(r.prompt_ids)
               for r in judged)
    assert all("Reasoning: low" in H.decode(r.prompt_ids) for r in judged)
    n_carry = sum(carries(a, b, c) for a, b, c in zip(df.a, df.b, df.c, strict=True))
    assert result.table.loc["low", "accuracy"] == (8 - n_carry) / 8
    notes = result.outcomes["note"].tolist()
    assert set(notes) == {"correct", "incorrect"}
    assert result.record["settings"][0]["judge"]["effort"] == "low"
    with pytest.raises(gm.InvalidOptionError, match="rubric"):
        gm.evaluate(df, TEMPLATE, expected="expected", metric="judge")
    with pytest.raises(gm.InvalidOptionError, match="choices"):
        gm.evaluate(df, TEMPLATE, expected="expected", metric="judge", rubric="x",
                    judge_options={"choices": ["a", "b"]})


def test_pairwise_swaps_the_order_on_half_the_rows(model: ScriptedEngine) -> None:
    df = sum_rows(8, 8)
    result = gm.evaluate(df, TEMPLATE, expected="expected", grid=GRID, progress=False)
    fair = result.pairwise("high", "low", rubric="The right sum is better.")
    rows = fair.rows
    assert rows["swapped"].tolist() == [False, True] * 4
    assert (rows["winner"] == "high").sum() + (rows["winner"] == "low").sum() == 8
    wrong_low = 8 - sum(low_right(df))
    assert fair.summary["a wins"] >= wrong_low
    model.script = lambda ids, s: harmony_completion("1")  # a judge that favours position 1
    biased = result.pairwise("high", "low", rubric="Which is better?")
    assert biased.summary["first position won"] == 1.0
    assert biased.summary["a wins"] == biased.summary["b wins"] == 4  # the swap cancels it
    assert biased.summary["win rate"] == 0.5
    assert "win rate of 'high' 0.5" in repr(biased)
    assert len(result.record["pairwise"]) == 2
    with pytest.raises(gm.InvalidOptionError, match="no setting 'medium'"):
        result.pairwise("high", "medium", rubric="x")


# ---------------------------------------------------------------------- record
def _strict(path: Path) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return dict(json.loads(path.read_text(), parse_constant=refuse))


def test_the_record_is_self_contained_and_reproduces(model: ScriptedEngine,
                                                     tmp_path: Path) -> None:
    df = sum_rows(6, 9)
    result = gm.evaluate(df, TEMPLATE, expected="expected", grid=GRID, metric="numeric",
                         progress=False)
    path = result.save(tmp_path / "reviews" / "eval.json")
    data = _strict(path)
    assert data["kind"] == "gptoss-evaluation" and data["template"] == TEMPLATE
    assert data["data"]["sha256"].startswith("sha256:")
    assert data["data"]["rows"][0] == {"row": "r9-0", "values": {
        "a": int(df.a.iloc[0]), "b": int(df.b.iloc[0]), "c": int(df.c.iloc[0])},
        "expected": df.expected.iloc[0]}
    assert data["metric"]["kind"] == "numeric"
    prov = data["provenance"]
    assert prov["weights_fingerprint"] == "none" and prov["vllm"] == "scripted"
    assert prov["seeds"] == {"low": 0, "high": 0}
    setting = data["settings"][0]
    assert setting["options"]["effort"] == "low" and setting["options"]["seed"] == 0
    assert len(setting["outcomes"]) == 6 and "accuracy" in setting["summary"]
    sent = len(model.requests)
    again = gm.reproduce(path)
    assert isinstance(again, EvaluationReproduction)
    assert again.matches and again.same_weights and again.same_data
    assert len(model.requests) == sent + 12  # every row generated again (cache off)
    assert "MATCHES" in repr(again)
    loaded = gm.EvaluationResult.load(path)
    assert loaded.table.equals(result.table)


def test_a_different_model_does_not_reproduce(model: ScriptedEngine, tmp_path: Path) -> None:
    df = sum_rows(6, 10)
    result = gm.evaluate(df, TEMPLATE, expected="expected", effort="high", progress=False)
    model.script = lambda ids, s: harmony_completion("12")
    again = result.reproduce()
    assert not again.matches and len(again.differences) == 6
    assert again.differences["answer again"].tolist() == ["12"] * 6
    assert "DIFFERENT" in repr(again) and "6 answers differ" in repr(again)
    tampered = json.loads(json.dumps(result.record))
    tampered["data"]["rows"][0]["expected"] = "0"
    assert not gm.reproduce(tampered).same_data


def test_a_python_metric_must_be_given_again(model: ScriptedEngine, tmp_path: Path) -> None:
    def same(answer: Any, want: Any) -> bool:
        return str(answer) == str(want)

    result = gm.evaluate(sum_rows(4, 11), TEMPLATE, expected="expected", effort="high",
                         metric=same, progress=False)
    path = result.save(tmp_path / "eval.json")
    with pytest.raises(gm.InvalidOptionError, match=r"same'.*metric=that_function"):
        gm.reproduce(path)
    assert gm.reproduce(path, metric=same).matches


def test_bad_records_and_targets_are_refused(model: ScriptedEngine, tmp_path: Path) -> None:
    with pytest.raises(gm.InvalidOptionError, match="no file"):
        gm.reproduce(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(gm.InvalidOptionError, match="not an evaluation record"):
        gm.reproduce(tmp_path / "x.json")
    with pytest.raises(gm.InvalidOptionError, match="format"):
        gm.EvaluationResult({"kind": "gptoss-evaluation", "format": 99, "settings": [{}]})
    with pytest.raises(gm.InvalidOptionError, match="evaluation, not a reply"):
        gm.reproduce({"prompt": "x"}, metric="exact")
    assert model.requests == []


# ---------------------------------------------------------------------- display
def test_the_chart_is_vega_lite_with_a_static_fallback(model: ScriptedEngine) -> None:
    df = sum_rows(6, 12)
    result = gm.evaluate(df, TEMPLATE, expected="expected",
                         grid={"effort": ["low", "high"], "instructions": ["<b>x</b>"]},
                         progress=False)
    bundle = result._repr_mimebundle_()
    spec = bundle["application/vnd.vegalite.v5+json"]
    assert spec["$schema"].endswith("vega-lite/v5.json")
    points = spec["data"]["values"]
    assert [p["setting"] for p in points] == ["low, instructions=<b>x</b>",
                                             "high, instructions=<b>x</b>"]
    assert points[1]["accuracy"] == 1.0 and points[1]["tokens per row"] > \
        points[0]["tokens per row"]
    page = bundle["text/html"]
    assert "<svg" in page and "<table" in page and "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "accuracy" in bundle["text/plain"]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"grid": {"effort": "low"}}, "non-empty list"),
    ({"grid": {"choices": [["a"]]}}, "grid can vary"),
    ({"grid": {"effort": ["low"]}, "effort": "high"}, "both an option and in the grid"),
    ({"grid": {"effort": ["low", "low"]}}, "repeats a setting"),
    ({"grid": {"effort": ["low", "extreme"]}}, "effort"),
    ({"expected": "nope"}, "expected='nope' is not a column"),
    ({"metric": "fuzzy"}, "metric must be"),
    ({"metric": "numeric", "tolerance": -1}, "tolerance"),
    ({"metric": "choices"}, "needs choices"),
    ({"effrot": "low"}, "did you mean 'effort'"),
    ({"cache": "yes"}, "cache"),
])
def test_bad_arguments_fail_before_generating(model: ScriptedEngine, kwargs: dict[str, Any],
                                              message: str) -> None:
    args = {"expected": "expected", **kwargs}
    with pytest.raises(gm.GptOssError, match=message):
        gm.evaluate(sum_rows(4, 13), TEMPLATE, **args)
    assert model.requests == []


def test_evaluate_shows_its_options() -> None:
    import inspect

    params = inspect.signature(gm.evaluate).parameters
    assert {"expected", "grid", "metric", "effort", "examples", "cache"} <= set(params)
    assert "cascade" not in params


# ---------------------------------------------------------------------- cascade
def test_thresholds_follow_the_stated_bound() -> None:
    # 10 rows: low is sure and right on 6, unsure (and half wrong) on 4; high is right
    low = LevelRun("low", [1.0] * 6 + [1.0, 0.0, 1.0, 0.0], [0.9] * 6 + [0.3] * 4,
                   [1] * 10, [3] * 10)
    high = LevelRun("high", [1.0] * 10, [0.9] * 10, [60] * 10, [62] * 10)
    keep_six = (6 * wilson(6, 6)[0] + 4) / 10  # 0.766: the six charged at their bound
    keep_all = wilson(8, 10)[0]  # 0.490
    thresholds, bound = learn_thresholds([low, high], 0.75)
    assert thresholds == [0.9] and bound == pytest.approx(keep_six)
    # a target above that bound sends every row on (the last level is right on all)
    thresholds, bound = learn_thresholds([low, high], 0.8)
    assert thresholds == [None] and bound == 1.0
    # keeping every row is allowed when even its pessimistic accuracy is enough
    thresholds, bound = learn_thresholds([low, high], 0.45)
    assert thresholds == [0.3] and bound == pytest.approx(keep_all)
    # no threshold reaches an accuracy the last level does not have: the best bound
    worse = LevelRun("high", [1.0] * 6 + [0.0] * 4, [0.9] * 10, [60] * 10, [62] * 10)
    thresholds, bound = learn_thresholds([low, worse], 0.95)
    assert thresholds == [None] and bound == 0.6


def test_a_cascade_meets_its_target_on_held_out_rows(model: ScriptedEngine) -> None:
    calibration, held_out = sum_rows(60, 20), sum_rows(40, 21)
    cascade = gm.Cascade(levels=["low", "high"], target_accuracy=0.9,
                         calibrate_on=calibration, metric="numeric")
    out = held_out.gptoss.map(TEMPLATE, cascade=cascade, progress=False)
    assert isinstance(out, pd.Series) and out.name == "answer"  # the map's shape
    hard = [carries(a, b, c) for a, b, c in zip(held_out.a, held_out.b, held_out.c,
                                                strict=True)]
    assert out.tolist() == held_out["expected"].tolist()  # every carry went on to high
    info = out.attrs["gptoss"]["cascade"]
    assert info["levels"] == ["low", "high"]
    assert info["thresholds"] == [pytest.approx(SURE)]
    assert info["rows_per_level"] == {"low": 20, "high": 20}
    assert info["escalated_rows"] == [i for i, h in zip(held_out.index, hard, strict=True)
                                      if h]
    high_users = [u for u, r in zip(users(model), model.requests, strict=True)
                  if "Reasoning: high" in H.decode(r.prompt_ids)]
    assert len(high_users) == 60 + 20  # calibration rows, then only the unsure rows
    tokens = info["tokens"]
    assert tokens["reasoning"] == 40 * 1 + 20 * 61
    assert tokens["all_top_reasoning_estimate"] == 40 * 61
    assert tokens["reasoning_saving"] == pytest.approx(40 * 61 / (40 + 20 * 61))
    assert info["estimated_accuracy"] == 1.0 and info["meets_target"]
    assert info["accuracy_bound"] >= 0.9 and info["interval"][0] < 1.0
    assert info["calibration"]["accuracy_per_level"]["high"] == 1.0
    assert out.attrs["gptoss"]["summary"]["rows"] == 40


def test_plan_estimates_the_saving_before_running(model: ScriptedEngine) -> None:
    calibration, rows = sum_rows(40, 22), sum_rows(30, 23)
    cascade = gm.Cascade(levels=["low", "high"], target_accuracy=0.9,
                         calibrate_on=calibration, metric="numeric")
    plan = rows.gptoss.plan(TEMPLATE, cascade=cascade)
    assert isinstance(plan, CascadePlan)
    row_prompts = {f"What is {a} + {b} + {c}?" for a, b, c in zip(rows.a, rows.b, rows.c,
                                                                  strict=True)}
    assert not row_prompts & set(users(model))  # only the calibration rows ran
    assert plan.rows_per_level == {"low": pytest.approx(15), "high": pytest.approx(15)}
    assert plan.saving == pytest.approx(61 / (1 + 61 / 2))
    assert "reasoning tokens per row" in repr(plan) and "<table" in plan._repr_html_()
    sent = len(model.requests)
    rows.gptoss.map(TEMPLATE, cascade=cascade, progress=False)
    assert len(model.requests) == sent + 30 + 15  # the calibration is not run again


def test_reasoning_budgets_can_be_levels(model: ScriptedEngine) -> None:
    cascade = gm.Cascade(levels=[{"effort": "high", "reasoning_budget": 4}, "high"],
                         target_accuracy=0.9, calibrate_on=sum_rows(40, 24),
                         metric="numeric")
    held_out = sum_rows(20, 25)
    out = held_out.gptoss.map(TEMPLATE, cascade=cascade, confidence=True, progress=False)
    assert list(out.columns) == ["answer", "confidence", "truncated", "error"]
    assert out["answer"].tolist() == held_out["expected"].tolist()
    info = out.attrs["gptoss"]["cascade"]
    assert info["levels"] == ["high, budget 4", "high"]
    budgets = {r.sampling.reasoning_budget for r in model.requests}
    assert budgets == {4, None}
    assert info["rows_per_level"] == {"high, budget 4": 10, "high": 10}


def test_a_cascade_keeps_choices_and_fixed_thresholds(scripted: ScriptedEngine) -> None:
    scripted.script = lambda ids, s: harmony_completion("yes")
    df = pd.DataFrame({"q": ["a", "b", "c"]})
    sure = gm.Cascade(levels=["low", "high"], thresholds=[0.5])
    out = df.gptoss.map("Is {q} ok?", choices=["yes", "no"], cascade=sure, progress=False)
    assert isinstance(out.dtype, pd.CategoricalDtype) and out.tolist() == ["yes"] * 3
    info = out.attrs["gptoss"]["cascade"]
    assert info["rows_per_level"] == {"low": 3, "high": 0}
    assert "estimated_accuracy" not in info  # no calibration rows: nothing estimated
    unsure = gm.Cascade(levels=["low", "high"], thresholds=[0.95])
    out = df.gptoss.map("Is {q} ok?", choices=["yes", "no"], cascade=unsure, progress=False)
    assert out.attrs["gptoss"]["cascade"]["rows_per_level"] == {"low": 0, "high": 3}


def test_a_cascade_reads_the_confidence_of_schema_and_regex_answers(
        scripted: ScriptedEngine) -> None:
    def script(ids: list[int], sampling: Sampling) -> list[int]:
        sure = "Reasoning: high" in H.decode(ids) or "easy" in user_message(ids)
        if sampling.json_schema is not None:
            return harmony_completion('{"n": 1}' if sure else '{"n": 1, "note": "hmm"}')
        return harmony_completion("12" if sure else "12 12 12 12 12")

    scripted.script = script
    df = pd.DataFrame({"q": ["easy one", "hard one", "easy two", "hard two"]})
    schema = {"type": "object", "properties": {"n": {"type": "integer"},
                                               "note": {"type": "string"}}}
    cascade = gm.Cascade(levels=["low", "high"], thresholds=[0.5])
    out = df.gptoss.map("Count {q}", schema=schema, cascade=cascade, progress=False)
    assert out["n"].tolist() == [1] * 4
    assert out.attrs["gptoss"]["cascade"]["escalated_rows"] == [1, 3]
    out = df.gptoss.map("Count {q}", regex=r"[0-9 ]+", cascade=cascade, progress=False)
    assert out.tolist() == ["12"] * 4
    assert out.attrs["gptoss"]["cascade"]["escalated_rows"] == [1, 3]


def test_a_strict_target_sends_every_row_on(model: ScriptedEngine) -> None:
    cascade = gm.Cascade(levels=["low", "high"], target_accuracy=1.0,
                         calibrate_on=sum_rows(10, 26), metric="numeric")
    out = sum_rows(6, 27).gptoss.map(TEMPLATE, cascade=cascade, progress=False)
    info = out.attrs["gptoss"]["cascade"]
    assert info["thresholds"] == [None] and info["rows_per_level"] == {"low": 0, "high": 6}
    assert info["meets_target"] and info["accuracy_bound"] == 1.0


def test_an_unreachable_target_warns(model: ScriptedEngine) -> None:
    cascade = gm.Cascade(levels=["low", {"effort": "high", "reasoning_budget": 4}],
                         target_accuracy=0.95, calibrate_on=sum_rows(10, 26),
                         metric="numeric")
    with pytest.warns(gm.GptOssWarning, match="cannot meet target_accuracy 0.95"):
        out = sum_rows(6, 27).gptoss.map(TEMPLATE, cascade=cascade, progress=False)
    assert not out.attrs["gptoss"]["cascade"]["meets_target"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda df: gm.Cascade(levels=["low"], calibrate_on=df), "two or more"),
    (lambda df: gm.Cascade(levels="low", calibrate_on=df), "two or more"),
    (lambda df: gm.Cascade(levels=["low", "low"], calibrate_on=df), "differ"),
    (lambda df: gm.Cascade(levels=["low", "high"]), "calibrate_on"),
    (lambda df: gm.Cascade(levels=["low", {"choices": ["a"]}], calibrate_on=df), "level"),
    (lambda df: gm.Cascade(levels=["low", "high"], calibrate_on=df, target_accuracy=2),
     "target_accuracy"),
    (lambda df: gm.Cascade(levels=["low", "high"], calibrate_on=df.drop(columns="expected")),
     "expected="),
    (lambda df: gm.Cascade(levels=["low", "high"], thresholds=[0.5, 0.6]), "thresholds"),
])
def test_bad_cascades_are_refused(make: Any, message: str) -> None:
    with pytest.raises(gm.InvalidOptionError, match=message):
        make(sum_rows(4, 28))


def test_a_cascade_is_checked_before_anything_runs(model: ScriptedEngine) -> None:
    cascade = gm.Cascade(levels=["low", "extreme"], calibrate_on=sum_rows(4, 29))
    with pytest.raises(gm.InvalidOptionError, match="effort"):
        sum_rows(4, 30).gptoss.map(TEMPLATE, cascade=cascade)
    with pytest.raises(gm.InvalidOptionError, match="cascade must be a"):
        sum_rows(4, 30).gptoss.map(TEMPLATE, cascade="low,high")
    good = gm.Cascade(levels=["low", "high"], calibrate_on=sum_rows(4, 29))
    with pytest.raises(gm.InvalidOptionError, match=r"map and df\.gptoss\.plan"):
        sum_rows(4, 30).gptoss.submit(TEMPLATE, cascade=good)
    with pytest.raises(gm.TemplateError):
        sum_rows(4, 30).gptoss.map("What is {x}?", cascade=good)
    assert model.requests == []
