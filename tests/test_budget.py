"""Reasoning budgets: the engine closes the analysis after N tokens and the model answers.

On the real vLLM engine with the trained tiny model, greedy, held-out prompts. The
tiny model reasons for about 40 tokens at high effort, so a budget of 8 always cuts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.display import footer
from gptoss_magics.options import Options
from gptoss_magics.settings import settings
from gptoss_magics.tiny import tasks as T

pytestmark = pytest.mark.engine

BUDGET = 8
#: <|channel|>analysis<|message|>: the header that opens the reasoning
HEADER = 3


def _needs_trained(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip(f"the shared engine runs {engine['model']}, not the trained tiny model")


@pytest.fixture(scope="module")
def pinned_date() -> Iterator[None]:
    s = settings()
    saved = s.current_date
    s.current_date = "2026-03-29"
    yield
    s.current_date = saved


@pytest.fixture(scope="module")
def high(engine: dict, pinned_date: None) -> tuple[list[T.Example], list[gm.Reply],
                                                    list[gm.Reply]]:
    """Held-out high-effort prompts, answered without and with a budget."""
    _needs_trained(engine)
    examples = [ex for ex in T.held_out(8, seed=21) if ex.effort == "high"]
    prompts = [ex.user for ex in examples]
    free = gm.complete_batch(prompts, effort="high", temperature=0, max_tokens=200,
                             reasoning_budget=None)
    cut = gm.complete_batch(prompts, effort="high", temperature=0, max_tokens=200,
                            reasoning_budget=BUDGET)
    return examples, free, cut


def test_the_budget_cuts_the_reasoning_at_n_tokens(high: Any) -> None:
    _, free, cut = high
    assert all(r.analysis_tokens > BUDGET for r in free)  # the cut is real
    for f, c in zip(free, cut, strict=True):
        assert c.analysis_tokens == BUDGET and c.reasoning_cut and not f.reasoning_cut
        # greedy: the same reasoning up to the cut, then the engine's forced tokens
        assert c.token_ids[:HEADER + BUDGET] == f.token_ids[:HEADER + BUDGET]
        forced = list(c.token_ids[HEADER + BUDGET:HEADER + BUDGET + 6])
        assert forced == [H.END, H.START, *H.encoding().encode(
            "assistant<|channel|>final<|message|>", allowed_special="all")]
        assert c.provenance["sampling"]["reasoning_budget"] == BUDGET
        assert f.analysis.startswith(c.analysis.rstrip()[:10])


def test_the_model_answers_after_a_cut(high: Any) -> None:
    examples, _, cut = high
    formed = [r for r in cut if r.ok and r.final and r.token_ids[-1] == H.RETURN
              and "<|" not in r.final and not r.malformed]
    assert len(formed) == len(cut), [r.to_dict() for r in cut if r not in formed][:2]
    # sentiment needs little thought: the toy model still gets it right; its sums need
    # the step-by-step reasoning that the cut took away (as with real models, less
    # thought can cost accuracy: compare_efforts measures it)
    pairs = [(ex, r) for ex, r in zip(examples, cut, strict=True) if ex.task == "sentiment"]
    right = [ex for ex, r in pairs if T.is_correct(ex, r.final)]
    assert len(right) >= 0.85 * len(pairs), [(ex.user, r.final) for ex, r in pairs]
    assert "reasoning cut at its budget of 8 tokens" in footer(cut[0])


def test_a_budget_gives_answers_where_max_tokens_gave_none(engine: dict,
                                                           pinned_date: None) -> None:
    _needs_trained(engine)
    examples = [ex for ex in T.held_out(6, seed=22) if ex.effort == "high"]
    prompts = [ex.user for ex in examples]
    starved = gm.complete_batch(prompts, effort="high", temperature=0, max_tokens=24,
                                reasoning_budget=None)
    assert all(r.truncated and not r.final for r in starved)
    assert "reasoning budget" in (starved[0].warning or "")
    # 3 header + 6 reasoning + 6 forced tokens leave 9 for the answer
    budgeted = gm.complete_batch(prompts, effort="high", temperature=0, max_tokens=24,
                                 reasoning_budget=6)
    assert all(r.reasoning_cut and r.analysis_tokens == 6 for r in budgeted)
    answered = [r for r in budgeted if r.ok and r.final]
    assert len(answered) >= 0.85 * len(budgeted), [r.to_dict() for r in budgeted][:2]


def test_a_budget_above_the_reasoning_changes_nothing(high: Any) -> None:
    examples, free, _ = high
    again = gm.complete_batch([ex.user for ex in examples], effort="high", temperature=0,
                              max_tokens=200, reasoning_budget=190)
    assert [r.token_ids for r in again] == [r.token_ids for r in free]
    assert not any(r.reasoning_cut for r in again)


def test_budget_zero_answers_without_reasoning(engine: dict, pinned_date: None) -> None:
    _needs_trained(engine)
    reply = gm.complete("Uppercase the word: harbor", effort="high", temperature=0,
                        max_tokens=60, reasoning_budget=0)
    assert reply.analysis == "" and reply.analysis_tokens == 0 and reply.reasoning_cut
    assert reply.ok and reply.final.strip()


def test_the_setting_applies_and_a_call_overrides_it(engine: dict, fresh_settings: Any,
                                                     pinned_date: None) -> None:
    _needs_trained(engine)
    fresh_settings.reasoning_budget = 5
    assert gm.complete("What is 12 + 30?", effort="high", temperature=0,
                       max_tokens=120).analysis_tokens == 5
    free = gm.complete("What is 12 + 30?", effort="high", temperature=0, max_tokens=120,
                       reasoning_budget=None)
    assert free.analysis_tokens > 5 and not free.reasoning_cut
    assert gm.status()["defaults"]["reasoning_budget"] == 5
    with pytest.raises(ValueError, match="reasoning_budget"):
        Options.resolve(reasoning_budget=-1)


def test_streaming_with_a_budget(engine: dict, pinned_date: None) -> None:
    _needs_trained(engine)
    pieces: dict[str | None, str] = {}
    reply = None
    for item in gm.stream("What is 23 + 19?", effort="high", temperature=0,
                          max_tokens=120, reasoning_budget=6):
        if isinstance(item, gm.Reply):
            reply = item
        else:
            pieces[item[0]] = pieces.get(item[0], "") + item[1]
    assert reply is not None and reply.reasoning_cut and reply.analysis_tokens == 6
    assert pieces["analysis"] == reply.analysis and pieces["final"] == reply.final


def test_a_budgeted_answer_reproduces(engine: dict, pinned_date: None) -> None:
    _needs_trained(engine)
    reply = gm.complete("Sentiment of: the service was awful and slow", effort="high",
                        seed=3, max_tokens=120, reasoning_budget=7)
    check = gm.reproduce(reply.to_dict())
    assert check.identical and check.again.analysis_tokens == 7


def test_map_with_choices_and_a_budget(engine: dict, pinned_date: None) -> None:
    _needs_trained(engine)
    examples = [ex for ex in T.held_out(10, seed=23)
                if ex.task == "sentiment" and ex.effort == "high"]
    df = pd.DataFrame({"text": [ex.user for ex in examples]})
    labels = ["positive", "negative", "neutral"]
    out = df.gptoss.map("{text}", effort="high", temperature=0, max_tokens=120,
                        choices=labels, reasoning_budget=4, cache=False, progress=False)
    assert out.notna().all() and set(out.dropna()) <= set(labels)
    info = out.attrs["gptoss"]
    assert info["summary"]["reasoning_cut"] == len(df)
    assert info["reasoning_cut_rows"] == list(df.index)
    assert info["sampling"]["reasoning_budget"] == 4
    right = sum(T.is_correct(ex, str(v)) for ex, v in zip(examples, out, strict=True))
    assert right >= 0.85 * len(examples)


def test_the_map_warning_suggests_a_budget(engine: dict, pinned_date: None) -> None:
    _needs_trained(engine)
    df = pd.DataFrame({"text": ["What is 31 + 44?", "What is 18 + 27?"]})
    with pytest.warns(gm.GptOssWarning, match="set reasoning_budget well below 16"):
        df.gptoss.map("{text}", effort="high", temperature=0, max_tokens=16,
                      cache=False, progress=False)


def test_the_cell_magic_takes_a_budget(ip: InteractiveShell, engine: dict,
                                       fresh_settings: Any, pinned_date: None) -> None:
    _needs_trained(engine)
    ip.run_cell_magic("gptoss", "-e high -t 0 --reasoning-budget 5", "What is 40 + 2?")
    reply = ip.user_ns["_"]
    assert reply.reasoning_cut and reply.analysis_tokens == 5
    fresh_settings.reasoning_budget = 5
    ip.run_cell_magic("gptoss", "-e high -t 0 -b none", "What is 40 + 2?")
    assert not ip.user_ns["_"].reasoning_cut
    with pytest.raises(UsageError, match="--reasoning-budget"):
        ip.run_cell_magic("gptoss", "--reasoning-budget -3", "What is 40 + 2?")
    with pytest.raises(UsageError, match="token count"):
        ip.run_cell_magic("gptoss", "--reasoning-budget lots", "What is 40 + 2?")


def test_the_map_magic_takes_a_budget(ip: InteractiveShell, engine: dict, pinned_date: None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _needs_trained(engine)
    ip.user_ns["deals"] = pd.DataFrame({"q": ["What is 5 + 6?", "What is 7 + 8?"]})
    ip.run_line_magic("gptoss_map", 'deals "{q}" --out a -e high -t 0 -b 6 --no-cache')
    assert ip.user_ns["deals"]["a"].notna().all()
    assert "0 truncated, 2 reasoning cut, 0 failed" in capsys.readouterr().out


def test_the_sweep_compares_budgets(engine: dict, pinned_date: None) -> None:
    _needs_trained(engine)
    sums = [ex for ex in T.held_out(8, seed=24) if ex.task == "add" and ex.effort == "high"]
    df = pd.DataFrame({"q": [ex.user for ex in sums], "a": [ex.answer for ex in sums]})
    result = gm.compare_efforts(df, "{q}", expected="a", efforts=["high"],
                                budgets=[None, 4], max_tokens=160, temperature=0)
    table = result.table
    assert list(table.index) == ["high, no budget", "high, budget 4"]
    assert list(table["reasoning cut"]) == [0, len(sums)]
    assert table.loc["high, budget 4", "median reasoning tokens"] == 4
    # the toy sums need their reasoning: the sweep shows what the budget costs
    assert table.loc["high, no budget", "accuracy"] >= 0.8
    assert table.loc["high, budget 4", "accuracy"] <= 0.3
    assert "high, budget 4" in result._repr_html_()
