"""``Reply``: one answer of gpt-oss, with its reasoning, flags and provenance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import harmony

if TYPE_CHECKING:
    from .constraint import Constraint
    from .tools import ToolCall


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
    ``provenance`` records the model, its weights fingerprint (and ``weights_manifest``,
    the digest of the manifest the weights were verified against at load, or None), the
    vLLM version and every setting that shaped the answer. ``reasoning_cut`` is True
    when a reasoning budget ran out and the model was made to answer after
    ``analysis_tokens`` tokens of reasoning (the answer is complete, but was given with
    less thought).
    ``confidence`` (when asked for) is the model's probability of its final answer: the
    product of the answer tokens' probabilities, after its reasoning and under any
    constraint, at temperature 1. With a constraint (``choices``, ``regex``, ``schema``)
    ``value`` is the answer read back: the label, the matched text, or the schema's
    pydantic object (a dict for a JSON-schema dict); ``value_error`` says why an answer
    did not fit. With tools, ``tool_calls`` is the trail of calls (name, arguments,
    result or error, latency), ``analysis`` the reasoning of every round, the token
    counts cover the whole chain (``prompt_tokens``: the prompt and the tool results the
    model read) and ``tool_limit_hit`` says the model called past ``max_tool_rounds``.
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
    tool_calls: tuple[ToolCall, ...] = field(default=(), repr=False, compare=False)
    tool_limit_hit: bool = False

    @property
    def ok(self) -> bool:
        """True when the model finished and wrote a final answer in harmony form (within
        the tool round limit)."""
        return not (self.truncated or self.malformed or self.error or self.tool_limit_hit) \
            and self.finish_reason == "stop" and bool(self.final.strip())

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
        if self.tool_limit_hit:
            done = max(len(self.tool_calls) - 1, 0)  # the last call was the refused one
            return (f"the model kept calling tools after {done} calls (max_tool_rounds); it "
                    "was told to answer without them" + ("" if self.final else
                                                        " and gave no answer"))
        if self.value_error:
            return f"the answer does not fit the constraint: {self.value_error}"
        if self.recovered:
            return "the output did not follow the harmony format; showing the raw text"
        if self.malformed:
            return "the output did not fully follow the harmony format"
        if self.finish_reason == "stop" and not self.final.strip():
            return "the model ended without a final answer"
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
        out = asdict(replace(self, tool_calls=()))  # a tool's result need not deep-copy
        out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
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


@dataclass(frozen=True)
class Reading:
    """One engine completion read back: what both a Reply and a map row are made of."""

    parsed: harmony.Parsed
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    reasoning_cut: bool
    answer_logprob: float | None
    value: Any = None
    value_error: str | None = None

    @property
    def confidence(self) -> float | None:
        """The model's probability of its answer (with log-probabilities), else None."""
        return None if self.answer_logprob is None else round(math.exp(self.answer_logprob), 6)

    @property
    def answered(self) -> bool:
        """True when there is a complete final answer to read a value from."""
        return self.parsed.has_final and not self.parsed.truncated and not self.error


def read_completion(completion: Any, *, constraint: Constraint | None = None,
                    reasoning_budget: int | None = None, as_model: bool = True,
                    parsed: harmony.Parsed | None = None) -> Reading:
    """Parse an engine ``Completion`` once: the harmony reply, its flags, the answer's
    log-probability, and the constrained value read back (``as_model``: a pydantic
    object for a model schema, else plain JSON data). Never raises: a value that does
    not fit is reported in ``value_error`` as one line."""
    parsed = parsed or harmony.parse_completion(completion.token_ids, completion.finish_reason)
    logprob = None
    if getattr(completion, "logprobs", None) is not None:
        logprob = harmony.answer_logprob(completion.token_ids, completion.logprobs)
    reading = Reading(
        parsed=parsed, finish_reason=completion.finish_reason,
        prompt_tokens=completion.prompt_tokens, completion_tokens=len(completion.token_ids),
        error=completion.error,
        reasoning_cut=reasoning_budget is not None and parsed.analysis_tokens >= reasoning_budget,
        answer_logprob=logprob)
    if constraint is None or constraint.kind == "none" or not reading.answered:
        return reading
    try:
        value = constraint.read(parsed.final, as_model=as_model)
    except (ValueError, TypeError) as exc:
        one_line = " ".join(str(exc).split())  # pydantic's reasons are on later lines
        return _replace(reading, value_error=f"{type(exc).__name__}: {one_line[:300]}")
    return _replace(reading, value=value)


def _replace(reading: Reading, **changes: Any) -> Reading:
    from dataclasses import replace

    return replace(reading, **changes)
