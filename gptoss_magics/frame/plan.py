"""What a map would do, worked out without generating anything."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..views import html_table, text_table


@dataclass
class MapPlan:
    """What a map would do, worked out without generating anything.

    ``first_prompt`` is the exact text the model would receive for the first row
    (the harmony system, developer and user messages, with the tools' declarations, which
    the prompt token counts include). ``cached`` and ``too_long`` are known only with a
    model loaded (None otherwise). With ``tools`` (their recipients), each row may take up
    to ``max_tool_rounds`` calls, each followed by another generation.
    """

    rows: int
    missing: int
    distinct_prompts: int
    cached: int | None
    to_generate: int | None
    prompt_tokens_min: int
    prompt_tokens_median: float
    prompt_tokens_max: int
    too_long: list[Any] | None
    max_tokens: int
    reasoning_budget: int | None
    effort: str
    constraint: str
    first_prompt: str
    tools: tuple[str, ...] = ()
    max_tool_rounds: int = 0

    @property
    def most_tokens(self) -> int | None:
        """The most tokens the run can generate: prompts to generate x max_tokens (x the
        generations a row may take, with tools)."""
        rounds = self.max_tool_rounds + 1 if self.tools else 1
        return None if self.to_generate is None else self.to_generate * self.max_tokens * rounds

    def _rows(self) -> list[tuple[str, str]]:
        def known(v: Any) -> str:
            return "? (no model loaded)" if v is None else f"{v:,}"

        return [
            ("rows", f"{self.rows:,} ({self.missing:,} with missing values, not sent)"),
            ("distinct prompts", f"{self.distinct_prompts:,}"),
            ("from the cache", known(self.cached)),
            ("to generate", known(self.to_generate)),
            ("prompt tokens", f"{self.prompt_tokens_min:,} / {self.prompt_tokens_median:,.0f} "
                              f"/ {self.prompt_tokens_max:,} (min / median / max)"),
            ("longer than the context", "? (no model loaded)" if self.too_long is None
             else f"{len(self.too_long):,}"),
            ("settings", f"effort {self.effort}, max_tokens {self.max_tokens:,}, reasoning "
                         f"budget {self.reasoning_budget}, constraint {self.constraint}"),
            ("tools", "none" if not self.tools else
             f"{', '.join(t.removeprefix('functions.') for t in self.tools)} (at most "
             f"{self.max_tool_rounds} calls per row)"),
            ("at most", "?" if self.most_tokens is None
             else f"{self.most_tokens:,} generated tokens"),
        ]

    def __repr__(self) -> str:
        return (f"{text_table(self._rows())}\n--- first prompt, as the model receives it ---\n"
                f"{self.first_prompt}")

    def _repr_html_(self) -> str:
        return (f"{html_table(self._rows(), 'gptoss-plan')}<details><summary>first prompt, as "
                f"the model receives it</summary><pre>{html.escape(self.first_prompt)}</pre>"
                "</details>")
