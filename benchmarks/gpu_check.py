#!/usr/bin/env python
"""The CUDA path in one short run: load, generate, stream, unload, and check that the
GPU memory comes back. For a machine with an NVIDIA GPU and the official vllm.

Usage: python benchmarks/gpu_check.py [MODEL]   (default: tiny; or a weights folder)
Prints one JSON object; exits 1 if the memory did not come back.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def main() -> int:
    model = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    os.environ.setdefault("GPTOSS_MAGICS_CACHE", tempfile.mkdtemp(prefix="gptoss-gpu-"))
    import torch

    import gptoss_magics as gm

    torch.cuda.init()  # the CUDA context is part of the baseline, not of the model
    out: dict[str, object] = {"model": model, "gpu": torch.cuda.get_device_name(0)}
    for cycle in range(2):
        t0 = time.perf_counter()
        st = gm.load(model, gpu_memory_utilization=0.3)
        out[f"load_s_{cycle}"] = round(time.perf_counter() - t0, 1)
        out["device"] = st["device"]
        replies = gm.complete_batch([f"What is {i} + {i + 7}?" for i in range(64)],
                                    effort="low", temperature=0, max_tokens=128)
        out["batch_ok"] = sum(r.finish_reason in ("stop", "length") for r in replies)
        out["tokens_per_s"] = round(sum(r.completion_tokens for r in replies) /
                                    max(r.latency_s for r in replies), 1)
        pieces = list(gm.stream("What is 17 + 25?", effort="high", temperature=0))
        out["stream_final"] = pieces[-1].final
        mem = gm.unload()
        out[f"gpu_before_gib_{cycle}"] = round((mem["gpu_before_load"] or 0) / 2**30, 2)
        out[f"gpu_loaded_gib_{cycle}"] = round((mem["gpu_loaded"] or 0) / 2**30, 2)
        out[f"gpu_after_gib_{cycle}"] = round((mem["gpu_after_unload"] or 0) / 2**30, 2)
    print(json.dumps(out, indent=1))
    freed = out["gpu_after_gib_1"] <= out["gpu_before_gib_0"] + 0.5  # type: ignore[operator]
    return 0 if freed else 1


if __name__ == "__main__":
    sys.exit(main())
