"""Running an evaluation record again, and comparing the two runs row by row.

The rows, template, resolved options (seed, date and knowledge cutoff included) and worked
examples of every setting come from the record; the result cache is off, so every row is
generated again. Two runs match when the data hash is unchanged and every row of every
setting has the same answer and the same mark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .. import audit
from ..errors import InvalidOptionError
from ..session import current
from .metrics import Metric, resolve_metric
from .record import check, data_hash, frame_of, setting_mapper
from .runner import Setting, build_record, run_setting


def recorded_metric(record: Mapping[str, Any], metric: Any = None) -> Metric:
    """The metric that marked ``record`` (a function must be given again as ``metric``)."""
    described = record.get("metric") or {}
    choices = None
    first = record["settings"][0].get("options") or {}
    if isinstance(first, Mapping):
        choices = first.get("choices")
    if metric is not None:
        return resolve_metric(metric, choices=choices,
                              tolerance=described.get("tolerance"),
                              rubric=described.get("rubric"),
                              judge_options=described.get("judge_options"))
    kind = described.get("kind")
    if kind == "callable":
        raise InvalidOptionError(f"this record was marked by the function "
                                 f"{described.get('name')!r}: pass it again, "
                                 "reproduce(record, metric=that_function)")
    return resolve_metric(kind, choices=choices, tolerance=described.get("tolerance"),
                          rubric=described.get("rubric"),
                          judge_options=described.get("judge_options"))


def rerun(record: Mapping[str, Any], metric: Any = None) -> dict[str, Any]:
    """Run every setting of ``record`` again; the new record (same data block)."""
    check(record)
    _, expected = frame_of(record.get("data"))
    m = recorded_metric(record, metric)
    settings = record["settings"]
    mappers = [setting_mapper(record, s) for s in settings]  # all checked before running
    audit.check_writable()
    session = current()
    blocks = [run_setting(Setting(str(s.get("label")), s.get("grid") or {}), mapper, m,
                          expected)
              for s, mapper in zip(settings, mappers, strict=True)]
    return build_record(data=dict(record["data"]), template=str(record["template"]),
                        expected_column=str(record.get("expected")), metric=m,
                        grid=record.get("grid"), options=record.get("options") or {},
                        blocks=blocks, session=session)


def same_data(record: Mapping[str, Any]) -> bool:
    """True when the record's rows still hash to its recorded SHA-256."""
    data = record.get("data") or {}
    return bool(data_hash(data.get("rows")) == data.get("sha256"))


def differences(original: Mapping[str, Any], again: Mapping[str, Any]) -> pd.DataFrame:
    """The rows whose answer or mark differs between two runs, one line per row and
    setting."""
    lines = []
    before = {s["label"]: s for s in original["settings"]}
    for block in again["settings"]:
        old = before.get(block["label"])
        if old is None:
            continue
        for a, b in zip(old["outcomes"], block["outcomes"], strict=False):
            if (a.get("final"), a.get("answer"), a.get("score")) != \
                    (b.get("final"), b.get("answer"), b.get("score")):
                lines.append({"setting": block["label"], "row": b.get("row"),
                              "answer before": a.get("answer"), "answer again": b.get("answer"),
                              "score before": a.get("score"), "score again": b.get("score")})
    columns = ["setting", "row", "answer before", "answer again", "score before",
               "score again"]
    return pd.DataFrame(lines, columns=columns)
