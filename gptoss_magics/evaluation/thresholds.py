"""Learning a cascade's thresholds from a labelled sample, and what they would do.

See :mod:`gptoss_magics.evaluation.cascade` for the rule (and the bound it uses).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOptionError
from .runner import GRID_KEYS, label_of
from .stats import LEVEL, wilson


@dataclass(frozen=True)
class Level:
    """One level of a cascade: its label and the options it sets."""

    label: str
    values: Mapping[str, Any]


def parse_level(level: Any) -> Level:
    """A level from an effort, a reasoning budget or a dict of options."""
    if isinstance(level, str):
        return Level(level, {"effort": level})
    if isinstance(level, int) and not isinstance(level, bool):
        return Level(label_of({"reasoning_budget": level}), {"reasoning_budget": level})
    if isinstance(level, Mapping) and level:
        bad = [k for k in level if k not in GRID_KEYS]
        if bad:
            raise InvalidOptionError(f"a cascade level sets {', '.join(GRID_KEYS)}, not "
                                     f"{bad[0]!r}")
        return Level(label_of(level), dict(level))
    raise InvalidOptionError("a cascade level is an effort ('low'), a reasoning budget (64) "
                             f"or a dict of options, not {level!r:.60}")


@dataclass
class LevelRun:
    """The calibration rows at one level: marks, confidences and tokens."""

    label: str
    correct: list[float]
    confidence: list[float]
    reasoning_tokens: list[int]
    completion_tokens: list[int]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else float("nan")


def _bound(fixed: float, accepted: Sequence[int], rest: Sequence[int], run: LevelRun,
           top: LevelRun, n: int, level: float) -> tuple[float, float]:
    """(the accuracy bound with these rows accepted, their charged correct count)."""
    charged = len(accepted) * wilson(sum(run.correct[i] for i in accepted), len(accepted),
                                     level)[0] if accepted else 0.0
    return (fixed + charged + sum(top.correct[i] for i in rest)) / n, charged


def _threshold(run: LevelRun, top: LevelRun, reaching: list[int], fixed: float, n: int,
               target: float, level: float) -> tuple[float | None, float, list[int]]:
    """The lowest threshold of one level meeting the target (else the best bound):
    (threshold, None: accept none; charged correct count; accepted rows)."""
    candidates: list[float | None] = [*sorted({run.confidence[i] for i in reaching
                                               if run.confidence[i] > 0}), None]
    best: tuple[float, float | None, float, list[int]] | None = None
    for t in candidates:
        accepted = [i for i in reaching if t is not None and run.confidence[i] >= t]
        rest = [i for i in reaching if t is None or run.confidence[i] < t]
        bound, charged = _bound(fixed, accepted, rest, run, top, n, level)
        if bound >= target - 1e-12:
            return t, charged, accepted
        if best is None or bound > best[0]:
            best = (bound, t, charged, accepted)
    assert best is not None
    return best[1], best[2], best[3]


def learn_thresholds(runs: Sequence[LevelRun], target: float, level: float = LEVEL
                     ) -> tuple[list[float | None], float]:
    """The thresholds of every level but the last, and the accuracy bound they reach
    (see the module docstring)."""
    n = len(runs[0].correct)
    top = runs[-1]
    reaching = list(range(n))
    fixed = 0.0
    thresholds: list[float | None] = []
    for run in runs[:-1]:
        t, charged, accepted = _threshold(run, top, reaching, fixed, n, target, level)
        thresholds.append(t)
        fixed += charged
        taken = set(accepted)
        reaching = [i for i in reaching if i not in taken]
    return thresholds, (fixed + sum(top.correct[i] for i in reaching)) / n


def route(runs: Sequence[LevelRun], thresholds: Sequence[float | None]) -> list[int]:
    """The level that answers each calibration row under ``thresholds``."""
    out = []
    for i in range(len(runs[0].correct)):
        answered = len(runs) - 1
        for j, t in enumerate(thresholds):
            if t is not None and runs[j].confidence[i] >= t:
                answered = j
                break
        out.append(answered)
    return out


def estimate(runs: Sequence[LevelRun], thresholds: Sequence[float | None], bound: float,
             level: float = LEVEL) -> dict[str, Any]:
    """What the cascade does on the calibration rows: accuracy with its interval, the
    share of rows per level, tokens per row against running everything at the last
    level."""
    routes = route(runs, thresholds)
    n = len(routes)
    right = sum(runs[r].correct[i] for i, r in enumerate(routes))
    low, high = wilson(right, n, level)
    reasoning = sum(sum(runs[j].reasoning_tokens[i] for j in range(r + 1))
                    for i, r in enumerate(routes)) / n
    completion = sum(sum(runs[j].completion_tokens[i] for j in range(r + 1))
                     for i, r in enumerate(routes)) / n
    top_reasoning = sum(runs[-1].reasoning_tokens) / n
    top_completion = sum(runs[-1].completion_tokens) / n
    return {
        "calibration_rows": n, "accuracy": right / n, "interval": [low, high],
        "accuracy_bound": bound, "share_per_level": {r.label: routes.count(j) / n
                                                     for j, r in enumerate(runs)},
        "accuracy_per_level": {r.label: r.accuracy for r in runs},
        "reasoning_tokens_per_row": reasoning, "completion_tokens_per_row": completion,
        "all_top_reasoning_tokens_per_row": top_reasoning,
        "all_top_completion_tokens_per_row": top_completion,
        "reasoning_saving": top_reasoning / reasoning if reasoning else float("inf"),
    }


@dataclass
class Calibration:
    """The calibration sample run at every level, and the thresholds learnt from it."""

    runs: list[LevelRun]
    thresholds: list[float | None]
    bound: float
    target: float
    level: float
    estimate: dict[str, Any] = field(default_factory=dict)

    @property
    def meets_target(self) -> bool:
        """True when the accuracy bound reaches the target."""
        return self.bound >= self.target - 1e-12


def fixed_bound(runs: Sequence[LevelRun], thresholds: Sequence[float | None],
                 level: float) -> float:
    """The accuracy bound of given thresholds on the calibration rows."""
    n = len(runs[0].correct)
    routes = route(runs, thresholds)
    total = 0.0
    for j in range(len(runs) - 1):
        kept = [i for i, r in enumerate(routes) if r == j]
        if kept:
            total += len(kept) * wilson(sum(runs[j].correct[i] for i in kept), len(kept),
                                        level)[0]
    total += sum(runs[-1].correct[i] for i, r in enumerate(routes) if r == len(runs) - 1)
    return total / n if n else math.nan
