"""df.gptoss.plan and %gptoss_map --dry-run: what a map would do, generating nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics.frame import MapPlan

TEXTS = ["the food was great", "the room was awful", None, "the food was great",
         "the train was boring"]


@pytest.mark.engine
def test_plan_counts_cache_and_context(engine: dict, count_requests: list[int]) -> None:
    df = pd.DataFrame({"text": [*TEXTS, "word " * 5000]}, index=list("abcdef"))
    template = "Sentiment of: {text} (plan test)"
    df.iloc[:2].gptoss.map(template, effort="low", max_tokens=8, progress=False)  # cached
    count_requests.clear()
    plan = df.gptoss.plan(template, effort="low", max_tokens=8, reasoning_budget=4,
                          choices=["positive", "negative", "neutral"])
    assert count_requests == []  # nothing generated
    assert isinstance(plan, MapPlan)
    assert (plan.rows, plan.missing, plan.distinct_prompts) == (6, 1, 4)
    # the choices constraint is part of the cache key: nothing of the plain run counts
    assert plan.cached == 0 and plan.to_generate == 4 and plan.constraint == "choices"
    plan = df.gptoss.plan(template, effort="low", max_tokens=8, reasoning_budget=None)
    assert plan.cached == 2 and plan.to_generate == 2 and plan.most_tokens == 16
    assert plan.too_long == ["f"] and plan.prompt_tokens_max > 5000
    assert plan.first_prompt.startswith("<|start|>system<|message|>")
    assert "Reasoning: low" in plan.first_prompt
    assert plan.first_prompt.endswith(
        "<|start|>user<|message|>Sentiment of: the food was great (plan test)<|end|>"
        "<|start|>assistant")
    text = repr(plan)
    assert "6 (1 with missing values, not sent)" in text and "(plan test)" in text
    assert "<details>" in plan._repr_html_()
    series_plan = df["text"].gptoss.plan("Sentiment of: {} (plan test)", effort="low",
                                         max_tokens=8)
    assert series_plan.distinct_prompts == 4 and series_plan.missing == 1


@pytest.mark.engine
def test_dry_run_magic_generates_nothing(engine: dict, count_requests: list[int],
                                         ip: InteractiveShell) -> None:
    ip.user_ns["reviews"] = pd.DataFrame({"text": TEXTS})
    plan = ip.run_line_magic("gptoss_map", 'reviews "Sentiment: {text}" -o label --dry-run')
    assert isinstance(plan, MapPlan) and plan.distinct_prompts == 3
    assert count_requests == [] and "label" not in ip.user_ns["reviews"].columns


def test_plan_without_a_model_imports_no_engine() -> None:
    code = textwrap.dedent("""
        import sys
        import pandas as pd
        import gptoss_magics as gm
        df = pd.DataFrame({"text": ["a", "b", "a"]})
        plan = df.gptoss.plan("Echo: {text}", effort="high", max_tokens=64)
        assert not gm.is_loaded()
        assert (plan.distinct_prompts, plan.cached, plan.too_long) == (2, None, None)
        assert "Reasoning: high" in plan.first_prompt
        assert "no model loaded" in repr(plan)
        assert "vllm" not in sys.modules and "torch" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_plan_checks_the_template_like_map() -> None:
    df = pd.DataFrame({"text": ["a"]})
    with pytest.raises(gm.TemplateError, match="text"):
        df.gptoss.plan("Echo: {txt}")
