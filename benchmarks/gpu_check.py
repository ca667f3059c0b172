#!/usr/bin/env python
"""The CUDA path in one short run, for the first machine with an NVIDIA GPU (official
vllm): load, generate, stream, unload, several times over, and check that the GPU memory
comes back each time, against what vLLM's own tests do to free a GPU between two engines.

1. ``--cycles`` load / batch / stream / unload cycles through ``gptoss_magics`` (default 5).
   After each unload: GPU memory in use (device-wide, ``torch.cuda.mem_get_info``), this
   process's CUDA caching allocator (``memory_reserved``, ``memory_allocated``), its
   pinned host cache and RSS; the load time.
2. The reference, in a fresh child process: raw ``vllm.LLM`` on the same folder, freed the
   way vLLM's tests do it (``tests/conftest.py``: ``VllmRunner.__exit__`` is ``del llm`` then
   ``vllm.distributed.cleanup_dist_env_and_memory()``; ``torch._dynamo.reset()`` after each
   test), twice, with the same figures. ``--no-reference`` skips it.

Passes (exit 0) when every unload gives back at least 97% of the GPU memory the load took,
the GPU memory after unload grows by no more than 64 MiB over the cycles, and nothing is
left in this process's caching allocator (at most 64 MiB reserved). Prints one JSON object.

Usage: python benchmarks/gpu_check.py [MODEL] [--cycles 5] [--no-reference]
       (MODEL: tiny, the default, or a weights folder)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

MIB = 2**20
#: GPU memory (MiB) an unload may leave over the first baseline, over all cycles
GROWTH_LIMIT_MIB = 64
#: share of a load's GPU memory an unload must give back
RETURNED_MIN = 0.97

REFERENCE = """
import gc, json, sys, time
import torch
torch.cuda.init()
from vllm import LLM, SamplingParams
from vllm.distributed import cleanup_dist_env_and_memory

def used():
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20

out = {"before_mib": used(), "cycles": []}
for _ in range(2):
    t = time.perf_counter()
    llm = LLM(sys.argv[1], **json.loads(sys.argv[2]))
    load_s = time.perf_counter() - t
    llm.generate(["What is 2 + 2?"], SamplingParams(max_tokens=16), use_tqdm=False)
    loaded = used()
    del llm
    cleanup_dist_env_and_memory()
    torch._dynamo.reset()
    out["cycles"].append({"load_s": round(load_s, 1), "loaded_mib": round(loaded),
                          "after_unload_mib": round(used()),
                          "reserved_mib": round(torch.cuda.memory_reserved() / 2**20)})
print("REFERENCE", json.dumps(out))
"""


def gpu_used_mib() -> float:
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / MIB


def our_cycles(model: str, cycles: int) -> dict[str, Any]:
    """Load / generate / stream / unload through gptoss_magics, ``cycles`` times."""
    import psutil
    import torch

    import gptoss_magics as gm

    torch.cuda.init()  # the CUDA context is part of the baseline, not of the model
    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0),
                           "before_mib": round(gpu_used_mib()), "cycles": []}
    for _ in range(cycles):
        t0 = time.perf_counter()
        st = gm.load(model, gpu_memory_utilization=0.3, progress=False)
        load_s = time.perf_counter() - t0
        replies = gm.complete_batch([f"What is {i} + {i + 7}?" for i in range(64)],
                                    effort="low", temperature=0, max_tokens=128)
        pieces = list(gm.stream("What is 17 + 25?", effort="high", temperature=0))
        loaded = gpu_used_mib()
        mem = gm.unload()
        after = gpu_used_mib()
        took = loaded - out["before_mib"]
        out["device"] = st["device"]
        out["cycles"].append({
            "load_s": round(load_s, 1), "unload_s": mem.get("unload_s"),
            "batch_ok": sum(r.finish_reason in ("stop", "length") for r in replies),
            "tokens_per_s": round(sum(r.completion_tokens for r in replies) /
                                  max(r.latency_s for r in replies), 1),
            "stream_final": getattr(pieces[-1], "final", None) if pieces else None,
            "loaded_mib": round(loaded), "after_unload_mib": round(after),
            "returned_share": round((loaded - after) / took, 4) if took > 0 else None,
            "reserved_mib": round(torch.cuda.memory_reserved() / MIB),
            "allocated_mib": round(torch.cuda.memory_allocated() / MIB),
            "rss_after_unload_mib": round(psutil.Process().memory_info().rss / MIB),
            "rss_returned_share": mem.get("returned_share"),
        })
    return out


def reference(model: str, engine_args: dict[str, Any]) -> dict[str, Any]:
    """vLLM's own free-between-engines sequence, in a fresh child process."""
    done = subprocess.run([sys.executable, "-c", REFERENCE, model, json.dumps(engine_args)],
                          capture_output=True, text=True, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("REFERENCE "):
            result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
            return result
    return {"error": (done.stderr or done.stdout)[-2000:]}


def verdict(ours: dict[str, Any]) -> list[str]:
    """What failed (empty: everything passed)."""
    problems = []
    for i, c in enumerate(ours["cycles"]):
        if c["returned_share"] is not None and c["returned_share"] < RETURNED_MIN:
            problems.append(f"cycle {i}: unload gave back {c['returned_share']:.1%}")
        if c["reserved_mib"] > GROWTH_LIMIT_MIB:
            problems.append(f"cycle {i}: {c['reserved_mib']} MiB left in torch's cache")
    growth = ours["cycles"][-1]["after_unload_mib"] - ours["cycles"][0]["after_unload_mib"]
    if growth > GROWTH_LIMIT_MIB:
        problems.append(f"GPU memory after unload grew {growth} MiB over the cycles")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="tiny")
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GPTOSS_MAGICS_CACHE", tempfile.mkdtemp(prefix="gptoss-gpu-"))
    from gptoss_magics.models import resolve_model
    from gptoss_magics.tiny import TINY_ENGINE_ARGS

    path, tiny = resolve_model(args.model)
    out: dict[str, Any] = {"model": args.model}
    if not args.no_reference:  # first, in its own process, before this one touches CUDA
        ref_args = dict(TINY_ENGINE_ARGS) if tiny else {}
        ref_args["gpu_memory_utilization"] = 0.3
        out["reference"] = reference(str(path), ref_args)
    out["ours"] = our_cycles(args.model, args.cycles)
    out["problems"] = verdict(out["ours"])
    print(json.dumps(out, indent=1))
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
