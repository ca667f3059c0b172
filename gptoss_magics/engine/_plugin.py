"""vLLM general plugin, run by vLLM in every engine process (entry point
``vllm.general_plugins``: ``gptoss_magics.engine._plugin:register``). Part of the engine
layer: only vLLM and the engine import it.

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

3. The ``gptoss_magics`` tokenizer mode (:mod:`._tokenizer`): the model folder's tokenizer
   parsed once, with no thread-pool copies (vLLM's own mode spent most of a load on them).

4. Reasoning budgets (:func:`parser_kwargs`): vLLM's ``thinking_token_budget`` counts the
   tokens after the analysis header and, when a request's budget runs out, forces the
   tokens that close the analysis and open the final channel, in the engine's own
   sampling step (no second request, batches stay whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..harmony import FINAL_MARK, FORCED_FINAL_TEXT, REASONING_START_TEXT
from . import _compat

PARSER_NAME = "gptoss_final"
#: where vLLM finds the parser class (imported only when a request needs it)
PARSER_MODULE = "gptoss_magics.engine._reasoning"
TOKENIZER_MODE = "gptoss_magics"
TOKENIZER_MODULE = "gptoss_magics.engine._tokenizer"


def _find_mark(ids: Sequence[int], start: int = 0) -> int:
    """Index just past the first final-channel marker at or after ``start``, or -1."""
    a, b, c = FINAL_MARK
    for i in range(max(0, start), len(ids) - 2):
        if ids[i] == a and ids[i + 1] == b and ids[i + 2] == c:
            return i + 3
    return -1


def register() -> None:
    """Entry point: AMX permission, then register the reasoning parser and the tokenizer
    mode (both imported by vLLM only when used)."""
    _compat.init_amx()
    _compat.register_reasoning_parser(PARSER_NAME, PARSER_MODULE,
                                      "HarmonyFinalReasoningParser")
    register_tokenizer_mode()


def register_tokenizer_mode() -> None:
    """Register the ``gptoss_magics`` tokenizer mode (idempotent; also called in-process
    before each load, so that it works without the installed entry point)."""
    _compat.register_tokenizer_mode(TOKENIZER_MODE, TOKENIZER_MODULE, "GptOssTokenizer")


def supports_reasoning_budget() -> bool:
    """True when this vLLM has per-request thinking budgets (``reasoning_config``)."""
    return _compat.supports_reasoning_budget()


def parser_kwargs() -> dict[str, Any]:
    """Engine arguments that enable the parser (with compact JSON output), the tokenizer
    mode and, where this vLLM has them, reasoning budgets."""
    register_tokenizer_mode()
    args: dict[str, Any] = {"structured_outputs_config": {
        "backend": "xgrammar", "reasoning_parser": PARSER_NAME,
        "disable_any_whitespace": True}}
    if _compat.has_tokenizer_mode(TOKENIZER_MODE):
        args["tokenizer_mode"] = TOKENIZER_MODE
    if supports_reasoning_budget():
        args["reasoning_config"] = {"reasoning_start_str": REASONING_START_TEXT,
                                    "reasoning_end_str": FORCED_FINAL_TEXT}
    return args
