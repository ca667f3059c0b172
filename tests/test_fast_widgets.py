"""The effort panel and the effort sweep on the scripted engine (no vLLM): sliders linked
to the settings, debounced reruns, cancelling a run in flight, the sweep's table."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion, user_message
from gptoss_magics.settings import GptOssSettings
from gptoss_magics.sweep import EffortComparison
from gptoss_magics.widgets import EffortPanel


@pytest.fixture
def panels(fresh_settings: GptOssSettings) -> Iterator[Callable[..., EffortPanel]]:
    """Make effort panels; each is stopped and closed after the test (before the settings
    are restored, which would otherwise move its sliders and re-run it)."""
    made: list[EffortPanel] = []

    def make(*args: Any, **kwargs: Any) -> EffortPanel:
        panel = EffortPanel(*args, **kwargs)
        made.append(panel)
        return panel

    yield make
    for panel in made:
        panel.cancel()
        if panel.comm is not None:  # not closed by the test
            panel.close()


# ---------------------------------------------------------------------- the controls
def test_sliders_are_linked_to_the_settings(panels: Callable[..., EffortPanel],
                                            fresh_settings: GptOssSettings) -> None:
    panel = panels()
    assert isinstance(gm.effort_panel(), EffortPanel)
    assert panel.effort.value == fresh_settings.effort
    panel.effort.value = "high"
    panel.temperature.value = 0.0
    panel.max_tokens.value = 32
    assert (fresh_settings.effort, fresh_settings.temperature, fresh_settings.max_tokens) == \
        ("high", 0.0, 32)
    fresh_settings.effort = "low"  # e.g. %config: the slider follows
    fresh_settings.max_tokens = 64
    assert (panel.effort.value, panel.max_tokens.value) == ("low", 64)
    assert panel.prompt is None and panel.runs == 0


def test_the_panel_controls_the_budget(panels: Callable[..., EffortPanel],
                                       fresh_settings: GptOssSettings) -> None:
    fresh_settings.reasoning_budget = None
    panel = panels()
    assert not panel.budget_on.value and panel.budget.disabled
    assert panel.reasoning_budget is None
    panel.budget_on.value = True
    panel.budget.value = 64
    assert fresh_settings.reasoning_budget == 64 and not panel.budget.disabled
    assert panel.reasoning_budget == 64
    fresh_settings.reasoning_budget = None  # e.g. %config: the panel follows
    assert not panel.budget_on.value and panel.budget.disabled
    fresh_settings.reasoning_budget = 32
    assert panel.budget_on.value and panel.budget.value == 32
    panel.close()
    fresh_settings.reasoning_budget = 16  # a closed panel no longer follows
    assert panel.budget.value == 32


# ---------------------------------------------------------------------- a bound prompt
def test_a_bound_prompt_runs_with_the_panel_values(scripted: ScriptedEngine,
                                                   panels: Callable[..., EffortPanel],
                                                   fresh_settings: GptOssSettings) -> None:
    fresh_settings.max_tokens = 48
    fresh_settings.temperature = 0.5
    panel = panels("What is 2 + 2?")
    panel.wait()
    assert panel.runs == 1 and panel.reply is not None
    assert panel.reply.final == "echo: What is 2 + 2?"
    [request] = scripted.requests
    assert (request.sampling.max_tokens, request.sampling.temperature) == (48, 0.5)
    assert "gptoss-reply" in panel.result.value and "echo: What is 2 + 2?" in \
        panel.result.value
    assert panel.status.value == ""


def test_slider_moves_rerun_once_after_the_debounce(scripted: ScriptedEngine,
                                                    panels: Callable[..., EffortPanel],
                                                    fresh_settings: GptOssSettings,
                                                    wait_until: Any) -> None:
    fresh_settings.reasoning_budget = None
    panel = panels("What is 2 + 2?", debounce_s=1.0)
    panel.wait()
    panel.effort.value = "high"  # four moves in a row: one run, with all of them
    panel.temperature.value = 0.0
    panel.max_tokens.value = 32
    panel.budget_on.value = True
    wait_until(lambda: panel.runs == 2)
    panel.wait()
    assert len(scripted.requests) == 2 and panel.cancelled == 0
    last = scripted.requests[-1]
    assert "Reasoning: high" in H.decode(last.prompt_ids)
    assert (last.sampling.temperature, last.sampling.max_tokens,
            last.sampling.reasoning_budget) == (0.0, 32, panel.budget.value)
    assert panel.reply.effort == "high"


@pytest.mark.scripted(tokens_per_step=1, step_s=0.005)
def test_a_run_in_flight_is_cancelled(scripted: ScriptedEngine,
                                      panels: Callable[..., EffortPanel],
                                      fresh_settings: GptOssSettings,
                                      wait_until: Any) -> None:
    scripted.script = lambda ids, s: harmony_completion("a long answer " * 2000)
    fresh_settings.max_tokens = 3000
    panel = panels("Talk at length", debounce_s=0.05)
    wait_until(lambda: scripted.in_flight == 1)  # the first run is generating
    assert panel.runs == 0 and "running at effort" in panel.status.value
    panel.max_tokens.value = 16  # cancels the run in flight and starts a short one
    wait_until(lambda: panel.runs == 1)
    panel.wait()
    assert panel.cancelled == 1 and len(scripted.requests) == 2
    assert [r.sampling.max_tokens for r in scripted.requests] == [3000, 16]
    assert panel.reply.provenance["sampling"]["max_tokens"] == 16
    assert panel.reply.truncated and scripted.in_flight == 0


def test_a_bad_option_is_refused_when_the_panel_is_made(
        scripted: ScriptedEngine, panels: Callable[..., EffortPanel]) -> None:
    with pytest.raises(gm.InvalidOptionError, match=r"top_p must be a number in \(0, 1\]"):
        panels("hi", top_p=5.0)
    with pytest.raises(gm.InvalidOptionError, match="effort is the panel's slider"):
        panels("hi", effort="low")
    assert scripted.requests == []


def test_an_engine_error_shows_in_the_panel(scripted: ScriptedEngine,
                                            panels: Callable[..., EffortPanel]) -> None:
    scripted.close()  # unloaded under the panel
    panel = panels("hi")
    panel.wait()
    assert "unloaded" in panel.status.value and panel.runs == 0


def test_closing_a_panel_twice_is_safe(panels: Callable[..., EffortPanel]) -> None:
    panel = panels()
    panel.close()
    panel.close()


# ---------------------------------------------------------------------- the sweep
def test_compare_efforts_on_a_prompt(scripted: ScriptedEngine) -> None:
    result = gm.compare_efforts("What is 2 + 2?", repeats=3, max_tokens=64)
    assert isinstance(result, EffortComparison)
    assert list(result.table.index) == ["low", "medium", "high"]
    assert (result.table["n"] == 3).all()
    assert [r.effort for r in result.replies["high"]] == ["high"] * 3
    efforts = [re.findall(r"Reasoning: (\w+)", H.decode(r.prompt_ids)) for r in scripted.requests]
    seen = [(e[0], r.sampling.seed) for e, r in zip(efforts, scripted.requests, strict=True)]
    assert seen == [(e, s) for e in ("low", "medium", "high") for s in (0, 1, 2)]
    assert (result.table["median reasoning tokens"] > 0).all()
    html = result._repr_html_()
    assert "<table" in html and "<svg" in html and "median reasoning tokens" in html


def test_compare_efforts_on_a_dataframe_with_accuracy(scripted: ScriptedEngine) -> None:
    scripted.script = lambda ids, s: harmony_completion(
        "X" if "item 1" in user_message(ids) else "y")
    df = pd.DataFrame({"text": [f"item {i}" for i in range(30)], "label": ["x"] * 30})
    result = gm.compare_efforts(df, "Label {text}", n=6, expected="label", max_tokens=64,
                                efforts=["low"], budgets=[None, 4])
    assert list(result.table.index) == ["low, no budget", "low, budget 4"]
    assert (result.table["n"] == 6).all() and "accuracy" in result.table
    labelled = [r.prompt for r in result.replies["low, no budget"]]
    right = sum(p.startswith("Label item 1") for p in labelled) / 6
    assert result.table.loc["low, no budget", "accuracy"] == pytest.approx(right)
    assert {r.sampling.reasoning_budget for r in scripted.requests} == {None, 4}
    before = len(scripted.requests)
    with pytest.raises(gm.TemplateError):
        gm.compare_efforts(df, "Label {txt}")
    with pytest.raises(gm.InvalidOptionError, match="compare_efforts sets effort itself"):
        gm.compare_efforts("hi", effort="low")
    assert len(scripted.requests) == before
