"""The effort cascade: every row at a cheap level, only the unsure ones at a dearer one.

    cascade = gm.Cascade(levels=["low", "high"], target_accuracy=0.95,
                         calibrate_on=labelled_df, expected="label")
    cascade.plan(df, "Classify: {text}", choices=[...])     # the saving, before running
    df.gptoss.map("Classify: {text}", choices=[...], cascade=cascade)

A level is an effort (``"low"``), a reasoning budget (``64``: the map's effort with that
budget) or a dict of options (``{"effort": "high", "reasoning_budget": 256}``). Every
row runs at the first level with ``confidence=True``; a row whose answer confidence (the
model's probability of its answer: the label for ``choices``, the JSON for a schema,
the text for a regex or a plain answer) is below that level's threshold goes on to the
next level; the last level answers what is left.

**How the thresholds are learnt.** The labelled sample is run at every level. Going
through the levels in order, each threshold is the lowest confidence ``t`` (so the most
rows stay at the cheap level) for which the *accuracy bound*

    ( sum over the levels so far of  accepted_j x L_j  +  correct answers of the last
      level on the rows not yet accepted ) / calibration rows   >=  target_accuracy

holds, where ``L_j`` is the lower end of the two-sided ``confidence_level`` (95%) Wilson
interval of the accuracy among the calibration rows level ``j`` accepts. The rows a
level keeps are charged at a pessimistic accuracy (the Wilson lower bound) instead of
the accuracy seen on a small sample; the rows passed on are charged at what the last
level actually scored on them, which is what running everything at the last level would
give. When no threshold meets the target (the last level itself scores below it), the
one with the highest bound is used and the cascade reports that the target is not met.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import InvalidOptionError
from ..frame.mapper import check_frame
from ..options import check_float
from .cascade_run import CascadePlan, plan
from .metrics import check_expected, resolve_metric
from .runner import make_mapper, run_mapper, score
from .stats import LEVEL, json_safe
from .thresholds import (
    Calibration,
    LevelRun,
    estimate,
    fixed_bound,
    learn_thresholds,
    parse_level,
)


class Cascade:
    """An effort cascade for ``df.gptoss.map(..., cascade=...)``; see the module docstring.

    Parameters
    ----------
    levels : list
        Two or more levels, cheapest first: efforts (``"low"``), reasoning budgets
        (``64``) or dicts of options.
    target_accuracy : float
        The accuracy the cascade must keep, in (0, 1].
    calibrate_on : DataFrame
        Labelled rows (the template's columns and the expected answers), run at every
        level to learn the thresholds (for ``series.gptoss.map``: a ``value`` column).
    expected : str, optional
        The column of ``calibrate_on`` with the right answers (default: ``expected``,
        else ``label``, else ``answer``).
    metric, tolerance : optional
        How an answer is marked (as for :func:`gptoss_magics.evaluate`).
    confidence_level : float
        The level of the Wilson bound used to learn the thresholds (0.95).
    thresholds : list of float, optional
        Fixed thresholds (one per level but the last) instead of learnt ones; with
        ``calibrate_on`` the estimates are still made.
    """

    def __init__(self, levels: Sequence[Any], *, target_accuracy: float = 0.95,
                 calibrate_on: pd.DataFrame | None = None, expected: str | None = None,
                 metric: Any = None, tolerance: float | None = None,
                 confidence_level: float = LEVEL,
                 thresholds: Sequence[float] | None = None) -> None:
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or \
                len(levels) < 2:
            raise InvalidOptionError("levels must list two or more levels, cheapest first, "
                                     f"e.g. ['low', 'high'], not {levels!r:.60}")
        self.levels = [parse_level(x) for x in levels]
        if len({x.label for x in self.levels}) != len(self.levels):
            raise InvalidOptionError("levels must differ from one another")
        self.target = check_float("target_accuracy", target_accuracy, 0.0, 1.0, low_open=True,
                                  accepts="a number in (0, 1]")
        self.confidence_level = check_float("confidence_level", confidence_level, 0.5, 0.999,
                                            accepts="a number from 0.5 to 0.999")
        self.fixed = self._check_thresholds(thresholds)
        if calibrate_on is None and self.fixed is None:
            raise InvalidOptionError("a cascade needs calibrate_on=<labelled DataFrame> to "
                                     "learn its thresholds (or thresholds=[...])")
        if calibrate_on is not None and not isinstance(calibrate_on, pd.DataFrame):
            raise InvalidOptionError("calibrate_on must be a DataFrame of labelled rows")
        self.calibrate_on = calibrate_on
        self.expected = self._expected_column(expected)
        self.metric, self.tolerance = metric, tolerance
        self._calibrations: dict[str, Calibration] = {}

    def _check_thresholds(self, thresholds: Any) -> list[float | None] | None:
        if thresholds is None:
            return None
        if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence) or \
                len(thresholds) != len(self.levels) - 1:
            raise InvalidOptionError(f"thresholds must list {len(self.levels) - 1} "
                                     "confidences (one per level but the last)")
        return [check_float("thresholds", t, 0.0, 1.0, accepts="confidences in [0, 1]")
                for t in thresholds]

    def _expected_column(self, expected: str | None) -> str | None:
        frame = self.calibrate_on
        if frame is None:
            return expected
        if expected is not None:
            if expected not in frame.columns:
                raise InvalidOptionError(f"expected={expected!r} is not a column of "
                                         "calibrate_on")
            return expected
        for name in ("expected", "label", "answer"):
            if name in frame.columns:
                return name
        raise InvalidOptionError("calibrate_on has no 'expected', 'label' or 'answer' column: "
                                 "name its column of right answers with expected='...'")

    def __repr__(self) -> str:
        return (f"Cascade(levels={[x.label for x in self.levels]}, target_accuracy="
                f"{self.target}, calibration rows="
                f"{None if self.calibrate_on is None else len(self.calibrate_on)})")

    # ------------------------------------------------------------------ calibration
    def calibrate(self, template: str, **options: Any) -> Calibration | None:
        """Run the calibration rows at every level (once per template and options) and
        learn the thresholds; None without calibration rows (fixed thresholds)."""
        if self.calibrate_on is None:
            return None
        key = json.dumps([template, json_safe(options)], sort_keys=True, default=str)
        if key not in self._calibrations:
            self._calibrations[key] = self._calibrate(template, options)
        return self._calibrations[key]

    def check(self, frame: pd.DataFrame, template: str, options: Mapping[str, Any]) -> None:
        """Check every level's options against ``frame`` before anything runs."""
        for lv in self.levels:
            make_mapper(frame, template, {**options, "confidence": True}, lv.values)
        if self.calibrate_on is not None:
            check_frame(self.calibrate_on, template)

    def _calibrate(self, template: str, options: Mapping[str, Any]) -> Calibration:
        frame = self.calibrate_on
        assert frame is not None and self.expected is not None
        if len(frame) == 0:
            raise InvalidOptionError("calibrate_on has no rows")
        expected = list(frame[self.expected])
        metric = resolve_metric(self.metric, choices=options.get("choices"),
                                tolerance=self.tolerance)
        check_expected(metric, expected, options.get("choices"))
        base = {**options, "confidence": True, "progress": False}
        mappers = [make_mapper(frame, template, base, lv.values) for lv in self.levels]
        runs = []
        for lv, mapper in zip(self.levels, mappers, strict=True):
            outcomes = run_mapper(mapper)
            score(metric, outcomes, expected, [p or "" for p in mapper.prompts()])
            runs.append(LevelRun(lv.label, [o.score or 0.0 for o in outcomes],
                                 [o.confidence or 0.0 for o in outcomes],
                                 [o.reasoning_tokens for o in outcomes],
                                 [o.completion_tokens for o in outcomes]))
        if self.fixed is not None:
            thresholds = list(self.fixed)
            bound = fixed_bound(runs, thresholds, self.confidence_level)
        else:
            thresholds, bound = learn_thresholds(runs, self.target, self.confidence_level)
        return Calibration(runs, thresholds, bound, self.target, self.confidence_level,
                           estimate(runs, thresholds, bound, self.confidence_level))

    def thresholds_for(self, calibration: Calibration | None) -> list[float | None]:
        """The thresholds in use: learnt, or fixed."""
        if calibration is not None:
            return list(calibration.thresholds)
        assert self.fixed is not None
        return list(self.fixed)

    def plan(self, frame: pd.DataFrame, template: str, **options: Any) -> CascadePlan:
        """Estimate, from the calibration sample, what the cascade will save on
        ``frame`` (runs the calibration rows at every level, none of ``frame``'s)."""
        return plan(self, frame, template, options)
