"""Effort panel and effort sweep, on the real tiny engine (no browser: kernel side)."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics.sweep import EffortComparison
from gptoss_magics.widgets import EffortPanel

pytestmark = pytest.mark.engine


def wait_until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sliders_are_linked_to_the_settings(engine: dict, fresh_settings) -> None:  # type: ignore[no-untyped-def]
    panel = gm.effort_panel()
    assert isinstance(panel, EffortPanel)
    assert panel.effort.value == fresh_settings.effort
    panel.effort.value = "high"
    panel.temperature.value = 0.0
    panel.max_tokens.value = 32
    assert (fresh_settings.effort, fresh_settings.temperature, fresh_settings.max_tokens) == \
        ("high", 0.0, 32)
    fresh_settings.effort = "low"  # e.g. %config: the slider follows
    assert panel.effort.value == "low"


def test_magic_and_map_use_the_panel_values(engine: dict, fresh_settings) -> None:  # type: ignore[no-untyped-def]
    panel = gm.effort_panel()
    panel.effort.value = "high"
    panel.max_tokens.value = 16
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("gptoss_magics")
    ip.run_cell_magic("gptoss", "", "Hello")
    reply = ip.user_ns["_"]
    assert reply.effort == "high" and reply.provenance["sampling"]["max_tokens"] == 16
    out = pd.DataFrame({"t": ["x"]}).gptoss.map("Say {t}", cache=False, progress=False)
    assert out.attrs["gptoss"]["effort"] == "high"


def test_bound_prompt_reruns_on_slider_moves(engine: dict, fresh_settings) -> None:  # type: ignore[no-untyped-def]
    fresh_settings.max_tokens = 24
    panel = EffortPanel("What is 2 + 2?", debounce_s=0.05)
    panel.wait()
    assert panel.runs == 1 and panel.reply is not None
    assert "gptoss-reply" in panel.result.value
    panel.effort.value = "high"
    wait_until(lambda: panel.runs == 2)
    assert panel.reply.effort == "high"


def test_a_run_in_flight_is_cancelled(engine: dict, fresh_settings,  # type: ignore[no-untyped-def]
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from gptoss_magics.session import current

    llm_engine = current().engine._llm.llm_engine
    step = llm_engine.step

    def slow_step():  # type: ignore[no-untyped-def]
        time.sleep(0.05)  # a slow GPU: the first run is still going when the slider moves
        return step()

    monkeypatch.setattr(llm_engine, "step", slow_step)
    fresh_settings.max_tokens = 3000
    panel = EffortPanel("What is 38 + 47?", debounce_s=0.05)
    time.sleep(0.5)
    assert panel.runs == 0  # still generating
    panel.max_tokens.value = 16  # cancels the run in flight and starts a short one
    wait_until(lambda: panel.runs >= 1)
    assert panel.runs == 1 and panel.cancelled == 1
    assert panel.reply.provenance["sampling"]["max_tokens"] == 16


def test_compare_efforts_on_a_prompt(engine: dict) -> None:
    result = gm.compare_efforts("What is 2 + 2?", repeats=3, max_tokens=24)
    assert isinstance(result, EffortComparison)
    assert list(result.table.index) == ["low", "medium", "high"]
    assert (result.table["n"] == 3).all()
    assert {len(v) for v in result.replies.values()} == {3}
    assert [r.effort for r in result.replies["high"]] == ["high"] * 3
    html = result._repr_html_()
    assert "<table" in html and "<svg" in html and "median reasoning tokens" in html


def test_compare_efforts_on_a_dataframe_with_accuracy(engine: dict) -> None:
    df = pd.DataFrame({"text": [f"item {i}" for i in range(30)], "label": ["x"] * 30})
    result = gm.compare_efforts(df, "Label {text}", n=6, expected="label", max_tokens=16)
    assert (result.table["n"] == 6).all() and "accuracy" in result.table
    with pytest.raises(gm.TemplateError):
        gm.compare_efforts(df, "Label {txt}")
