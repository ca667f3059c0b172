"""The effort sweep: the same input at low, medium and high, side by side.

``compare_efforts(prompt)`` samples one prompt several times per effort;
``compare_efforts(df, "Classify: {text}", expected="label")`` runs a sample of
rows. Both show a table and a small chart of latency, reasoning tokens and answer
tokens per effort (and accuracy, when the right answers are known): the numbers
needed to choose an effort for a 10,000-row job.

It is the quick form of :func:`gptoss_magics.evaluate`, built on the same code: a
DataFrame's rows run as one map per effort (:mod:`gptoss_magics.evaluation.runner`), and
every setting's figures come from the same per-row outcomes and marks (normalised exact
match, with a 95% Wilson interval).
"""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from . import audit, harmony
from .errors import InvalidOptionError
from .evaluation.metrics import Metric
from .evaluation.runner import make_mapper, run_mapper
from .evaluation.stats import Outcome, summarise
from .fewshot import examples_to_turns
from .frame.mapper import check_frame
from .frame.result import RowResult
from .options import PROMPT_OPTIONS, UNSET, Options, check_budget, check_int, with_options
from .prompting import make_reply, prompt_sha256
from .reply import Reply
from .session import current
from .settings import EFFORTS

#: the sweep's accuracy: the evaluation's normalised exact match
EXACT = Metric("exact")


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


@with_options(tuple(n for n in PROMPT_OPTIONS if n not in ("effort", "seed")))
def compare_efforts(source: str | pd.DataFrame, template: str | None = None, *,
                    efforts: Sequence[str] = EFFORTS, n: int = 20, repeats: int = 5,
                    expected: str | None = None, seed: int = 0,
                    budgets: Sequence[int | None] | None = None,
                    examples: Any = None,
                    **options: Any) -> EffortComparison:
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
    seed : int
        The first sampling seed (and the seed that samples DataFrame rows).
    budgets : list of int or None, optional
        Compare these reasoning budgets too (``None``: no budget): one row per effort and
        budget, e.g. ``budgets=[None, 256, 1024]``, to choose both for a long job.
    examples : DataFrame or list of (input, answer) pairs, optional
        With a DataFrame: worked examples ahead of every row, as ``df.gptoss.map`` takes
        them, so that the sweep measures the prompts the map will send.
    """
    for name in ("effort", "seed"):
        if name in options:
            raise InvalidOptionError(f"compare_efforts sets {name} itself: use efforts=[...] "
                                     "and seed=N")
    Options.resolve(**options)  # every option checked before anything runs
    seed = check_int("seed", seed, 0, 2**62)
    budgets = _check_budgets(budgets)
    if isinstance(efforts, str) or not efforts:
        raise InvalidOptionError(f"efforts must be a list such as ['low', 'high'], not "
                                 f"{efforts!r}")
    for effort in efforts:
        if effort not in EFFORTS:
            raise InvalidOptionError(f"efforts must be among low, medium, high, not {effort!r}")
    session = current()
    inputs = _inputs(source, template, n=n, repeats=repeats, expected=expected, seed=seed,
                     examples=examples)
    audit.check_writable()
    return _sweep(session, efforts, budgets, options, inputs, seed)


def _check_budgets(budgets: Any) -> list[int | None] | None:
    if budgets is None:
        return None
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or not budgets:
        raise InvalidOptionError("budgets must be a list of reasoning budgets such as "
                                 f"[None, 256, 1024], not {budgets!r:.60}")
    try:
        return [check_budget(b) for b in budgets]
    except InvalidOptionError:
        raise InvalidOptionError("budgets must hold token counts (0 or more) or None, not "
                                 f"{list(budgets)!r:.60}") from None


def _inputs(source: Any, template: str | None, *, n: int, repeats: int,
            expected: str | None, seed: int, examples: Any) -> _Inputs:
    n = check_int("n", n, 1)
    repeats = check_int("repeats", repeats, 1)
    if isinstance(source, pd.DataFrame):
        if template is None:
            raise InvalidOptionError("with a DataFrame, give the template, e.g. "
                                     "'Classify: {text}'")
        check_frame(source, template)
        frame = source.sample(n=min(n, len(source)), random_state=seed) \
            if len(source) > n else source
        if expected is not None and expected not in frame.columns:
            raise InvalidOptionError(f"expected={expected!r} is not a column")
        examples_to_turns(template, examples)  # checked before anything runs
        answers = list(frame[expected]) if expected is not None else None
        return _Inputs(frame=frame, template=template, examples=examples, answers=answers,
                       label=f"{len(frame)} rows")
    if not isinstance(source, str):
        raise InvalidOptionError("compare_efforts takes a prompt (str) or a DataFrame, not "
                                 f"{type(source).__name__}")
    if examples is not None:
        raise InvalidOptionError("examples go with a DataFrame and its template; for one "
                                 "prompt, write them into the prompt")
    return _Inputs(prompt=source, seeds=[seed + i for i in range(repeats)],
                   label=f"one prompt x {repeats} samples")


@dataclass
class _Inputs:
    """What a sweep runs: a DataFrame sample (one map per setting), or one prompt
    sampled with several seeds."""

    label: str
    frame: pd.DataFrame | None = None
    template: str = ""
    examples: Any = None
    answers: list[Any] | None = None
    prompt: str = ""
    seeds: list[int] = field(default_factory=list)


def _sweep(session: Any, efforts: Sequence[str], budgets: Sequence[int | None] | None,
           options: dict[str, Any], inputs: _Inputs, seed: int) -> EffortComparison:
    rows = []
    replies: dict[str, list[Reply]] = {}
    labels = []
    runs = [(effort, b) for effort in efforts for b in (budgets if budgets is not None
                                                        else [options.get("reasoning_budget",
                                                                          UNSET)])]
    for effort, budget in runs:
        given = {**options, "effort": effort, "reasoning_budget": budget}
        key = effort if budgets is None else (
            f"{effort}, {'no budget' if budget is None else f'budget {budget}'}")
        labels.append(key)
        if inputs.frame is not None:
            out, outcomes, wall = _map_rows(session, given, inputs, seed)
        else:
            out, outcomes, wall = _sample_prompt(session, given, inputs)
        if inputs.answers is not None:
            for o, a in zip(outcomes, inputs.answers, strict=True):
                o.score = EXACT.mark(o.answer, a)
        replies[key] = out
        rows.append(_table_row(outcomes, wall))
    name = "effort" if budgets is None else "effort, reasoning budget"
    table = pd.DataFrame(rows, index=pd.Index(labels, name=name))
    return EffortComparison(table, replies, inputs.label)


def _map_rows(session: Any, given: dict[str, Any], inputs: _Inputs, seed: int
              ) -> tuple[list[Reply], list[Outcome], float]:
    """The sample's rows as one map (cache off: the sweep times every row)."""
    assert inputs.frame is not None
    mapper = make_mapper(inputs.frame, inputs.template,
                         {**given, "seed": seed, "examples": inputs.examples, "cache": False,
                          "progress": False}, {})
    outcomes = run_mapper(mapper)
    history = mapper.spec.examples
    prompts = mapper.prompts()
    out = [_reply(session, mapper.options, mapper.sampling, row, prompt, history)
           for row, prompt in zip(mapper.per_row, prompts, strict=True)
           if row is not None and prompt is not None]
    return out, outcomes, mapper.summary.seconds


def _reply(session: Any, opts: Options, sampling: Any, row: RowResult, prompt: str,
           history: Sequence[harmony.Turn]) -> Reply:
    """A map row as a :class:`Reply` (with the provenance :func:`reproduce` needs)."""
    provenance = session.provenance(opts, sampling.as_dict())
    provenance["prompt_sha256"] = prompt_sha256(opts.render(prompt, history))
    if history:
        provenance["history"] = [[t.user, t.final] for t in history]
    confidence = None if row.answer_logprob is None else round(math.exp(row.answer_logprob), 6)
    return Reply(
        final=row.final or "", analysis=row.analysis, finish_reason=row.finish_reason,
        truncated=row.truncated, prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens, latency_s=row.latency_s or 0.0,
        effort=opts.effort, model=session.label, analysis_tokens=row.analysis_tokens or 0,
        reasoning_cut=row.reasoning_cut, confidence=confidence, value=row.value,
        value_error=None if row.engine_error else row.error,
        error=row.error if row.engine_error else None, notice=session.notice, prompt=prompt,
        provenance=provenance)


def _sample_prompt(session: Any, given: dict[str, Any], inputs: _Inputs
                   ) -> tuple[list[Reply], list[Outcome], float]:
    """One prompt sampled once per seed, in one engine batch."""
    opts = Options.resolve(**given)
    base = opts.sampling()
    samplings = [replace(base, seed=s) for s in inputs.seeds]
    ids = opts.render(inputs.prompt)
    t0 = time.perf_counter()
    completions = session.engine.generate([ids] * len(samplings), samplings)
    wall = time.perf_counter() - t0
    out = [make_reply(session, opts, s, c, prompt_ids=ids, prompt=inputs.prompt)
           for c, s in zip(completions, samplings, strict=True)]
    outcomes = [Outcome(i, i, r.value if r.value is not None else r.final, r.final,
                        latency_s=r.latency_s, reasoning_tokens=r.analysis_tokens,
                        answer_tokens=r.completion_tokens - r.analysis_tokens,
                        completion_tokens=r.completion_tokens, truncated=r.truncated,
                        reasoning_cut=r.reasoning_cut, error=r.error)
                for i, r in enumerate(out)]
    return out, outcomes, wall


def _table_row(outcomes: Sequence[Outcome], wall: float) -> dict[str, Any]:
    """The sweep's figures for one setting, from the evaluation's outcomes."""
    figures = summarise(outcomes)
    row: dict[str, Any] = {
        "n": figures["n"],
        "median latency s": figures["median latency s"],
        "median reasoning tokens": _median([o.reasoning_tokens for o in outcomes]),
        "median answer tokens": _median([o.answer_tokens for o in outcomes]),
        "truncated": sum(o.truncated for o in outcomes),
        "reasoning cut": sum(o.reasoning_cut for o in outcomes),
        "batch s": round(wall, 3),
        "rows per s": round(len(outcomes) / wall, 2) if wall > 0 else float("nan"),
    }
    if any(o.score is not None for o in outcomes):
        row.update({k: figures[k] for k in ("accuracy", "accuracy 95% low",
                                            "accuracy 95% high")})
    return row
