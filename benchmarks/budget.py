"""What a reasoning budget saves and costs: tokens, time and accuracy per budget.

    .venv/bin/python benchmarks/budget.py [--n 8] [--max-tokens 200]

Runs the held-out toy prompts of the trained tiny model (``tiny``) at each effort,
greedy, in one engine batch per (budget, effort), with no budget and with budgets of
0, 4, 8, 16 and 24 reasoning tokens. Reports, per budget: well-formed answers, accuracy
per task, median reasoning and completion tokens, and wall time. Writes
``benchmarks/results/budget.json`` and prints a markdown table.

The tiny model reasons about 9 / 17 / 40 tokens at low / medium / high effort; its
sentiment answers need little of that reasoning, its sums need all of it, so the table
shows both ends of the trade a budget makes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _scratch import scratch

RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS: tuple[int | None, ...] = (None, 0, 4, 8, 16, 24)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="held-out prompts per task and effort")
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args(argv)
    scratch("gptoss-budget-")

    import gptoss_magics as gm
    from gptoss_magics.tiny import tasks as T

    gm.settings().current_date = "2026-03-29"  # fixed prompts, so fixed greedy answers
    gm.load("tiny")
    examples = T.held_out(args.n, seed=21)
    rows: list[dict[str, Any]] = []
    for budget in BUDGETS:
        row: dict[str, Any] = {"budget": "none" if budget is None else budget}
        replies = []
        correct: dict[str, list[bool]] = {task: [] for task in T.TASKS}
        wall = 0.0
        for effort in T.EFFORTS:
            batch = [ex for ex in examples if ex.effort == effort]
            t0 = time.perf_counter()
            got = gm.complete_batch([ex.user for ex in batch], effort=effort, temperature=0,
                                    max_tokens=args.max_tokens, reasoning_budget=budget)
            wall += time.perf_counter() - t0
            replies += got
            for ex, r in zip(batch, got, strict=True):
                correct[ex.task].append(T.is_correct(ex, r.final))
        row["well_formed"] = f"{sum(r.ok and bool(r.final) for r in replies)}/{len(replies)}"
        for task, marks in correct.items():
            row[f"{task}_correct"] = f"{sum(marks)}/{len(marks)}"
        row["cut"] = sum(r.reasoning_cut for r in replies)
        row["median_reasoning_tokens"] = statistics.median(r.analysis_tokens for r in replies)
        row["median_completion_tokens"] = statistics.median(
            r.completion_tokens for r in replies)
        row["seconds"] = round(wall, 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    gm.unload()
    report = {"command": " ".join(["python benchmarks/budget.py", *(argv or sys.argv[1:])]),
              "model": "tiny", "prompts": len(examples), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "budget.json").write_text(json.dumps(report, indent=1) + "\n")
    head = list(rows[0])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in head) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
