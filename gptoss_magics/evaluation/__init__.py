"""Evaluate on your own rows, and spend high effort only where it pays.

* ``evaluate``: :func:`evaluate` (``gm.evaluate``), a grid of settings over labelled rows,
  one map per setting; :func:`reproduce` (``gm.reproduce``) also runs a saved record;
* ``result``: :class:`EvaluationResult` (tables, chart, record, pairwise comparison);
* ``metrics``: how answers are marked; ``judge``: the loaded model as a judge;
* ``stats``: outcomes, Wilson intervals and the per-setting figures; ``chart``: the chart;
* ``record`` and ``reproduction``: the JSON evaluation record, and running it again;
* ``cascade``: :class:`Cascade` (``df.gptoss.map(..., cascade=...)``), with
  ``thresholds`` (learning them) and ``cascade_run`` (running one, and its plan).
"""

from __future__ import annotations

from .cascade import Cascade
from .cascade_run import CascadePlan
from .evaluate import evaluate, reproduce
from .result import EvaluationReproduction, EvaluationResult, Pairwise

__all__ = ["Cascade", "CascadePlan", "EvaluationReproduction", "EvaluationResult", "Pairwise",
           "evaluate", "reproduce"]
