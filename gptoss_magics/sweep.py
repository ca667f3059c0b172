"""The effort sweep: the same input at low, medium and high, side by side.

``compare_efforts(prompt)`` samples one prompt several times per effort;
``compare_efforts(df, "Classify: {text}", expected="label")`` runs a sample of
rows. Both show a table and a small chart of latency, reasoning tokens and answer
tokens per effort (and accuracy, when the right answers are known): the numbers
needed to choose an effort for a 10,000-row job.
"""

from __future__ import annotations

import html
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from . import template as tmpl
from .frame import examples_to_turns
from .reply import Reply
from .session import Options, current, make_reply
from .settings import EFFORTS


@dataclass
class EffortComparison:
    """Per-effort figures (``table``) and every reply (``replies``)."""

    table: pd.DataFrame
    replies: dict[str, list[Reply]] = field(repr=False)
    source: str = ""

    def __repr__(self) -> str:
        return f"Effort comparison over {self.source}\n{self.table.to_string()}"

    def _repr_html_(self) -> str:
        return (f"<div class='gptoss-sweep'><b>Effort comparison</b> over "
                f"{html.escape(self.source)}{self.table.to_html(float_format='%.3g')}"
                f"{self.chart_svg()}</div>")

    def chart_svg(self) -> str:
        """Small bar charts, one per measure, one bar per effort (inline SVG)."""
        measures = [c for c in ("median latency s", "median reasoning tokens",
                                "median answer tokens", "accuracy") if c in self.table]
        colors = {"low": "#8fb3de", "medium": "#4a7fc1", "high": "#1f4e8c"}
        width, height, pad = 170, 120, 22
        charts = []
        for i, measure in enumerate(measures):
            values = [float(v) if pd.notna(v) else 0.0 for v in self.table[measure]]
            top = max(values) or 1.0
            x0 = i * (width + 10)
            parts = [f"<text x='{x0 + width / 2}' y='12' text-anchor='middle' "
                     f"font-size='11'>{html.escape(measure)}</text>"]
            bar = (width - 2 * pad) / max(len(values), 1)
            for j, (effort, value) in enumerate(zip(self.table.index, values, strict=True)):
                h = (height - 2 * pad) * value / top
                x = x0 + pad + j * bar
                y = height - pad - h
                parts.append(f"<rect x='{x + 3:.1f}' y='{y:.1f}' width='{bar - 6:.1f}' "
                             f"height='{h:.1f}' "
                             f"fill='{colors.get(str(effort).split(',')[0], '#888')}'/>")
                parts.append(f"<text x='{x + bar / 2:.1f}' y='{y - 3:.1f}' "
                             f"text-anchor='middle' font-size='10'>{value:.3g}</text>")
                parts.append(f"<text x='{x + bar / 2:.1f}' y='{height - 8}' "
                             f"text-anchor='middle' font-size='10'>{html.escape(str(effort))}"
                             "</text>")
            charts.append("".join(parts))
        total = len(measures) * (width + 10)
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{total}' height='{height}' "
                f"class='gptoss-sweep-chart'>{''.join(charts)}</svg>")


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def compare_efforts(source: str | pd.DataFrame, template: str | None = None, *,
                    efforts: Sequence[str] = EFFORTS, n: int = 20, repeats: int = 5,
                    expected: str | None = None, max_tokens: int | None = None,
                    temperature: float | None = None, seed: int = 0,
                    instructions: str | None = None,
                    reasoning_budget: int | str | None = "default",
                    budgets: Sequence[int | None] | None = None,
                    examples: Any = None) -> EffortComparison:
    """Run the same input at each effort and compare latency, tokens and accuracy.

    Parameters
    ----------
    source : str or DataFrame
        A prompt (sampled ``repeats`` times per effort with seeds ``seed``,
        ``seed + 1``, ...) or a DataFrame (``n`` rows sampled with ``seed``).
    template : str
        With a DataFrame: the prompt template with ``{column}`` fields.
    expected : str, optional
        With a DataFrame: the column holding the right answer; adds an accuracy
        row (the final answer, stripped and case-folded, equals it).
    reasoning_budget : int or None, optional
        The reasoning budget of every run (default: the setting).
    budgets : list of int or None, optional
        Compare these reasoning budgets too (``None``: no budget): one row per effort and
        budget, e.g. ``budgets=[None, 256, 1024]``, to choose both for a long job.
    examples : DataFrame or list of (input, answer) pairs, optional
        With a DataFrame: worked examples ahead of every row, as ``df.gptoss.map`` takes
        them, so that the sweep measures the prompts the map will send.
    """
    session = current()
    for effort in efforts:
        if effort not in EFFORTS:
            raise ValueError(f"efforts must be among low, medium, high, not {effort!r}")
    if isinstance(source, pd.DataFrame):
        if template is None:
            raise ValueError("with a DataFrame, give the template, e.g. 'Classify: {text}'")
        frame = source.sample(n=min(n, len(source)), random_state=seed) \
            if len(source) > n else source
        for name in tmpl.fields(template):
            if name not in frame.columns:
                raise tmpl.TemplateError(tmpl.missing_message(
                    name, [str(c) for c in frame.columns], "column"))
        if expected is not None and expected not in frame.columns:
            raise ValueError(f"expected={expected!r} is not a column")
        prompts = [tmpl.render(template, tmpl.namespace_lookup(dict(row)))
                   for _, row in frame.iterrows()]
        history = examples_to_turns(template, examples)
        answers = list(frame[expected]) if expected is not None else None
        seeds = [seed] * len(prompts)
        label = f"{len(prompts)} rows"
    else:
        if examples is not None:
            raise ValueError("examples go with a DataFrame and its template; for one prompt, "
                             "write them into the prompt")
        prompts = [str(source)] * repeats
        history = ()
        answers = None
        seeds = [seed + i for i in range(repeats)]
        label = f"one prompt x {repeats} samples"

    rows = []
    replies: dict[str, list[Reply]] = {}
    labels = []
    runs = [(effort, b) for effort in efforts
            for b in (budgets if budgets is not None else [reasoning_budget])]
    for effort, budget in runs:
        options = Options.resolve(effort, max_tokens, temperature, None, seed, instructions,
                                  budget)
        key = effort if budgets is None else (
            f"{effort}, {'no budget' if budget is None else f'budget {budget}'}")
        labels.append(key)
        base = options.sampling()
        samplings = [replace(base, seed=s) for s in seeds]
        ids = [options.render(p, history) for p in prompts]
        t0 = time.perf_counter()
        completions = session.engine.generate(ids, samplings)
        wall = time.perf_counter() - t0
        out = [make_reply(session, options, s, c, prompt_ids=i, prompt=p, history=history)
               for c, s, i, p in zip(completions, samplings, ids, prompts, strict=True)]
        replies[key] = out
        row: dict[str, Any] = {
            "n": len(out),
            "median latency s": _median([r.latency_s for r in out]),
            "median reasoning tokens": _median([r.analysis_tokens for r in out]),
            "median answer tokens": _median([r.completion_tokens - r.analysis_tokens
                                             for r in out]),
            "truncated": sum(r.truncated for r in out),
            "reasoning cut": sum(r.reasoning_cut for r in out),
            "batch s": round(wall, 3),
            "rows per s": round(len(out) / wall, 2) if wall > 0 else float("nan"),
        }
        if answers is not None:
            right = sum(str(r.final).strip().casefold() == str(a).strip().casefold()
                        for r, a in zip(out, answers, strict=True))
            row["accuracy"] = right / len(out) if out else float("nan")
        rows.append(row)
    name = "effort" if budgets is None else "effort, reasoning budget"
    table = pd.DataFrame(rows, index=pd.Index(labels, name=name))
    return EffortComparison(table, replies, label)
