"""Running a cascade over a DataFrame (``df.gptoss.map(..., cascade=...)``), and its plan.

Each level is one map over the rows still unanswered, so rows are batched and cached as
in any map. The result has the shape the same map without a cascade returns, and
``attrs["gptoss"]["cascade"]`` records the levels, thresholds, rows per level, tokens
spent against the estimated cost of running every row at the last level, and the
estimated accuracy with its interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import audit
from ..errors import GptOssWarning, InvalidOptionError
from ..frame.mapper import RowMapper
from ..frame.result import MapSummary, RowResult, add_columns, answers
from ..options import MAP_OPTIONS, check_names
from ..session import current
from ..views import html_table, text_table
from .runner import make_mapper
from .stats import json_safe
from .thresholds import Calibration

if TYPE_CHECKING:
    from .cascade import Cascade

RULE = ("each threshold is the lowest answer confidence for which (rows kept at the cheaper "
        "levels x the lower end of their Wilson interval of accuracy + the last level's "
        "correct answers on the rows passed on) / calibration rows >= target_accuracy")
#: options that change no answer: left out of the calibration's key
_NOT_ANSWERS = ("progress", "reasoning", "usage", "on_error", "confidence")


def _calibration(cascade: Cascade, template: str, options: Mapping[str, Any]
                 ) -> Calibration | None:
    calibration = cascade.calibrate(template, **{k: v for k, v in options.items()
                                                 if k not in _NOT_ANSWERS})
    if calibration is not None and not calibration.meets_target:
        warnings.warn(f"the cascade cannot meet target_accuracy {cascade.target:g} on its "
                      f"{len(calibration.runs[0].correct)} calibration rows (its accuracy "
                      f"bound is {calibration.bound:.3f}): rows go on to the last level "
                      "wherever that helps; more calibration rows narrow the bound",
                      GptOssWarning, stacklevel=4)
    return calibration


def _confident(row: RowResult, threshold: float | None) -> bool:
    if threshold is None or row.good_value is None or row.answer_logprob is None:
        return False
    return math.exp(row.answer_logprob) >= threshold


def _run_levels(cascade: Cascade, frame: pd.DataFrame, template: str,
                options: Mapping[str, Any], thresholds: Sequence[float | None]
                ) -> tuple[list[RowResult | None], list[int], list[RowMapper]]:
    """Run the levels; each row's result, the level that answered it, the maps."""
    base = {**options, "confidence": True}
    merged: list[RowResult | None] = [None] * len(frame)
    answered_at = [0] * len(frame)
    positions = list(range(len(frame)))
    mappers: list[RowMapper] = []
    for j, level in enumerate(cascade.levels):
        mapper = make_mapper(frame.iloc[positions], template, base, level.values)
        mapper.run()
        mappers.append(mapper)
        threshold = thresholds[j] if j < len(thresholds) else None
        onward = []
        for pos, row in zip(positions, mapper.per_row, strict=True):
            merged[pos], answered_at[pos] = row, j
            if j < len(cascade.levels) - 1 and row is not None and \
                    not _confident(row, threshold):
                onward.append(pos)
        positions = onward
        if not positions:
            break
    return merged, answered_at, mappers


def _summary(n: int, merged: Sequence[RowResult | None], mappers: Sequence[RowMapper]
             ) -> dict[str, Any]:
    s = MapSummary(rows=n, missing=sum(r is None for r in merged),
                   unique_prompts=mappers[0].summary.unique_prompts)
    s.count(merged, {})
    for m in mappers:
        s.cached += m.summary.cached
        s.generated += m.summary.generated
        s.retried += m.summary.retried
        s.prompt_tokens += m.summary.prompt_tokens
        s.completion_tokens += m.summary.completion_tokens
        s.seconds = round(s.seconds + m.summary.seconds, 3)
    return dict(s.__dict__)


def _spent(mappers: Sequence[RowMapper]) -> tuple[int, int]:
    rows = [r for m in mappers for r in m.per_row if r is not None]
    return (sum(r.analysis_tokens or 0 for r in rows), sum(r.completion_tokens for r in rows))


def cascade_record(cascade: Cascade, calibration: Calibration | None,
                   thresholds: Sequence[float | None], frame: pd.DataFrame,
                   merged: Sequence[RowResult | None], answered_at: Sequence[int],
                   mappers: Sequence[RowMapper]) -> dict[str, Any]:
    """``attrs["gptoss"]["cascade"]``."""
    labels = [lv.label for lv in cascade.levels]
    sent = [j for j, r in zip(answered_at, merged, strict=True) if r is not None]
    reasoning, completion = _spent(mappers)
    tokens: dict[str, Any] = {"reasoning": reasoning, "completion": completion}
    out: dict[str, Any] = {
        "levels": labels, "level_options": [dict(lv.values) for lv in cascade.levels],
        "thresholds": list(thresholds), "target_accuracy": cascade.target,
        "confidence_level": cascade.confidence_level, "rule": RULE,
        "rows_per_level": {label: sent.count(j) for j, label in enumerate(labels)},
        "rows_run_per_level": {labels[j]: len(m.frame) for j, m in enumerate(mappers)},
        "escalated_rows": [label for label, j, r in zip(frame.index, answered_at, merged,
                                                        strict=True)
                           if r is not None and j > 0],
        "tokens": tokens}
    if calibration is not None:
        est = calibration.estimate
        top_r = est["all_top_reasoning_tokens_per_row"] * len(sent)
        tokens.update(all_top_reasoning_estimate=round(top_r),
                      all_top_completion_estimate=round(
                          est["all_top_completion_tokens_per_row"] * len(sent)),
                      reasoning_saving=top_r / reasoning if reasoning else math.inf,
                      estimated_from=f"{est['calibration_rows']} calibration rows at "
                                     f"{labels[-1]}")
        out.update(estimated_accuracy=est["accuracy"], interval=est["interval"],
                   accuracy_bound=calibration.bound, meets_target=calibration.meets_target,
                   calibration={k: est[k] for k in ("calibration_rows", "accuracy_per_level",
                                                    "share_per_level")})
    return out


def run_cascade(cascade: Cascade, frame: pd.DataFrame, template: str,
                options: Mapping[str, Any]) -> pd.Series | pd.DataFrame:
    """``df.gptoss.map(template, cascade=cascade, **options)``."""
    check_names(options, MAP_OPTIONS)
    given = dict(options)
    cascade.check(frame, template, given)
    audit.check_writable()
    current()
    calibration = _calibration(cascade, template, given)
    thresholds = cascade.thresholds_for(calibration)
    merged, answered_at, mappers = _run_levels(cascade, frame, template, given, thresholds)
    first = mappers[0]
    index = frame.index
    out = add_columns(answers(index, merged, first.options.constraint), index, merged,
                      usage=first.spec.usage, confidence=bool(given.get("confidence")),
                      reasoning=first.spec.reasoning)
    info = first.provenance(merged)
    info["summary"] = _summary(len(frame), merged, mappers)
    info["cascade"] = json_safe(cascade_record(cascade, calibration, thresholds, frame,
                                               merged, answered_at, mappers))
    out.attrs["gptoss"] = info
    first.write_audit({"kind": "map", "run": first.run_id, "interrupted": False, **info})
    _warn(info["summary"])
    return out


def _warn(s: Mapping[str, Any]) -> None:
    problems = [f"{s[k]} of {s['rows']} rows {what}" for k, what in (
        ("truncated", "hit max_tokens"), ("errors", "failed (see the error column)"),
        ("missing", "had missing values and were not sent (<NA>)")) if s.get(k)]
    if problems:
        warnings.warn("; ".join(problems), GptOssWarning, stacklevel=4)


@dataclass
class CascadePlan:
    """What a cascade is expected to do on a DataFrame, from its calibration sample."""

    rows: int
    levels: list[str]
    thresholds: list[float | None]
    estimate: dict[str, Any]
    bound: float
    target: float

    @property
    def rows_per_level(self) -> dict[str, float]:
        """The expected rows answered at each level."""
        return {k: v * self.rows for k, v in self.estimate["share_per_level"].items()}

    @property
    def saving(self) -> float:
        """Reasoning tokens of every row at the last level / of the cascade."""
        return float(self.estimate["reasoning_saving"])

    def _rows(self) -> list[tuple[str, str]]:
        e = self.estimate
        low, high = e["interval"]
        shown = ", ".join(f"{k} {v:,.0f}" for k, v in self.rows_per_level.items())
        return [
            ("rows", f"{self.rows:,} (calibration: {e['calibration_rows']:,} rows)"),
            ("levels", " -> ".join(self.levels)),
            ("thresholds", ", ".join("accept none" if t is None else f"{t:.4g}"
                                     for t in self.thresholds)),
            ("rows per level (expected)", shown),
            ("reasoning tokens per row", f"{e['reasoning_tokens_per_row']:,.1f} against "
                                         f"{e['all_top_reasoning_tokens_per_row']:,.1f} all at "
                                         f"{self.levels[-1]} ({self.saving:.2f}x fewer)"),
            ("estimated accuracy", f"{e['accuracy']:.3f} (95% {low:.3f}-{high:.3f}); bound "
                                   f"{self.bound:.3f} against target {self.target:g}"),
        ]

    def __repr__(self) -> str:
        return text_table(self._rows())

    def _repr_html_(self) -> str:
        return html_table(self._rows(), "gptoss-cascade-plan")


def plan(cascade: Cascade, frame: pd.DataFrame, template: str, options: Mapping[str, Any]
         ) -> CascadePlan:
    """The cascade's plan for ``frame`` (runs the calibration rows only)."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidOptionError("plan takes the DataFrame the cascade will map")
    check_names(options, MAP_OPTIONS)
    if cascade.calibrate_on is None:
        raise InvalidOptionError("a plan needs the cascade's calibrate_on rows to estimate "
                                 "from")
    cascade.check(frame, template, options)
    audit.check_writable()
    current()
    calibration = _calibration(cascade, template, options)
    assert calibration is not None
    return CascadePlan(len(frame), [lv.label for lv in cascade.levels],
                       list(calibration.thresholds), calibration.estimate, calibration.bound,
                       cascade.target)
