"""``Reply``: one answer of gpt-oss, with its reasoning, flags and provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def strip_fences(text: str) -> str:
    """The inside of the first ``` code fence in ``text``, or the whole text, stripped."""
    import re

    match = re.search(r"```[\w+-]*\n(.*?)```", text, re.S)
    return (match.group(1) if match else text).strip()


@dataclass(frozen=True)
class Reply:
    """What the model answered, and how it was made.

    ``final`` is the answer (the harmony final channel) and ``analysis`` the
    reasoning. ``truncated`` is True when generation stopped early (``max_tokens``
    or an interrupt); ``malformed`` when the output did not follow the harmony format,
    in which case ``final`` holds the best text recovered. ``str(reply)`` is the answer.
    ``provenance`` records the model, its weights fingerprint, the vLLM version and
    every setting that shaped the answer. ``reasoning_cut`` is True when a reasoning
    budget ran out and the model was made to answer after ``analysis_tokens`` tokens of
    reasoning (the answer is complete, but was given with less thought).
    ``confidence`` (when asked for) is the model's probability of its final answer: the
    product of the answer tokens' probabilities, after its reasoning and under any
    constraint, at temperature 1. With a constraint (``choices``, ``regex``, ``schema``)
    ``value`` is the answer read back: the label, the matched text, or the schema's
    pydantic object (a dict for a JSON-schema dict); ``value_error`` says why an answer
    did not fit.
    """

    final: str
    analysis: str
    finish_reason: str
    truncated: bool
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    effort: str
    model: str
    analysis_tokens: int = 0
    first_token_s: float | None = None
    malformed: bool = False
    recovered: bool = False
    reasoning_cut: bool = False
    confidence: float | None = None
    value: Any = field(default=None, compare=False)
    value_error: str | None = None
    error: str | None = None
    notice: str | None = None
    prompt: str = field(default="", repr=False)
    token_ids: tuple[int, ...] = field(default=(), repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the model finished and wrote a final answer in harmony form."""
        return not (self.truncated or self.malformed or self.error) and self.finish_reason == "stop"

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of latency."""
        return self.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def warning(self) -> str | None:
        """One line saying what is wrong with this reply, or None."""
        if self.error:
            return f"error: {self.error}"
        if self.finish_reason == "abort":
            return f"interrupted after {self.completion_tokens} tokens; the text so far is kept"
        if self.truncated and not self.final:
            return (f"hit max_tokens ({self.completion_tokens} tokens) while reasoning, before any "
                    "answer: raise max_tokens, lower the effort, or set a reasoning budget "
                    "below max_tokens")
        if self.truncated:
            return f"hit max_tokens ({self.completion_tokens} tokens): the answer is cut off"
        if self.value_error:
            return f"the answer does not fit the constraint: {self.value_error}"
        if self.recovered:
            return "the output did not follow the harmony format; showing the raw text"
        if self.malformed:
            return "the output did not fully follow the harmony format"
        return None

    def __str__(self) -> str:
        return self.final

    def json(self) -> Any:
        """The answer parsed as JSON (a surrounding ``` code fence is allowed).

        Raises ValueError, saying why, when the answer is not valid JSON.
        """
        import json

        try:
            return json.loads(strip_fences(self.final))
        except ValueError as exc:
            raise ValueError(f"the answer is not valid JSON ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain data (JSON-serialisable)."""
        out = asdict(self)
        out["token_ids"] = list(self.token_ids)
        if hasattr(self.value, "model_dump"):
            out["value"] = self.value.model_dump(mode="json")
        out["tokens_per_s"] = round(self.tokens_per_s, 2)
        out["warning"] = self.warning
        return out

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
        from .display import reply_bundle

        return reply_bundle(self, include=include, exclude=exclude)
