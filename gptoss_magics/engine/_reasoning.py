"""The ``gptoss_final`` vLLM reasoning parser (see :mod:`gptoss_magics.engine._plugin`).

Imported by vLLM only, when a structured-output request meets a gpt-oss engine
loaded by gptoss_magics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vllm.reasoning import ReasoningParser

from ._plugin import FINAL_MARK, _find_mark


class HarmonyFinalReasoningParser(ReasoningParser):
    """Treats everything before ``<|channel|>final<|message|>`` as reasoning."""

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        # Called on the prompt: reasoning is over only if the prompt itself ends by
        # opening the final channel (earlier turns' finals in a chat do not count).
        return tuple(input_ids[-3:]) == FINAL_MARK

    def is_reasoning_end_streaming(self, input_ids: Sequence[int],
                                   delta_ids: Iterable[int]) -> bool:
        start = len(input_ids) - len(list(delta_ids)) - (len(FINAL_MARK) - 1)
        return _find_mark(input_ids, start) != -1

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        end = _find_mark(input_ids)
        return input_ids[end:] if end != -1 else []

    def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
        return None, model_output

    def extract_reasoning_streaming(self, *args: Any, **kwargs: Any) -> None:
        return None
