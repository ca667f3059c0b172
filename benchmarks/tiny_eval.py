"""Held-out evaluation of the trained tiny model on the real engine: every figure the
README quotes for it.

    .venv/bin/python benchmarks/tiny_eval.py [--n 30] [--artifact PATH] [--json PATH]

Loads ``tiny`` (or a candidate artifact made by ``tools/train_tiny.py --out PATH``,
expanded into a temporary folder) with ``gm.load``, renders held-out prompts exactly as
the session renders them (:mod:`gptoss_magics.tiny.tasks`, system date pinned) and sends
them, greedy, to ``session.current().engine.generate`` in one batch per group. Tool
rounds are played by hand: the first completion is parsed, the tool's result computed
here (the product for ``functions.multiply``; for ``python``, the printed value of an
arithmetic expression) and appended with ``harmony.tool_result_ids``, then the model
answers. Reports:

* harmony form and accuracy of the three old tasks per effort, and the median reasoning
  tokens per effort;
* the old tasks with tools declared (answered directly, no call);
* multiplication without tools, with the ``multiply`` function tool and with the python
  tool: calls made, arguments right, final answers right;
* three-term sums per effort, the same rows at every effort: accuracy (all rows and the
  carrying ones), the confidence (probability of the final answer's tokens) of right and
  wrong answers, low effort's confidence quantiles (right and wrong answers on sums that
  do not carry, answers on sums that do), and a confidence cascade (low, then medium or
  high below a threshold) against all-high, at fixed thresholds and at the best threshold
  for these rows within 1 point of all-high's accuracy (the ceiling for a learnt one).

Writes ``benchmarks/results/tiny_eval.json`` (or ``--json``) and prints markdown.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _scratch import scratch

RESULTS = Path(__file__).resolve().parent / "results"
DATE = "2026-03-29"
MAX_TOKENS = 200


_OPS = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y,
        ast.Mult: lambda x, y: x * y}


def _arith(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    raise ValueError("not integer arithmetic")


def run_python(code: str) -> str:
    """What our toy python tool prints for ``print(<integer arithmetic>)``; anything else
    gets an error line (the model is only trained to print a product)."""
    match = re.fullmatch(r"\s*print\((.*)\)\s*", code, re.S)
    try:
        if match is None:
            raise ValueError("not a print call")
        return f"{_arith(ast.parse(match.group(1), mode='eval').body)}\n"
    except (SyntaxError, ValueError) as exc:
        return f"Error: {exc}\n"


def call_function(body: str) -> str:
    """The result of ``functions.multiply`` for the JSON ``body`` (an error text if bad)."""
    try:
        args = json.loads(body)
        return str(int(args["a"]) * int(args["b"]))
    except (ValueError, KeyError, TypeError) as exc:
        return f"Error: {exc}"


class Runner:
    """Greedy generation on the loaded session's engine."""

    def __init__(self) -> None:
        from gptoss_magics import session
        from gptoss_magics.engine import Sampling

        self.engine = session.current().engine
        self.plain = Sampling(max_tokens=MAX_TOKENS, temperature=0)
        self.scored = Sampling(max_tokens=MAX_TOKENS, temperature=0, logprobs=True)

    def generate(self, prompts: list[list[int]], logprobs: bool = False) -> list[Any]:
        from gptoss_magics import harmony as H

        done = self.engine.generate(prompts, self.scored if logprobs else self.plain)
        out = []
        for c in done:
            parsed = H.parse_completion(c.token_ids, c.finish_reason)
            conf = None
            if logprobs and c.logprobs is not None:
                lp = H.answer_logprob(c.token_ids, c.logprobs)
                conf = None if lp is None else math.exp(lp)
            out.append((c, parsed, conf))
        return out


def well_formed(c: Any, parsed: Any) -> bool:
    from gptoss_magics import harmony as H

    return bool(parsed.analysis and parsed.final and c.finish_reason == "stop"
                and not parsed.malformed and not parsed.truncated
                and c.token_ids and c.token_ids[-1] == H.RETURN)


def pct(xs: list[bool]) -> float:
    return round(100 * sum(xs) / len(xs), 1) if xs else float("nan")


def eval_old(run: Runner, n: int) -> dict[str, Any]:
    """The three old tasks by effort, without tools and with each tool declared."""
    from gptoss_magics.tiny import tasks as T

    out: dict[str, Any] = {}
    for tools in ("none", "function", "python"):
        examples = T.held_out(n, seed=101, tools=tools)
        got = run.generate([T.prompt_ids(ex, DATE) for ex in examples])
        rows = list(zip(examples, got, strict=True))
        group: dict[str, Any] = {
            "form": pct([well_formed(c, p) for _, (c, p, _) in rows]),
            "tool_calls": sum(any(m.recipient for m in p.messages) for _, (_, p, _) in rows),
            "correct": {task: pct([T.is_correct(ex, p.final) for ex, (_, p, _) in rows
                                   if ex.task == task]) for task in T.TASKS},
        }
        if tools == "none":
            group["reasoning_tokens_median"] = {
                e: statistics.median(p.analysis_tokens for ex, (_, p, _) in rows
                                     if ex.effort == e) for e in T.EFFORTS}
        out[tools] = group
    return out


def eval_multiply(run: Runner, n: int) -> dict[str, Any]:
    """Products without tools and through each tool, two rounds played by hand."""
    from gptoss_magics import harmony as H
    from gptoss_magics.tiny import tasks as T

    out: dict[str, Any] = {}
    for tools in ("none", "function", "python"):
        examples = T.held_out(n, seed=202, tasks=("multiply",), tools=tools)
        prompts = [T.prompt_ids(ex, DATE) for ex in examples]
        first = run.generate(prompts)
        if tools == "none":
            out[tools] = {"rows": len(examples),
                          "form": pct([well_formed(c, p) for c, p, _ in first]),
                          "correct": pct([T.is_correct(ex, p.final)
                                          for ex, (_, p, _) in zip(examples, first, strict=True)])}
            continue
        recipient = "python" if tools == "python" else "functions.multiply"
        calls, args_ok, follow = [], [], []
        for i, (ex, (c, p, _)) in enumerate(zip(examples, first, strict=True)):
            call = p.messages[-1] if p.messages and p.messages[-1].recipient else None
            made = bool(call and call.recipient == recipient and c.token_ids
                        and c.token_ids[-1] == H.CALL)
            calls.append(made)
            if not made or call is None:
                args_ok.append(False)
                continue
            result = run_python(call.text) if tools == "python" else call_function(call.text)
            args_ok.append(result.strip() == ex.answer)
            follow.append((i, prompts[i] + list(c.token_ids)
                           + H.tool_result_ids(recipient, result)))
        second = run.generate([ids for _, ids in follow])
        finals = {i: p.final for (i, _), (_, p, _) in zip(follow, second, strict=True)}
        formed = [well_formed(c, p) for c, p, _ in second]
        out[tools] = {
            "rows": len(examples), "calls": pct(calls), "arguments_right": pct(args_ok),
            "second_round_form": pct(formed),
            "correct": pct([T.is_correct(ex, finals.get(i, "")) for i, ex in enumerate(examples)]),
            "correct_by_effort": {
                e: pct([T.is_correct(ex, finals.get(i, "")) for i, ex in enumerate(examples)
                        if ex.effort == e]) for e in T.EFFORTS},
        }
    return out


def _conf_stats(xs: list[float]) -> dict[str, float | int]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "mean": round(statistics.fmean(xs), 3),
            "median": round(statistics.median(xs), 3)}


def eval_sum3(run: Runner, n: int) -> dict[str, Any]:
    """Three-term sums: the same held-out rows at every effort, with confidences."""
    from gptoss_magics.tiny import arith
    from gptoss_magics.tiny import tasks as T

    rows = T.held_out(n, seed=303, tasks=("sum3",))
    carry = [arith.sum3_carries(*map(int, re.findall(r"\d+", ex.user))) for ex in rows]
    per: dict[str, list[tuple[bool, float, int]]] = {}
    out: dict[str, Any] = {"rows": len(rows), "carrying_rows": sum(carry), "by_effort": {}}
    for effort in T.EFFORTS:
        got = run.generate([T.prompt_ids(replace(ex, effort=effort), DATE) for ex in rows],
                           logprobs=True)
        res = [(T.is_correct(ex, p.final), conf if conf is not None else 0.0,
                p.analysis_tokens) for ex, (_, p, conf) in zip(rows, got, strict=True)]
        per[effort] = res
        out["by_effort"][effort] = {
            "form": pct([well_formed(c, p) for c, p, _ in got]),
            "accuracy": pct([r[0] for r in res]),
            "accuracy_carrying": pct([r[0] for r, k in zip(res, carry, strict=True) if k]),
            "accuracy_not_carrying": pct([r[0] for r, k in zip(res, carry, strict=True)
                                          if not k]),
            "confidence_right": _conf_stats([r[1] for r in res if r[0]]),
            "confidence_wrong": _conf_stats([r[1] for r in res if not r[0]]),
            "reasoning_tokens_median": statistics.median(r[2] for r in res),
            "reasoning_tokens_total": sum(r[2] for r in res),
        }
    low = list(zip(per["low"], carry, strict=True))
    out["low_confidence_quantiles"] = {
        "right_not_carrying": _quantiles([r[1] for r, k in low if r[0] and not k]),
        "wrong_not_carrying": _quantiles([r[1] for r, k in low if not r[0] and not k]),
        "carrying": _quantiles([r[1] for r, k in low if k])}
    out["cascade"] = cascades(per)
    out["best_cascade_within_1_point"] = best_cascades(per)
    return out


def _cascade(per: dict[str, list[tuple[bool, float, int]]], to: str,
             threshold: float) -> dict[str, Any]:
    right, tokens, escalated = [], 0, 0
    for low, up in zip(per["low"], per[to], strict=True):
        tokens += low[2]
        if low[1] < threshold:
            escalated += 1
            tokens += up[2]
            right.append(up[0])
        else:
            right.append(low[0])
    high = per["high"]
    base_tokens = sum(r[2] for r in high)
    return {"to": to, "threshold": round(threshold, 4), "escalated": escalated,
            "accuracy": pct(right), "all_high_accuracy": pct([r[0] for r in high]),
            "reasoning_tokens": tokens, "all_high_tokens": base_tokens,
            "token_ratio": round(base_tokens / max(tokens, 1), 2)}


def cascades(per: dict[str, list[tuple[bool, float, int]]]) -> list[dict[str, Any]]:
    """Low effort, escalated to ``to`` when its confidence is below a threshold."""
    return [_cascade(per, to, threshold) for to in ("medium", "high")
            for threshold in (0.6, 0.7, 0.8, 0.9)]


def best_cascades(per: dict[str, list[tuple[bool, float, int]]]) -> list[dict[str, Any]]:
    """The most any single threshold saves on these rows for at most 1 point of accuracy
    below all-high: the ceiling for a threshold learnt on other rows (``gm.Cascade``). A
    level with no such threshold (it is itself more than 1 point below all-high) is left
    out."""
    out = []
    for to in ("medium", "high"):
        tried = [_cascade(per, to, t) for t in sorted({r[1] for r in per["low"]} | {1.01})]
        fit = [c for c in tried if c["all_high_accuracy"] - c["accuracy"] <= 1.0]
        if fit:
            out.append(max(fit, key=lambda c: c["token_ratio"]))
    return out


def _quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {f"p{q}": round(xs[int(q / 100 * (len(xs) - 1))], 3)
            for q in (5, 10, 25, 50, 75, 90)} if xs else {}


def load(artifact: str | None) -> str:
    """Load ``tiny``, or a candidate artifact expanded into a temporary folder."""
    import gptoss_magics as gm

    if artifact is None:
        gm.load("tiny")
        return "tiny (shipped artifact)"
    from gptoss_magics.tiny import MARKER, read_artifact_meta, write_trained_weights
    from gptoss_magics.tiny._tokenizer import write_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="tiny-candidate-"))
    write_tokenizer(folder)
    write_trained_weights(folder, artifact)
    sha = read_artifact_meta(artifact)["sha256"]
    (folder / MARKER).write_text(json.dumps({"kind": "tiny", "artifact_sha256": sha}))
    gm.load(str(folder))
    return f"{artifact} (sha256 {sha[:12]})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30, help="held-out prompts per task and effort")
    ap.add_argument("--artifact", help="a candidate artifact instead of the shipped one")
    ap.add_argument("--json", type=Path, default=RESULTS / "tiny_eval.json")
    ap.add_argument("--only", choices=("old", "multiply", "sum3"), action="append")
    args = ap.parse_args(argv)
    scratch("gptoss-tiny-eval-")

    t0 = time.perf_counter()
    model = load(args.artifact)
    run = Runner()
    report: dict[str, Any] = {"model": model, "n": args.n, "date": DATE, "greedy": True}
    only = set(args.only or ("old", "multiply", "sum3"))
    if "old" in only:
        report["old_tasks"] = eval_old(run, args.n)
    if "multiply" in only:
        report["multiply"] = eval_multiply(run, args.n)
    if "sum3" in only:
        report["sum3"] = eval_sum3(run, args.n)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The figures as markdown lines."""
    lines = [f"Model {report['model']}, {report['n']} held-out prompts per task and effort, "
             "greedy."]
    old = report.get("old_tasks")
    if old:
        for tools, g in old.items():
            lines.append(f"- old tasks, tools {tools}: form {g['form']}%, tool calls "
                         f"{g['tool_calls']}, correct " + ", ".join(
                             f"{k} {v}%" for k, v in g["correct"].items()))
        lines.append(f"- median reasoning tokens: {old['none']['reasoning_tokens_median']}")
    for tools, g in report.get("multiply", {}).items():
        lines.append(f"- multiply, tools {tools}: " + ", ".join(
            f"{k} {v}" for k, v in g.items()))
    s = report.get("sum3")
    if s:
        lines.append(f"- sum3: {s['rows']} rows, {s['carrying_rows']} carrying")
        for e, g in s["by_effort"].items():
            lines.append(f"  - {e}: " + ", ".join(f"{k} {v}" for k, v in g.items()))
        for kind, q in s["low_confidence_quantiles"].items():
            lines.append(f"  - low effort's confidence, {kind.replace('_', ' ')}: {q}")
        for c in s["cascade"] + s["best_cascade_within_1_point"]:
            lines.append(f"  - cascade low->{c['to']} below {c['threshold']}: escalated "
                         f"{c['escalated']}, accuracy {c['accuracy']}% (all-high "
                         f"{c['all_high_accuracy']}%), tokens {c['reasoning_tokens']} vs "
                         f"{c['all_high_tokens']} ({c['token_ratio']}x fewer)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
