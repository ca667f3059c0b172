"""vLLM general plugin, run by vLLM in every engine process (entry point
``vllm.general_plugins``). Part of the engine layer: only vLLM imports it.

1. AMX permission. On CPUs with AMX (Sapphire Rapids and newer), vLLM's bf16 CPU
   attention kernel executes AMX instructions, and Linux kills a process that uses
   AMX without first asking for the permission (``arch_prctl(ARCH_REQ_XCOMP_PERM)``):
   a SIGILL that takes the notebook kernel down. oneDNN asks only on some code
   paths, so a small first request can crash. Asking here, before any kernel runs,
   prevents it.

2. The ``gptoss_final`` reasoning parser. vLLM's own ``openai_gptoss`` parser
   reports reasoning as already finished, so a structured-output constraint
   (choices, regex, JSON schema) applies from the first token and the model cannot
   open its analysis channel. This parser ends "reasoning" only once the model has
   written ``<|channel|>final<|message|>``: the analysis stays free and only the
   final answer is constrained.

3. Reasoning budgets (:func:`parser_kwargs`): vLLM's ``thinking_token_budget`` counts the
   tokens after the analysis header and, when a request's budget runs out, forces the
   tokens that close the analysis and open the final channel, in the engine's own
   sampling step (no second request, batches stay whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .harmony import FINAL_MARK, FORCED_FINAL_TEXT, REASONING_START_TEXT

PARSER_NAME = "gptoss_final"


def _find_mark(ids: Sequence[int], start: int = 0) -> int:
    """Index just past the first final-channel marker at or after ``start``, or -1."""
    a, b, c = FINAL_MARK
    for i in range(max(0, start), len(ids) - 2):
        if ids[i] == a and ids[i + 1] == b and ids[i + 2] == c:
            return i + 3
    return -1


def register() -> None:
    """Entry point: AMX permission, then register the reasoning parser (lazily)."""
    _init_amx()
    try:
        from vllm.reasoning import ReasoningParserManager
    except ImportError:  # pragma: no cover - vLLM without reasoning parsers
        return
    ReasoningParserManager.register_lazy_module(
        PARSER_NAME, "gptoss_magics._vllm_reasoning", "HarmonyFinalReasoningParser")


def _init_amx() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return
    cpu = getattr(torch, "cpu", None)
    is_supported = getattr(cpu, "_is_amx_tile_supported", None)
    init_amx = getattr(getattr(torch._C, "_cpu", None), "_init_amx", None)
    if is_supported is not None and init_amx is not None and is_supported():
        init_amx()


def supports_reasoning_budget() -> bool:
    """True when this vLLM has per-request thinking budgets (``reasoning_config``)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return any(f.name == "reasoning_config" for f in dataclasses.fields(EngineArgs))


def parser_kwargs() -> dict[str, Any]:
    """Engine arguments that enable the parser (with compact JSON output) and, where
    this vLLM has them, reasoning budgets."""
    args: dict[str, Any] = {"structured_outputs_config": {
        "backend": "xgrammar", "reasoning_parser": PARSER_NAME,
        "disable_any_whitespace": True}}
    if supports_reasoning_budget():
        args["reasoning_config"] = {"reasoning_start_str": REASONING_START_TEXT,
                                    "reasoning_end_str": FORCED_FINAL_TEXT}
    return args
