"""Effort panel and effort sweep, on the real tiny engine (no browser: kernel side).

The panel's own logic (links, debounce, cancelling a run in flight) is tested on the
scripted engine in test_fast_widgets.py; here it drives the real model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics.settings import GptOssSettings
from gptoss_magics.sweep import EffortComparison
from gptoss_magics.widgets import EffortPanel

pytestmark = pytest.mark.engine


@pytest.fixture
def panel_list(fresh_settings: GptOssSettings) -> Iterator[list[EffortPanel]]:
    """Panels made by the test, stopped and closed before the settings are restored."""
    made: list[EffortPanel] = []
    yield made
    for panel in made:
        panel.cancel()
        panel.close()


def test_magic_and_map_use_the_panel_values(engine: dict, ip: InteractiveShell,
                                            fresh_settings: GptOssSettings,
                                            panel_list: list[EffortPanel]) -> None:
    panel = gm.effort_panel()
    panel_list.append(panel)
    panel.effort.value = "high"
    panel.max_tokens.value = 16
    ip.run_cell_magic("gptoss", "", "Hello")
    reply = ip.user_ns["_"]
    assert reply.effort == "high" and reply.provenance["sampling"]["max_tokens"] == 16
    assert reply.completion_tokens <= 16
    out = pd.DataFrame({"t": ["x"]}).gptoss.map("Say {t}", cache=False, progress=False)
    assert out.attrs["gptoss"]["effort"] == "high"
    assert out.attrs["gptoss"]["sampling"]["max_tokens"] == 16


def test_bound_prompt_reruns_on_slider_moves(engine: dict, fresh_settings: GptOssSettings,
                                             panel_list: list[EffortPanel],
                                             wait_until: Any) -> None:
    fresh_settings.max_tokens = 120
    fresh_settings.temperature = 0.0
    panel = EffortPanel("What is 2 + 2?", debounce_s=0.05)
    panel_list.append(panel)
    panel.wait()
    assert panel.runs == 1 and panel.reply is not None
    assert "gptoss-reply" in panel.result.value
    if engine["model"] == "tiny":
        assert panel.reply.final.strip() == "4"
    panel.effort.value = "high"
    wait_until(lambda: panel.runs == 2)
    panel.wait()
    assert panel.reply.effort == "high"
    assert panel.reply.final in panel.result.value


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
