"""The loaded model as a judge: marking free-text answers, and comparing two settings.

Both run through the map (``df.gptoss.map``), so the judge's prompts are batched and
cached like any other rows, and its answers are constrained to labels with ``choices``.

* :func:`judge_scores`: each answer is marked ``correct`` or ``incorrect`` against the
  expected answer by a rubric;
* :func:`compare_pair`: for each row, which of two settings' answers is better (``1``,
  ``2`` or ``tie``). The order is swapped on every second row, so a judge that prefers
  the first (or second) position favours neither setting; the result reports how often
  each position won, to show that bias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import InvalidOptionError
from ..frame.mapper import RowMapper
from ..options import PROMPT_OPTIONS, check_names
from .metrics import Metric
from .stats import wilson

JUDGE_CHOICES = ("correct", "incorrect")
JUDGE_TEMPLATE = ("{rubric}\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\n"
                  "Answer to grade:\n{answer}\n\nIs the answer to grade correct? Reply "
                  "correct or incorrect.")
PAIR_CHOICES = ("1", "2", "tie")
PAIR_TEMPLATE = ("{rubric}\n\nQuestion:\n{question}\n\nAnswer 1:\n{first}\n\nAnswer 2:\n"
                 "{second}\n\nWhich answer is better? Reply 1, 2 or tie.")
#: the judge's options unless given: short reasoning
JUDGE_DEFAULTS: dict[str, Any] = {"effort": "low"}
NO_ANSWER = "(no answer)"


def judge_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The judge's prompt options (checked names; the constraint is the judge's own)."""
    options = {**JUDGE_DEFAULTS, **dict(given or {})}
    check_names(options, PROMPT_OPTIONS)
    for name in ("choices", "regex", "schema"):
        if options.get(name) is not None:
            raise InvalidOptionError(f"the judge answers under its own choices: leave {name} "
                                     "out of judge_options")
    return options


def _verdicts(frame: pd.DataFrame, template: str, choices: Sequence[str],
              options: Mapping[str, Any] | None) -> tuple[list[str | None], dict[str, Any]]:
    """The judge's label for each row (None when it failed), and its provenance."""
    mapper = RowMapper.create(frame, template, **judge_options(options),
                              choices=list(choices), progress=False)
    mapper.quiet = True
    mapper.run()
    labels = [r.good_value if r is not None else None for r in mapper.per_row]
    prov = mapper.provenance(mapper.per_row)
    keep = ("effort", "sampling", "weights_fingerprint", "model", "vllm", "summary")
    return labels, {k: prov.get(k) for k in keep}


def judge_scores(metric: Metric, answers: Sequence[Any], expected: Sequence[Any],
                 questions: Sequence[str]) -> tuple[list[float], list[str | None],
                                                    dict[str, Any]]:
    """Mark each answer with the judge: scores (1 correct, 0 otherwise; rows without an
    answer are not sent and score 0), the verdicts, and the judge's provenance."""
    send = [i for i, a in enumerate(answers) if a is not None]
    scores = [0.0] * len(answers)
    verdicts: list[str | None] = [None] * len(answers)
    if not send:
        return scores, verdicts, {}
    frame = pd.DataFrame({
        "rubric": [metric.rubric] * len(send),
        "question": [questions[i] for i in send],
        "reference": [str(expected[i]) for i in send],
        "answer": [str(answers[i]) for i in send]})
    labels, prov = _verdicts(frame, JUDGE_TEMPLATE, JUDGE_CHOICES, metric.judge_options)
    for i, label in zip(send, labels, strict=True):
        verdicts[i] = label
        scores[i] = float(label == JUDGE_CHOICES[0])
    return scores, verdicts, prov


def compare_pair(questions: Sequence[str], first: Sequence[Any], second: Sequence[Any],
                 *, rubric: str, options: Mapping[str, Any] | None, labels: tuple[str, str]
                 ) -> dict[str, Any]:
    """Which of two settings' answers the judge prefers, row by row, with the order
    swapped on every second row (plain data, for the record)."""
    if not isinstance(rubric, str) or not rubric.strip():
        raise InvalidOptionError("pairwise needs rubric='...': what makes an answer better")
    swap = [i % 2 == 1 for i in range(len(questions))]

    def text(value: Any) -> str:
        return NO_ANSWER if value is None else str(value)

    frame = pd.DataFrame({
        "rubric": [rubric] * len(questions), "question": list(questions),
        "first": [text(b if s else a) for a, b, s in zip(first, second, swap, strict=True)],
        "second": [text(a if s else b) for a, b, s in zip(first, second, swap, strict=True)]})
    verdicts, prov = _verdicts(frame, PAIR_TEMPLATE, PAIR_CHOICES, options)
    winners: list[str | None] = []
    for verdict, swapped in zip(verdicts, swap, strict=True):
        if verdict in ("1", "2"):
            a_won = (verdict == "1") != swapped
            winners.append(labels[0] if a_won else labels[1])
        else:
            winners.append("tie" if verdict == "tie" else None)
    return {"a": labels[0], "b": labels[1], "rubric": rubric,
            "judge": prov, "swapped": swap, "verdicts": verdicts, "winners": winners,
            "summary": pair_summary(labels, winners, verdicts)}


def pair_summary(labels: tuple[str, str], winners: Sequence[str | None],
                 verdicts: Sequence[str | None]) -> dict[str, Any]:
    """Wins of setting a and b, ties, a's win rate (a tie counts half) with its 95% Wilson
    interval, and how often each position won (the judge's position bias)."""
    a_wins = sum(w == labels[0] for w in winners)
    b_wins = sum(w == labels[1] for w in winners)
    ties = sum(w == "tie" for w in winners)
    judged = a_wins + b_wins + ties
    low, high = wilson(a_wins + ties / 2, judged)
    decided = sum(v in ("1", "2") for v in verdicts)
    return {"a": labels[0], "b": labels[1], "rows": len(winners), "judged": judged,
            "a wins": a_wins, "b wins": b_wins, "ties": ties,
            "win rate": (a_wins + ties / 2) / judged if judged else float("nan"),
            "win rate 95% low": low, "win rate 95% high": high,
            "first position won": sum(v == "1" for v in verdicts) / decided if decided
            else float("nan")}
