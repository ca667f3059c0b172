"""Running an evaluation: the grid of settings, one map per setting, the marks.

Each setting is one ``df.gptoss.map`` (a :class:`~gptoss_magics.frame.RowMapper`) over
the same rows, so rows are batched, deduplicated and cached as in any map, and every
map option applies. The outcome of every row is marked by the metric, and each setting
becomes one block of the evaluation record (see :mod:`.record`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import InvalidOptionError
from ..frame.mapper import RowMapper
from ..session import Session
from .judge import judge_scores
from .metrics import Metric
from .record import FORMAT, KIND, options_record
from .stats import Outcome, json_safe, outcome_of, summarise

#: options a grid may vary
GRID_KEYS = ("effort", "reasoning_budget", "max_tokens", "temperature", "top_p", "seed",
             "instructions")
#: provenance kept per setting and for the whole record
PROVENANCE_KEYS = ("model", "model_path", "weights_fingerprint", "fingerprint_kind",
                   "weights_manifest", "vllm", "device", "dtype", "gptoss_magics")


@dataclass(frozen=True)
class Setting:
    """One point of the grid: its label and the option values it sets."""

    label: str
    values: Mapping[str, Any]


def label_of(values: Mapping[str, Any]) -> str:
    """A short label: ``low``, ``high, budget 64``, ``low, temperature=0``."""
    parts = []
    for key, value in values.items():
        if key == "effort":
            parts.append(str(value))
        elif key == "reasoning_budget":
            parts.append("no budget" if value is None else f"budget {value}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "as given"


def expand_grid(grid: Any, options: Mapping[str, Any]) -> list[Setting]:
    """The settings of ``grid`` (a dict of option -> list of values), every combination,
    in the order given; no grid: one setting with the options as given (its label, "",
    is given once the options are resolved)."""
    if grid is None:
        return [Setting("", {})]
    if not isinstance(grid, Mapping) or not grid:
        raise InvalidOptionError("grid must be a dict such as {'effort': ['low', 'high']}, "
                                 f"not {grid!r:.60}")
    for key, values in grid.items():
        if key not in GRID_KEYS:
            raise InvalidOptionError(f"grid can vary {', '.join(GRID_KEYS)}, not {key!r}")
        if key in options:
            raise InvalidOptionError(f"{key} is both an option and in the grid: give it once")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise InvalidOptionError(f"grid[{key!r}] must be a non-empty list of values, not "
                                     f"{values!r:.60}")
    keys = list(grid)
    settings = [Setting(label_of(dict(zip(keys, combo, strict=True))),
                        dict(zip(keys, combo, strict=True)))
                for combo in itertools.product(*(grid[k] for k in keys))]
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise InvalidOptionError("the grid repeats a setting: give each value once")
    return settings


def make_mapper(frame: pd.DataFrame, template: str, options: Mapping[str, Any],
                values: Mapping[str, Any]) -> RowMapper:
    """The map of one setting (options checked now; its warnings kept, not raised)."""
    mapper = RowMapper.create(frame, template, **{**options, **values})
    mapper.quiet = True  # the table reports truncations and failures per setting
    return mapper


def run_mapper(mapper: RowMapper) -> list[Outcome]:
    """Run the map and read each row's outcome."""
    mapper.run()
    return [outcome_of(i, label, row, mapper.options.confidence)
            for i, (label, row) in enumerate(zip(mapper.frame.index, mapper.per_row,
                                                 strict=True))]


def score(metric: Metric, outcomes: Sequence[Outcome], expected: Sequence[Any],
          questions: Sequence[str]) -> dict[str, Any] | None:
    """Mark every outcome (in place); the judge's provenance when the judge marked."""
    if metric.kind == "judge":
        scores, verdicts, prov = judge_scores(metric, [o.answer for o in outcomes],
                                              expected, questions)
        for o, s, v in zip(outcomes, scores, verdicts, strict=True):
            o.score, o.note = s, v
        return prov
    for o, e in zip(outcomes, expected, strict=True):
        try:
            o.score = metric.mark(o.answer, e)
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"gptoss-magics: the metric failed on row {o.row!r}")
            raise
    return None


def provenance_of(mapper: RowMapper) -> dict[str, Any]:
    """What the record keeps of a setting's provenance."""
    prov = mapper.provenance(mapper.per_row)
    keep = {k: prov.get(k) for k in (*PROVENANCE_KEYS, "sampling", "created", "summary")}
    return dict(json_safe(keep))


def run_setting(setting: Setting, mapper: RowMapper, metric: Metric,
                expected: Sequence[Any]) -> dict[str, Any]:
    """Run one setting and return its block of the record."""
    outcomes = run_mapper(mapper)
    questions = [p or "" for p in mapper.prompts()]
    judge = score(metric, outcomes, expected, questions)
    block = {
        "label": setting.label, "grid": json_safe(dict(setting.values)),
        "options": json_safe(options_record(mapper.options)),
        "examples": [[t.user, t.final] for t in mapper.spec.examples],
        "provenance": provenance_of(mapper),
        "summary": json_safe(summarise(outcomes, mapper.summary.seconds,
                                       mapper.summary.generated)),
        "outcomes": [o.to_json() for o in outcomes],
    }
    if judge is not None:
        block["judge"] = json_safe(judge)
    return block


def build_record(*, data: dict[str, Any], template: str, expected_column: str,
                 metric: Metric, grid: Any, options: Mapping[str, Any],
                 blocks: list[dict[str, Any]], session: Session) -> dict[str, Any]:
    """The whole evaluation record (``data``: the rows, from :func:`.record.data_block`)."""
    prov = {k: v for k, v in blocks[0]["provenance"].items() if k in PROVENANCE_KEYS}
    prov["seeds"] = {b["label"]: b["options"].get("seed") for b in blocks}
    prov["engine"] = json_safe({k: session.engine.info.get(k)
                                for k in ("max_model_len", "multiprocess")})
    return {
        "kind": KIND, "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "template": template, "expected": expected_column, "data": data,
        "metric": metric.describe(), "grid": json_safe(grid),
        "options": json_safe(dict(options)),
        "settings": blocks, "pairwise": [], "provenance": prov,
    }
