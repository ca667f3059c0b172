"""What :func:`gptoss_magics.evaluate` returns: the tidy tables, the chart and the record."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InvalidOptionError
from . import chart
from . import record as rec
from .judge import compare_pair
from .reproduction import differences, rerun, same_data
from .stats import json_safe

#: the columns of ``table`` shown first in a notebook
SHOWN = ("n", "accuracy", "accuracy 95% low", "accuracy 95% high", "median latency s",
         "p95 latency s", "reasoning tokens per row", "answer tokens per row",
         "engine s per 1k rows", "truncation rate", "reasoning cut rate", "errors")


class EvaluationResult:
    """An evaluation: per setting figures (:attr:`table`), per row answers side by side
    (:attr:`rows`), every outcome (:attr:`outcomes`), a chart, and the record behind
    them (:attr:`record`, written by :meth:`save`, run again by :meth:`reproduce`)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        rec.check(record)
        self.record: dict[str, Any] = dict(record)

    # ------------------------------------------------------------------ views
    @property
    def settings(self) -> list[str]:
        """The settings' labels, in order."""
        return [str(s["label"]) for s in self.record["settings"]]

    @property
    def table(self) -> pd.DataFrame:
        """One row per setting: n, accuracy with its 95% Wilson interval, median and p95
        latency, reasoning and answer tokens per row, engine-seconds per 1,000 rows
        (rows generated in this run), truncation and reasoning-cut rates, errors, rows
        served from the cache."""
        rows = [{k: (float("nan") if v is None else v) for k, v in s["summary"].items()}
                for s in self.record["settings"]]
        return pd.DataFrame(rows, index=pd.Index(self.settings, name="setting"))

    @property
    def outcomes(self) -> pd.DataFrame:
        """Every row under every setting, one line each (tidy)."""
        lines = [{"setting": s["label"], **o} for s in self.record["settings"]
                 for o in s["outcomes"]]
        return pd.DataFrame(lines).drop(columns=["position"], errors="ignore")

    @property
    def rows(self) -> pd.DataFrame:
        """Per row, the expected answer and each setting's answer and mark side by side."""
        data = self.record["data"]["rows"]
        out = pd.DataFrame({"expected": [r.get("expected") for r in data]},
                           index=[r.get("row") for r in data])
        for s in self.record["settings"]:
            out[s["label"]] = [o.get("answer") for o in s["outcomes"]]
            out[f"{s['label']} score"] = [o.get("score") for o in s["outcomes"]]
        return out

    def chart(self) -> dict[str, Any]:
        """Accuracy against tokens per row, one point per setting (Vega-Lite v5 spec)."""
        return chart.vegalite(self.table)

    def chart_svg(self) -> str:
        """The same chart as a static SVG."""
        return chart.svg(self.table)

    # ------------------------------------------------------------------ record
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the evaluation record (one self-contained JSON file) to ``path``."""
        return rec.write(self.record, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvaluationResult:
        """The evaluation saved at ``path``."""
        return cls(rec.read(path))

    def reproduce(self, *, metric: Any = None) -> EvaluationReproduction:
        """Run every setting again from the record (cache off) and compare, row by row.
        A record marked by a Python function needs it again as ``metric``."""
        again = EvaluationResult(rerun(self.record, metric))
        return EvaluationReproduction(self, again, same_data(self.record),
                                      _same_weights(self.record, again.record),
                                      differences(self.record, again.record))

    def pairwise(self, a: str, b: str, *, rubric: str, **options: Any) -> Pairwise:
        """Ask the loaded model, row by row, which of settings ``a`` and ``b`` answered
        better (``1``, ``2`` or ``tie`` under ``choices``), with their order swapped on
        every second row to cancel position bias. ``options`` are the judge's prompt
        options (effort low unless given). Kept in the record."""
        blocks = {s["label"]: s for s in self.record["settings"]}
        for name in (a, b):
            if name not in blocks:
                raise InvalidOptionError(f"no setting {name!r}; the settings are "
                                         f"{', '.join(map(repr, blocks))}")
        questions = rec.questions_of(self.record["data"], self.record["template"])
        outcome = compare_pair(questions, [o.get("answer") for o in blocks[a]["outcomes"]],
                               [o.get("answer") for o in blocks[b]["outcomes"]],
                               rubric=rubric, options=options, labels=(a, b))
        outcome = json_safe(outcome)
        self.record.setdefault("pairwise", []).append(outcome)
        return Pairwise(outcome, [r.get("row") for r in self.record["data"]["rows"]])

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        shown = self.table[[c for c in SHOWN if c in self.table]]
        return (f"Evaluation of {len(self.record['data']['rows'])} rows, metric "
                f"{self.record['metric'].get('name')}\n{shown.to_string(float_format='%.3g')}")

    def _repr_html_(self) -> str:
        shown = self.table[[c for c in SHOWN if c in self.table]]
        return (f"<div class='gptoss-evaluation'><b>Evaluation</b> of "
                f"{len(self.record['data']['rows'])} rows, metric "
                f"{html.escape(str(self.record['metric'].get('name')))}"
                f"{shown.to_html(float_format='%.3g')}{self.chart_svg()}</div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> dict[str, Any]:
        return {"text/plain": repr(self), "text/html": self._repr_html_(),
                chart.MIME: self.chart()}


def _same_weights(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return bool(a["provenance"].get("weights_fingerprint") ==
                b["provenance"].get("weights_fingerprint"))


@dataclass
class EvaluationReproduction:
    """The outcome of running an evaluation record again."""

    original: EvaluationResult
    again: EvaluationResult
    same_data: bool
    same_weights: bool
    differences: pd.DataFrame = field(repr=False)

    @property
    def matches(self) -> bool:
        """True when the data is unchanged and every answer and mark is the same."""
        return self.same_data and self.differences.empty

    def __repr__(self) -> str:
        n = len(self.original.record["data"]["rows"])
        verdict = "MATCHES" if self.matches else "DIFFERENT"
        notes = [f"{len(self.original.settings)} settings x {n} rows"]
        if not self.differences.empty:
            notes.append(f"{len(self.differences)} answers differ")
        if not self.same_data:
            notes.append("the data does not match its hash")
        notes.append("same weights" if self.same_weights else "different weights")
        return f"Evaluation reproduction: {verdict} ({', '.join(notes)})"


@dataclass
class Pairwise:
    """A pairwise comparison of two settings by the judge."""

    outcome: dict[str, Any]
    labels: list[Any] = field(repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        """Wins, ties, the win rate of ``a`` with its 95% interval, position bias."""
        return dict(self.outcome["summary"])

    @property
    def rows(self) -> pd.DataFrame:
        """Per row: whether the order was swapped, the judge's verdict, the winner."""
        o = self.outcome
        return pd.DataFrame({"swapped": o["swapped"], "verdict": o["verdicts"],
                             "winner": o["winners"]}, index=self.labels)

    def __repr__(self) -> str:
        s = self.summary

        def num(key: str) -> str:
            return "-" if s.get(key) is None else f"{s[key]:.3g}"

        return (f"Pairwise {s['a']!r} vs {s['b']!r}: {s['a wins']} / {s['b wins']} wins, "
                f"{s['ties']} ties; win rate of {s['a']!r} {num('win rate')} (95% "
                f"{num('win rate 95% low')} to {num('win rate 95% high')}); the first position "
                f"won {num('first position won')} of the decided rows")
