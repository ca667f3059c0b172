"""The Ray route beside the in-process map: rows/s, and Ray's per-row and fixed overhead.

    .venv/bin/python benchmarks/ray_map.py [--model tiny] [--sizes 32 160]
        [--max-tokens 32] [--replicas 1 2]

The same map (distinct rows, cache off, same seed) runs in-process on a loaded engine and
with ``backend=gm.RayBackend(replicas=R)`` on a local Ray started here (one CPU per
replica), at two sizes. Per route, a line through the two (size, seconds) points gives
the seconds per row (slope) and the fixed cost of a map (intercept: for Ray, starting the
actors and loading each replica's engine). Ray's per-row overhead is its slope minus the
in-process slope. Writes ``benchmarks/results/ray.json`` and prints markdown. On a
two-core machine no speed-up is expected: replicas share the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def frame(n: int) -> Any:
    import pandas as pd

    words = ["river", "stone", "garden", "window", "tiger", "castle"]
    return pd.DataFrame({"w": [f"{words[i % 6]} {words[(i // 6) % 6]} {i}" for i in range(n)]})


def timed(n: int, max_tokens: int, backend: Any = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = frame(n).gptoss.map("Uppercase the word: {w}", effort="low", max_tokens=max_tokens,
                              cache=False, progress=False, usage=True, backend=backend)
    seconds = time.perf_counter() - t0
    tokens = int(out["completion_tokens"].sum())
    return {"rows": n, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds, 2),
            "tokens": tokens, "answers": list(out["answer"].astype(str))}


def line(points: list[dict[str, Any]]) -> tuple[float, float]:
    """Slope (s/row) and intercept (s) through the first and last points."""
    a, b = points[0], points[-1]
    slope = (b["seconds"] - a["seconds"]) / (b["rows"] - a["rows"])
    return slope, a["seconds"] - slope * a["rows"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    import gptoss_magics as gm

    gm.load(args.model)
    here = [timed(n, args.max_tokens) for n in args.sizes]
    gm.unload()
    ray.init(num_cpus=max(args.replicas), log_to_driver=False)
    routes: dict[str, Any] = {"in-process": here}
    try:
        for r in args.replicas:
            b = gm.RayBackend(replicas=r, model=args.model, batch_size=16)
            routes[f"ray x{r}"] = [timed(n, args.max_tokens, b) for n in args.sizes]
    finally:
        ray.shutdown()
    slope0, _ = line(here)
    table = {}
    for name, points in routes.items():
        slope, fixed = line(points)
        same = all(p["answers"] == q["answers"] for p, q in zip(points, here, strict=True))
        table[name] = {"points": [{k: v for k, v in p.items() if k != "answers"}
                                  for p in points],
                       "s_per_row": round(slope, 4), "fixed_s": round(fixed, 2),
                       "overhead_ms_per_row": round(1000 * (slope - slope0), 1),
                       "same_answers_as_in_process": same}
    return {"model": args.model, "max_tokens": args.max_tokens, "sizes": args.sizes,
            "cpus": os.cpu_count(), "routes": table}


def markdown(result: dict[str, Any]) -> str:
    rows = ["| route | rows/s at " + " / ".join(str(n) for n in result["sizes"]) +
            " rows | s per row | fixed s per map | Ray overhead ms/row | same answers |",
            "|---|---|---|---|---|---|"]
    for name, r in result["routes"].items():
        speeds = " / ".join(f"{p['rows_per_s']:.2f}" for p in r["points"])
        rows.append(f"| {name} | {speeds} | {r['s_per_row']:.3f} | {r['fixed_s']:.1f} | "
                    f"{r['overhead_ms_per_row'] if name != 'in-process' else '-'} | "
                    f"{'yes' if r['same_answers_as_in_process'] else 'no'} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--sizes", type=int, nargs=2, default=[32, 160])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="gptoss-bench-ray-")
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
