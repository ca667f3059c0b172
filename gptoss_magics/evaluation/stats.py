"""Per-row outcomes of an evaluation and the figures summarised from them.

An :class:`Outcome` is what one row produced under one setting (its answer, its score
under the metric, its tokens, latency and flags); :func:`summarise` turns a setting's
outcomes into the row of the evaluation table: accuracy with a Wilson interval, median
and p95 latency, tokens per row, engine-seconds per 1,000 rows, truncation and
reasoning-cut rates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..frame.result import RowResult, row_error

#: the confidence level of every interval this package reports
LEVEL = 0.95


def z_value(level: float = LEVEL) -> float:
    """The two-sided normal quantile of a confidence ``level`` (1.96 for 0.95)."""
    return statistics.NormalDist().inv_cdf(1 - (1 - level) / 2)


def wilson(successes: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``successes`` of ``n``; a fractional
    count is allowed, for scores between 0 and 1). ``(nan, nan)`` when ``n`` is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    z = z_value(level)
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation); nan for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


@dataclass
class Outcome:
    """What one row produced under one setting.

    ``answer`` is the row's value (the label, the text, the schema's JSON data; None
    when the row failed); ``score`` its mark under the metric (1 right, 0 wrong,
    in between for a graded metric; None until scored); ``confidence`` the model's
    probability of its answer (when asked for)."""

    position: int
    row: Any
    answer: Any
    final: str | None
    score: float | None = None
    confidence: float | None = None
    latency_s: float | None = None
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = False
    reasoning_cut: bool = False
    error: str | None = None
    cached: bool = False
    note: str | None = None  # e.g. the judge's verdict

    def to_json(self) -> dict[str, Any]:
        """Plain data (the row label and the answer made JSON-safe)."""
        out = asdict(self)
        out["row"] = json_safe(self.row)
        out["answer"] = json_safe(self.answer)
        return out


def json_safe(value: Any) -> Any:
    """``value`` as JSON data: containers kept, numpy/pandas scalars made plain, other
    objects written as their text; NaN and missing values become None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "model_dump"):
        return json_safe(value.model_dump(mode="json"))
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def outcome_of(position: int, label: Any, row: RowResult | None,
               with_confidence: bool) -> Outcome:
    """The outcome of a map row (None: the row had missing values and was not sent)."""
    if row is None:
        return Outcome(position, label, None, None, error="missing values: not sent")
    reasoning = row.analysis_tokens or 0
    confidence = None
    if with_confidence and row.good_value is not None and row.answer_logprob is not None:
        confidence = math.exp(row.answer_logprob)
    return Outcome(
        position, label, row.good_value, row.final, confidence=confidence,
        latency_s=row.latency_s, reasoning_tokens=reasoning,
        answer_tokens=row.completion_tokens - reasoning,
        completion_tokens=row.completion_tokens, truncated=row.truncated,
        reasoning_cut=row.reasoning_cut, error=row_error(row), cached=row.cached)


def summarise(outcomes: Sequence[Outcome], seconds: float | None = None,
              generated: int | None = None) -> dict[str, Any]:
    """One row of the evaluation table for a setting's ``outcomes``.

    ``seconds`` is the wall time of the setting's run and ``generated`` how many rows it
    generated (the rest came from the cache): engine-seconds per 1,000 rows is
    ``seconds / generated * 1000`` (nan when every row came from the cache)."""
    n = len(outcomes)
    scored = [o.score for o in outcomes if o.score is not None]
    right = float(sum(scored))
    low, high = wilson(right, len(scored))
    latencies = [o.latency_s for o in outcomes if o.latency_s is not None]
    per_k = float("nan")
    if seconds is not None and generated:
        per_k = seconds / generated * 1000
    return {
        "n": n,
        "accuracy": right / len(scored) if scored else float("nan"),
        "accuracy 95% low": low,
        "accuracy 95% high": high,
        "median latency s": _median(latencies),
        "p95 latency s": percentile(latencies, 95),
        "reasoning tokens per row": _mean([o.reasoning_tokens for o in outcomes]),
        "answer tokens per row": _mean([o.answer_tokens for o in outcomes]),
        "engine s per 1k rows": per_k,
        "truncation rate": sum(o.truncated for o in outcomes) / n if n else float("nan"),
        "reasoning cut rate": sum(o.reasoning_cut for o in outcomes) / n if n
        else float("nan"),
        "errors": sum(o.error is not None for o in outcomes),
        "cached rows": sum(o.cached for o in outcomes),
    }
