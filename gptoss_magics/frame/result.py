"""What a map row produced, and the Series/DataFrame assembled from the rows."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..constraint import Constraint
from ..errors import RowError
from ..reply import Reading


@dataclass
class RowResult:
    """What one prompt produced (shared by duplicate rows); what the cache stores."""

    final: str | None
    analysis: str
    finish_reason: str
    truncated: bool
    has_final: bool
    completion_tokens: int
    prompt_tokens: int
    value: Any = None
    error: str | None = None
    reasoning_cut: bool = False
    answer_logprob: float | None = None
    analysis_tokens: int | None = None  # None in rows cached by versions before 0.2
    latency_s: float | None = None  # from submission to the end (None: cached by 0.2)
    tool_calls: list[dict[str, Any]] | None = None  # the trail (ToolCall.to_dict), with tools
    cached: bool = False

    @classmethod
    def from_reading(cls, r: Reading, constraint: Constraint) -> RowResult:
        """A row from a completion read back (a value error is the row's error); without
        a constraint the value is the answer's text."""
        p = r.parsed
        final = p.final if p.has_final else None
        # a request the engine refused or failed did not hit max_tokens: it has an error
        return cls(final=final, analysis=p.analysis,
                   finish_reason=r.finish_reason,
                   truncated=p.truncated and r.finish_reason != "error",
                   has_final=p.has_final, completion_tokens=r.completion_tokens,
                   prompt_tokens=r.prompt_tokens,
                   value=final if constraint.kind == "none" else r.value,
                   error=r.error or r.value_error, reasoning_cut=r.reasoning_cut,
                   answer_logprob=r.answer_logprob, analysis_tokens=p.analysis_tokens)

    @property
    def engine_error(self) -> bool:
        """True when the engine refused or failed the request (a prompt too long for the
        context, a failed step): depends on the engine, so it is never cached."""
        return self.finish_reason == "error"

    @property
    def tool_failed(self) -> bool:
        """True when the row's last tool call failed (or was refused past the round
        limit): its answer rests on no result, so it is an error and is not cached."""
        calls = self.tool_calls or []
        return bool(calls) and calls[-1].get("error") is not None

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("cached")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RowResult | None:
        """A cached row, or None when the stored value is not one (written by another
        version, or damaged): such a row is generated again."""
        if not isinstance(d, Mapping):
            known: Mapping[str, Any] = {}
        elif d.keys() <= cls.__dataclass_fields__.keys():
            known = d  # as to_json wrote it
        else:
            known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        try:
            row = cls(**{**known, "cached": True})
        except TypeError:  # a field is missing
            return None
        if not isinstance(row.finish_reason, str) or not isinstance(row.analysis, str):
            return None
        return row

    @property
    def good_value(self) -> Any:
        """The row's value when it succeeded, else None."""
        if self.error is not None or self.final is None or self.truncated:
            return None
        return self.value


@dataclass
class MapSummary:
    """Counts of a map run."""

    rows: int = 0
    missing: int = 0
    unique_prompts: int = 0
    cached: int = 0
    generated: int = 0
    retried: int = 0
    truncated: int = 0
    reasoning_cut: int = 0
    no_final: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def count(self, per_row: Sequence[RowResult | None],
              results: Mapping[str, RowResult]) -> None:
        """Fill the per-row counts."""
        rows = [r for r in per_row if r is not None]
        self.truncated = sum(r.truncated for r in rows)
        self.reasoning_cut = sum(r.reasoning_cut for r in rows)
        self.no_final = sum(not r.has_final and not r.truncated and r.finish_reason != "error"
                            for r in rows)
        self.errors = sum(r.error is not None for r in rows)
        self.prompt_tokens = sum(r.prompt_tokens for r in results.values() if not r.cached)
        self.completion_tokens = sum(r.completion_tokens for r in results.values()
                                     if not r.cached)


def row_error(r: RowResult | None) -> str | None:
    """Why a row has no answer, or None."""
    if r is None:
        return None
    if r.error:
        return r.error
    if r.truncated:
        return "hit max_tokens"
    if not r.has_final:
        return "no final answer"
    return None


def raise_first_error(index: pd.Index, per_row: Sequence[RowResult | None]) -> None:
    """``on_error='raise'``: raise :class:`RowError` for the first failed row."""
    for label, r in zip(index, per_row, strict=True):
        if r is not None and r.error is not None:
            raise RowError(f"row {label!r} failed: {r.error} (use on_error='mark' to keep "
                           "going and get an error column)")


def answers(index: pd.Index, per_row: Sequence[RowResult | None],
            constraint: Constraint) -> pd.Series | pd.DataFrame:
    """The answer column (or, for a schema, one typed column per field)."""
    values = [r.good_value if r is not None else None for r in per_row]
    if constraint.kind == "schema":
        data = {c: [d.get(c) if isinstance(d, dict) else None for d in values]
                for c in constraint.columns()}
        out = pd.DataFrame(data, index=index)
        for c, dtype in constraint.dtypes().items():
            with contextlib.suppress(TypeError, ValueError):
                out[c] = out[c].astype(dtype)
        return out
    if constraint.kind == "choices":
        return pd.Series(pd.Categorical(values, categories=list(constraint.choices or ())),
                         index=index, name="answer")
    return pd.Series(values, index=index, dtype="string", name="answer")


def add_columns(out: pd.Series | pd.DataFrame, index: pd.Index,
                per_row: Sequence[RowResult | None], *, usage: bool, confidence: bool,
                reasoning: bool, tool_calls: bool = False) -> pd.Series | pd.DataFrame:
    """The answers with the asked-for extra columns, and truncated/error columns whenever
    the result is a DataFrame."""
    if not (reasoning or confidence or usage or tool_calls or isinstance(out, pd.DataFrame)):
        return out
    frame = out.to_frame() if isinstance(out, pd.Series) else out

    def column(values: list[Any], dtype: str) -> pd.Series:
        return pd.Series(values, index=index, dtype=dtype)

    if usage:
        for name, attr in (("prompt_tokens", "prompt_tokens"),
                           ("reasoning_tokens", "analysis_tokens"),
                           ("completion_tokens", "completion_tokens")):
            frame[name] = column([getattr(r, attr) if r is not None else None
                                  for r in per_row], "Int64")
    if confidence:
        frame["confidence"] = column(
            [math.exp(r.answer_logprob) if r is not None and r.good_value is not None
             and r.answer_logprob is not None else None for r in per_row], "Float64")
    if reasoning:
        frame["reasoning"] = column([r.analysis if r is not None else None for r in per_row],
                                    "string")
    if tool_calls:  # each row's own list of the calls' dicts ([] without calls)
        frame["tool_calls"] = column([None if r is None else
                                      [dict(c) for c in r.tool_calls or ()]
                                      for r in per_row], "object")
    frame["truncated"] = column([r.truncated if r is not None else pd.NA for r in per_row],
                                "boolean")
    frame["error"] = column([row_error(r) for r in per_row], "string")
    return frame


def row_lists(index: pd.Index, per_row: Sequence[RowResult | None]) -> dict[str, Any]:
    """The rows to look at, for ``attrs['gptoss']``: missing (never sent, or not finished
    after an interrupt), truncated, reasoning cut, failed."""
    pairs = list(zip(index, per_row, strict=True))
    return {
        "missing_rows": [i for i, r in pairs if r is None],
        "truncated_rows": [i for i, r in pairs if r is not None and r.truncated],
        "reasoning_cut_rows": [i for i, r in pairs if r is not None and r.reasoning_cut],
        "error_rows": {str(i): row_error(r) for i, r in pairs if row_error(r)},
    }
