"""Tools in a map against a hand-written tool loop, on the same engine.

    .venv/bin/python benchmarks/tools.py [--rows 256] [--loop-rows 32] [--repeats 3]

Every row asks the trained tiny model (``tiny``) to multiply two numbers of 2 or 3 digits
with the ``multiply`` function tool, so each row makes one call and then answers. Routes,
greedy, same ``max_tokens``, medians of interleaved repeats after a warm-up (the order
rotates):

  map_tools   df.gptoss.map("What is {a} * {b}?", tools=[multiply]) (cache off): every
              row's conversation interleaved on the engine's continuous batch
  plain_map   the same rows without tools (one round each): the tokens/s yardstick
  hand_loop   for each row: generate, parse, call multiply, generate again (what users
              write by hand), on the same engine (a subset of ``--loop-rows``; rows/s)

Targets (issue 13): map_tools >= 5x the hand loop in rows/s, and map_tools tokens/s within
0.8x of plain_map's. Writes ``benchmarks/results/tools.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _scratch import scratch

RESULTS = Path(__file__).resolve().parent / "results"
ASK = "What is {a} * {b}?"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def pairs(n: int, seed: int = 13) -> list[tuple[int, int]]:
    rng = random.Random(seed)

    def operand() -> int:
        digits = rng.choice((2, 3))
        return rng.randint(10 ** (digits - 1), 10**digits - 1)

    return [(operand(), operand()) for _ in range(n)]


def hand_loop(engine: Any, options: Any, rows: list[tuple[int, int]]
              ) -> tuple[float, int, int, int]:
    """Per row: generate, parse, call, generate again. (seconds, tokens, calls, right)"""
    from gptoss_magics import harmony

    sampling = options.sampling()
    tokens = calls = right = 0
    t0 = time.perf_counter()
    for a, b in rows:
        ids = options.render(ASK.format(a=a, b=b), run_tools=True)
        final = ""
        for _ in range(options.max_tool_rounds + 1):
            [done] = engine.generate([ids], sampling)
            tokens += len(done.token_ids)
            parsed = harmony.parse_completion(done.token_ids, done.finish_reason)
            last = parsed.messages[-1] if parsed.messages else None
            if not (done.token_ids and done.token_ids[-1] == harmony.CALL and last is not None
                    and last.recipient):
                final = parsed.final
                break
            try:
                result = str(multiply(**json.loads(last.text)))
            except Exception as exc:  # what the model reads instead
                result = f"Error: {exc}"
            calls += 1
            ids = ids + list(done.token_ids) + harmony.tool_result_ids(
                str(last.recipient).strip(), result)
        right += str(a * b) in final
    return time.perf_counter() - t0, tokens, calls, right


def run_map(frame: Any, **options: Any) -> tuple[float, int, int, int]:
    """One map: (seconds, completion tokens, calls, right answers)."""
    t0 = time.perf_counter()
    out = frame.gptoss.map(ASK, cache=False, progress=False, **options)
    seconds = time.perf_counter() - t0
    tokens = int(out.attrs["gptoss"]["summary"]["completion_tokens"])
    answers = out["answer"] if "answer" in getattr(out, "columns", ()) else out
    calls = int(sum(len(t) for t in out["tool_calls"])) if "tool_calls" in getattr(
        out, "columns", ()) else 0
    right = sum(str(a * b) in str(x) for a, b, x in zip(frame["a"], frame["b"], answers,
                                                          strict=True))
    return seconds, tokens, calls, right


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--loop-rows", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--effort", default="low")
    args = ap.parse_args(argv)
    scratch("gptoss-tools-bench-")

    import pandas as pd

    import gptoss_magics as gm
    from gptoss_magics.options import Options
    from gptoss_magics.session import current

    gm.settings().current_date = "2026-03-29"  # fixed prompts, so fixed greedy answers
    gm.load(args.model)
    engine = current().engine
    same = {"temperature": 0, "max_tokens": args.max_tokens, "effort": args.effort}
    rows = pairs(args.rows)
    frame = pd.DataFrame(rows, columns=["a", "b"])
    options = Options.resolve(tools=[multiply], **same)
    routes: dict[str, Callable[[], tuple[float, int, int, int]]] = {
        "map_tools": lambda: run_map(frame, tools=[multiply], tool_calls=True, **same),
        "plain_map": lambda: run_map(frame, **same),
        "hand_loop": lambda: hand_loop(engine, options, rows[:args.loop_rows]),
    }
    sizes = {"map_tools": len(rows), "plain_map": len(rows),
             "hand_loop": min(args.loop_rows, len(rows))}
    run_map(frame.head(8), tools=[multiply], **same)  # warm-up
    measured: dict[str, list[tuple[float, int, int, int]]] = {k: [] for k in routes}
    names = list(routes)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            measured[name].append(routes[name]())
            print(name, measured[name][-1], file=sys.stderr, flush=True)
    gm.unload()
    report = summarise(measured, sizes)
    report.update(command=" ".join(["python benchmarks/tools.py", *(argv or sys.argv[1:])]),
                  model=args.model, rows=len(rows), loop_rows=sizes["hand_loop"],
                  max_tokens=args.max_tokens, effort=args.effort, repeats=args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tools.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    return 0


def summarise(measured: dict[str, list[tuple[float, int, int, int]]],
              sizes: dict[str, int]) -> dict[str, Any]:
    routes: dict[str, dict[str, float]] = {}
    for name, runs in measured.items():
        seconds = statistics.median(r[0] for r in runs)
        tokens = statistics.median(r[1] for r in runs)
        routes[name] = {"seconds": round(seconds, 3), "rows_per_s": round(sizes[name] / seconds, 2),
                        "tokens_per_s": round(tokens / seconds, 1), "tokens": tokens,
                        "calls_per_row": round(runs[-1][2] / sizes[name], 3),
                        "right": f"{runs[-1][3]}/{sizes[name]}"}
    tools, plain, loop = routes["map_tools"], routes["plain_map"], routes["hand_loop"]
    return {"routes": routes,
            "map_vs_loop_rows_per_s": round(tools["rows_per_s"] / loop["rows_per_s"], 2),
            "map_vs_plain_tokens_per_s": round(tools["tokens_per_s"] / plain["tokens_per_s"],
                                               2)}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Model {report['model']}, {report['rows']} rows ({report['loop_rows']} for the "
             f"loop), effort {report['effort']}, max_tokens {report['max_tokens']}, greedy, "
             f"medians of {report['repeats']} interleaved repeats.", "",
             "| route | rows/s | tokens/s | calls per row | right |", "|---|---|---|---|---|"]
    labels = {"map_tools": "`df.gptoss.map(..., tools=[multiply])`",
              "plain_map": "`df.gptoss.map(...)` without tools (one round)",
              "hand_loop": "hand-written loop: generate, parse, call, generate"}
    for name, r in report["routes"].items():
        lines.append(f"| {labels[name]} | {r['rows_per_s']:,} | {r['tokens_per_s']:,} | "
                     f"{r['calls_per_row']} | {r['right']} |")
    lines += ["", f"- The map with tools runs {report['map_vs_loop_rows_per_s']}x the hand "
              "loop's rows/s (target >= 5x).",
              f"- Its tokens/s are {report['map_vs_plain_tokens_per_s']}x a plain map's of the "
              "same rows (target >= 0.8x)."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
