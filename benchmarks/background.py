"""How long a notebook request waits while a background map runs, with and without the
reserve of engine slots (gptoss_magics/engine/reserve.py).

    .venv/bin/python benchmarks/background.py [--rows 1000] [--max-tokens 48 256]
        [--repeats 5] [--throughput-rows 600]

On ``tiny-random`` (every row runs to max_tokens, so the job's rows finish in waves, the
case where a full engine makes a request wait longest), for each job ``max_tokens`` and
for the reserve off (``background_reserve=0``, the engine before this work) and at its
default: a ``--rows``-row ``df.gptoss.submit`` job runs; once every slot it may take is
busy, ``--repeats`` short requests (16 tokens, streamed on the engine) are asked one after
another, a second apart. Reported per case: the median time to the first token and to the
answer, the engine's step time under that load (the interval between the request's own
tokens) and the first token in steps; and the same request on an idle engine. Then the
job's own throughput with and without the reserve: ``--throughput-rows`` rows at 48
tokens, run to the end, alternated twice. Writes ``benchmarks/results/background.json``
and prints markdown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Uppercase the word: river"


def ask(engine: Any, ids: list[int], sampling: Any) -> dict[str, float]:
    """Stream one request: seconds to its first token and to its end, and the median
    interval between its tokens (the engine's step time under the current load)."""
    t0 = time.perf_counter()
    stamps = []
    for event in engine.stream(ids, sampling):
        if event.new_token_ids:
            stamps.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {"first_token_s": stamps[0] - t0, "answer_s": stamps[-1] - t0,
            "step_s": statistics.median(gaps) if gaps else float("nan")}


def summary(samples: list[dict[str, float]]) -> dict[str, float]:
    out = {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}
    out["first_token_steps"] = round(out["first_token_s"] / max(out["step_s"], 1e-9), 1)
    return out


def interactive_wait(model: str, reserve: int | None, rows: int, max_tokens: int,
                     repeats: int) -> dict[str, Any]:
    import pandas as pd

    import gptoss_magics as gm
    from gptoss_magics import harmony
    from gptoss_magics.engine import Sampling
    from gptoss_magics.session import current

    args = {} if reserve is None else {"background_reserve": reserve}
    gm.load(model, progress=False, **args)
    try:
        engine = current().engine
        ids = harmony.render_prompt(PROMPT, effort="low")
        sampling = Sampling(max_tokens=16, temperature=0)
        ask(engine, ids, sampling)  # warm
        idle = summary([ask(engine, ids, sampling) for _ in range(repeats)])
        sched = engine.scheduling()
        wave = sched["slots"] - sched["reserve"]
        df = pd.DataFrame({"q": [f"Row {i}: say something about {i}." for i in range(rows)]})
        job = df.gptoss.submit("{q}", max_tokens=max_tokens, temperature=0, cache=False)
        try:
            deadline = time.monotonic() + 600
            while engine.scheduling()["background_in_flight"] < min(wave, rows):
                if time.monotonic() > deadline or job.done:
                    raise RuntimeError("the job never filled its slots")
                time.sleep(0.05)
            time.sleep(1.0)  # past the rows' prefill
            loaded = []
            for _ in range(repeats):
                loaded.append(ask(engine, ids, sampling))
                time.sleep(1.0)
            served = job.interactive_served
            rows_done = job.rows_done
        finally:
            job.cancel()
        return {"reserve": sched["reserve"], "slots": sched["slots"], "rows": rows,
                "max_tokens": max_tokens, "idle": idle, "loaded": summary(loaded),
                "interactive_served": served, "job_rows_done": rows_done}
    finally:
        gm.unload()


def throughput(model: str, reserve: int | None, rows: int) -> float:
    """Tokens per second of a whole background job of ``rows`` rows at 48 tokens."""
    import pandas as pd

    import gptoss_magics as gm
    from gptoss_magics.session import current

    args = {} if reserve is None else {"background_reserve": reserve}
    gm.load(model, progress=False, **args)
    try:
        engine = current().engine
        df = pd.DataFrame({"q": [f"Throughput row {i}." for i in range(rows)]})
        before = engine.tokens_generated
        t0 = time.perf_counter()
        job = df.gptoss.submit("{q}", max_tokens=48, temperature=0, cache=False)
        job.wait()
        return (engine.tokens_generated - before) / (time.perf_counter() - t0)
    finally:
        gm.unload()


def markdown(report: dict[str, Any]) -> str:
    lines = ["| job max_tokens | reserve | idle: first token / answer | during the job: first "
             "token / answer | engine step under load | first token in steps |",
             "|---|---|---|---|---|---|"]
    for case in report["waits"]:
        i, m = case["idle"], case["loaded"]
        lines.append(f"| {case['max_tokens']} | {case['reserve']} of {case['slots']} | "
                     f"{i['first_token_s']:.2f} s / {i['answer_s']:.2f} s | "
                     f"{m['first_token_s']:.2f} s / {m['answer_s']:.2f} s | "
                     f"{m['step_s'] * 1000:.0f} ms | {m['first_token_steps']} |")
    t = report["throughput"]
    lines.append("")
    lines.append(f"Job throughput at 48 tokens, {t['rows']} rows: {t['without']:.0f} tok/s "
                 f"without the reserve, {t['with']:.0f} tok/s with it "
                 f"({t['ratio']:.3f}x; runs alternated, medians).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, nargs="+", default=[48, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--throughput-rows", type=int, default=600)
    ap.add_argument("--json", default=str(RESULTS / "background.json"))
    args = ap.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    tmp = tempfile.mkdtemp(prefix="gptoss-bench-")
    os.environ.setdefault("GPTOSS_MAGICS_CACHE", os.path.join(tmp, "cache"))
    report: dict[str, Any] = {"command": " ".join(["python benchmarks/background.py",
                                                   *sys.argv[1:]]),
                              "date": time.strftime("%Y-%m-%d %H:%M"), "waits": []}
    for max_tokens in args.max_tokens:
        for reserve in (0, None):
            print(f"# max_tokens {max_tokens}, reserve {reserve}", file=sys.stderr, flush=True)
            report["waits"].append(interactive_wait(args.model, reserve, args.rows, max_tokens,
                                                    args.repeats))
    runs: dict[str, list[float]] = {"without": [], "with": []}
    if args.throughput_rows:
        for _ in range(2):
            runs["without"].append(throughput(args.model, 0, args.throughput_rows))
            runs["with"].append(throughput(args.model, None, args.throughput_rows))
    without = statistics.median(runs["without"]) if runs["without"] else float("nan")
    with_ = statistics.median(runs["with"]) if runs["with"] else float("nan")
    report["throughput"] = {"rows": args.throughput_rows, "runs": runs, "without": without,
                            "with": with_, "ratio": with_ / without if without else float("nan")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
