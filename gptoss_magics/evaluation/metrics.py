"""How an answer is marked against the expected one.

``metric=`` of :func:`gptoss_magics.evaluate` (and of a :class:`Cascade`) is one of:

* ``"exact"``: the answer equals the expected value after normalising both (surrounding
  space and a trailing full stop dropped, inner runs of space made one, case folded);
  schema answers (JSON data) must equal the expected dict (or its JSON text);
* ``"choices"``: with ``choices=[...]``, the label equals the expected label (case
  folded); every expected value must be one of the choices;
* ``"numeric"``: the number in the answer is within ``tolerance`` of the expected number
  (``|answer - expected| <= tolerance``; the last number in a text answer is read);
* a Python callable ``fn(answer, expected)`` returning True/False or a score in [0, 1];
* ``"judge"``: the loaded model marks each answer against the expected one with a
  ``rubric``, answering under ``choices=["correct", "incorrect"]``
  (see :mod:`gptoss_magics.evaluation.judge`).

A row without an answer (failed, cut off by ``max_tokens``, not sent) scores 0.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOptionError

KINDS = ("exact", "choices", "numeric", "judge")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def normalise(value: Any) -> str:
    """The text compared by the exact-match metric."""
    text = " ".join(str(value).split()).casefold()
    return text.rstrip(".").strip()


def number(value: Any) -> float | None:
    """``value`` as a number: a number itself, a numeric text (commas allowed), or the
    last number written in a text; None when there is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(float(value)) else None
    text = str(value).replace(",", "").strip().rstrip(".")
    try:
        return float(text)
    except ValueError:
        found = _NUMBER.findall(text)
        return float(found[-1]) if found else None


@dataclass(frozen=True)
class Metric:
    """A resolved metric (see the module docstring)."""

    kind: str
    tolerance: float = 0.0
    fn: Callable[[Any, Any], Any] | None = field(default=None, compare=False)
    rubric: str | None = None
    judge_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A short name for tables and records."""
        if self.kind == "callable":
            return getattr(self.fn, "__qualname__", None) or repr(self.fn)
        if self.kind == "numeric":
            return f"numeric (tolerance {self.tolerance:g})"
        return self.kind

    def describe(self) -> dict[str, Any]:
        """The metric as plain data, for the evaluation record."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.kind == "numeric":
            out["tolerance"] = self.tolerance
        if self.kind == "callable":
            out["module"] = getattr(self.fn, "__module__", None)
        if self.kind == "judge":
            out["rubric"] = self.rubric
            out["judge_options"] = dict(self.judge_options)
        return out

    def mark(self, answer: Any, expected: Any) -> float:
        """The score of one answer (not for the judge, which marks a batch)."""
        if answer is None:
            return 0.0
        if self.kind == "callable":
            return _callable_score(self.fn, answer, expected)
        if self.kind == "numeric":
            got, want = number(answer), number(expected)
            return float(got is not None and want is not None and
                         abs(got - want) <= self.tolerance)
        if isinstance(answer, (dict, list)):
            return float(answer == _as_json(expected))
        return float(normalise(answer) == normalise(expected))


def _as_json(expected: Any) -> Any:
    if isinstance(expected, str):
        try:
            return json.loads(expected)
        except ValueError:
            return expected
    return expected


def _callable_score(fn: Any, answer: Any, expected: Any) -> float:
    value = fn(answer, expected)
    if isinstance(value, bool):
        return float(value)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"the metric must return True/False or a number in [0, 1], "
                                 f"not {value!r:.60}") from None
    if not 0.0 <= score <= 1.0:
        raise InvalidOptionError(f"the metric must return a score in [0, 1], not {score!r}")
    return score


def resolve_metric(metric: Any, *, choices: Sequence[str] | None, tolerance: Any = None,
                   rubric: Any = None, judge_options: Any = None) -> Metric:
    """Check ``metric`` and its parameters (InvalidOptionError naming what is wrong).
    ``None`` means ``"choices"`` with choices, else ``"exact"``."""
    if metric is None:
        metric = "choices" if choices else "exact"
    if callable(metric) and not isinstance(metric, str):
        return Metric("callable", fn=metric)
    if metric not in KINDS:
        raise InvalidOptionError(f"metric must be 'exact', 'choices', 'numeric', 'judge' or a "
                                 f"function (answer, expected) -> score, not {metric!r:.60}")
    if metric == "choices" and not choices:
        raise InvalidOptionError("metric='choices' needs choices=[...] (the labels)")
    if metric == "numeric":
        tol = 0.0 if tolerance is None else tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or \
                not math.isfinite(tol) or tol < 0:
            raise InvalidOptionError(f"tolerance must be a number, 0 or more, not {tol!r:.40}")
        return Metric("numeric", tolerance=float(tol))
    if metric == "judge":
        if not isinstance(rubric, str) or not rubric.strip():
            raise InvalidOptionError("metric='judge' needs rubric='...': what makes an answer "
                                     "correct, in words")
        if judge_options is not None and not isinstance(judge_options, Mapping):
            raise InvalidOptionError("judge_options must be a dict of prompt options, e.g. "
                                     "{'effort': 'low'}")
        return Metric("judge", rubric=rubric, judge_options=dict(judge_options or {}))
    return Metric(str(metric))


def check_expected(metric: Metric, expected: Sequence[Any],
                   choices: Sequence[str] | None) -> None:
    """Refuse expected values the metric cannot mark (before anything runs)."""
    if metric.kind == "choices" and choices:
        known = {normalise(c) for c in choices}
        bad = [e for e in expected if normalise(e) not in known]
        if bad:
            raise InvalidOptionError(f"expected value {bad[0]!r:.40} is not one of the choices "
                                     f"({', '.join(choices)})")
    if metric.kind == "numeric":
        bad = [e for e in expected if number(e) is None]
        if bad:
            raise InvalidOptionError(f"expected value {bad[0]!r:.40} is not a number "
                                     "(metric='numeric')")
