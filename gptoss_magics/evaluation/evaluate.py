"""``gm.evaluate``: run your own evaluation on your own rows, over a grid of settings.

    result = gm.evaluate(df, "Classify: {text}", expected="label",
                         grid={"effort": ["low", "high"], "reasoning_budget": [None, 64]},
                         choices=["positive", "negative", "neutral"])
    result                      # table, chart (accuracy against tokens per row)
    result.rows                 # per row, the answers side by side
    result.save("eval.json")    # one self-contained record; gm.reproduce("eval.json")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import audit
from ..errors import InvalidOptionError
from ..frame.mapper import check_frame
from ..options import MAP_OPTIONS, check_names, with_options
from ..prompting import Reproduction
from ..prompting import reproduce as reproduce_reply
from ..session import current
from .judge import judge_options as check_judge_options
from .metrics import check_expected, resolve_metric
from .record import KIND, data_block
from .result import EvaluationReproduction, EvaluationResult
from .runner import Setting, build_record, expand_grid, make_mapper, run_setting

#: the options evaluate takes: every map option (a cascade is not evaluated this way)
EVALUATE_OPTIONS = tuple(n for n in MAP_OPTIONS if n != "cascade")


def _check_data(data: Any, template: Any, expected: Any) -> list[str]:
    if not isinstance(data, pd.DataFrame):
        raise InvalidOptionError(f"evaluate takes a DataFrame of labelled rows, not "
                                 f"{type(data).__name__}")
    if len(data) == 0:
        raise InvalidOptionError("the DataFrame has no rows to evaluate")
    fields = check_frame(data, template)
    if not isinstance(expected, str) or expected not in data.columns:
        raise InvalidOptionError(f"expected={expected!r:.40} is not a column: name the column "
                                 "holding the right answers")
    return fields


@with_options(EVALUATE_OPTIONS)
def evaluate(data: pd.DataFrame, template: str, *, expected: str, grid: Any = None,
             metric: Any = None, tolerance: float | None = None, rubric: str | None = None,
             judge_options: Mapping[str, Any] | None = None,
             **options: Any) -> EvaluationResult:
    """Run ``template`` over the labelled rows of ``data`` under each setting of ``grid``
    and mark every answer against the ``expected`` column.

    Parameters
    ----------
    data : DataFrame
        The rows, with the template's columns and the expected answers.
    template : str
        The prompt, with ``{column}`` fields (as for ``df.gptoss.map``).
    expected : str
        The column holding the right answers.
    grid : dict, optional
        Options to vary, each with a list of values; every combination is one setting,
        e.g. ``{"effort": ["low", "high"], "reasoning_budget": [None, 64]}``. Without a
        grid: one setting, the options as given.
    metric : str or callable, optional
        ``"exact"`` (normalised exact match; the default), ``"choices"`` (the default with
        ``choices``), ``"numeric"`` (within ``tolerance``), ``"judge"`` (the loaded model
        marks answers by ``rubric``, with ``judge_options``), or ``fn(answer, expected)``
        returning True/False or a score in [0, 1]. See
        :mod:`gptoss_magics.evaluation.metrics`.

    Each setting runs as one ``df.gptoss.map`` (batched, deduplicated, cached: pass
    ``cache=False`` to time every row afresh). Returns an :class:`EvaluationResult`:
    ``table`` (accuracy with a 95% Wilson interval, median and p95 latency, tokens per
    row, engine-seconds per 1,000 rows, truncation and reasoning-cut rates), ``rows``
    (the answers side by side), a chart, ``pairwise(a, b, rubric=...)``, and
    ``save(path)`` for a record that :func:`gptoss_magics.reproduce` runs again.
    """
    check_names(options, EVALUATE_OPTIONS)
    fields = _check_data(data, template, expected)
    settings = expand_grid(grid, options)
    m = resolve_metric(metric, choices=options.get("choices"), tolerance=tolerance,
                       rubric=rubric, judge_options=judge_options)
    answers = list(data[expected])
    check_expected(m, answers, options.get("choices"))
    if m.kind == "judge":
        check_judge_options(m.judge_options)
    mappers = [make_mapper(data, template, options, s.values) for s in settings]
    if grid is None:
        settings = [Setting(mappers[0].options.effort, {})]
    audit.check_writable()
    session = current()
    blocks = [run_setting(s, mapper, m, answers)
              for s, mapper in zip(settings, mappers, strict=True)]
    return EvaluationResult(build_record(
        data=data_block(data, fields, answers), template=template, expected_column=expected,
        metric=m, grid=grid, options=options, blocks=blocks, session=session))


def reproduce(target: Any, **kwargs: Any) -> Reproduction | EvaluationReproduction:
    """Run a saved answer, or a saved evaluation, again and say whether it matches.

    ``target`` is a :class:`Reply`, ``reply.to_dict()`` or a saved reply's JSON (see
    :func:`gptoss_magics.prompting.reproduce`: one answer, compared token by token), or
    an evaluation: an :class:`EvaluationResult`, its record (``result.record``) or the
    path of the file ``result.save(path)`` wrote. An evaluation runs every setting again
    with the recorded rows, options and seeds (cache off) and compares every row; one
    marked by a Python function needs it again: ``reproduce(path, metric=fn)``.
    """
    if isinstance(target, EvaluationResult):
        return target.reproduce(**kwargs)
    if isinstance(target, (str, os.PathLike)):
        path = Path(target).expanduser()
        if not path.is_file():
            raise InvalidOptionError(
                "reproduce takes a Reply, a saved reply (dict), an evaluation result or the "
                f"path of a saved evaluation record; there is no file {str(target)!r:.80}")
        return EvaluationResult.load(path).reproduce(**kwargs)
    if isinstance(target, Mapping) and target.get("kind") == KIND:
        return EvaluationResult(target).reproduce(**kwargs)
    if kwargs:
        raise InvalidOptionError(f"{', '.join(kwargs)} goes with an evaluation, not a reply")
    return reproduce_reply(target)
