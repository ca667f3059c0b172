"""What goes into an engine and what comes out: sampling settings, completions, events,
and :class:`EngineProtocol`, the seam every engine implements (the vLLM one and the
scripted one used by fast tests)."""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ..errors import InvalidOptionError

if TYPE_CHECKING:
    from .job import Job

#: Largest seed the engine accepts: vLLM seeds a 64-bit signed generator.
MAX_SEED: Final = 2**63 - 1


@dataclass(frozen=True)
class Sampling:
    """How to sample one request. ``choice``/``regex``/``json_schema`` constrain the
    output through vLLM's structured outputs (at most one of them).

    Checked when made: a value the engine cannot take raises :class:`InvalidOptionError`
    here, instead of failing later inside the engine."""

    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = 0
    stop_token_ids: tuple[int, ...] = (200002, 200012)
    choice: tuple[str, ...] | None = None
    regex: str | None = None
    json_schema: str | None = None  # JSON text, so that the dataclass stays hashable
    reasoning_budget: int | None = None  # most analysis tokens; then the final is forced
    logprobs: bool | None = None  # True: report each generated token's log-probability

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InvalidOptionError` for a value the engine cannot sample with."""
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise InvalidOptionError(f"max_tokens must be at least 1, not {self.max_tokens!r}")
        if not self.temperature >= 0:  # also refuses NaN
            raise InvalidOptionError(f"temperature must be >= 0, not {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise InvalidOptionError(f"top_p must be in (0, 1], not {self.top_p!r}")
        if self.seed is not None and not (_is_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise InvalidOptionError(
                f"seed must be an integer from 0 to 2**63-1 (or None), not {self.seed!r}")
        if self.reasoning_budget is not None and not (
                _is_int(self.reasoning_budget) and self.reasoning_budget >= 0):
            raise InvalidOptionError(
                "reasoning_budget must be 0 or more tokens (or None), not "
                f"{self.reasoning_budget!r}")
        if sum(x is not None for x in (self.choice, self.regex, self.json_schema)) > 1:
            raise InvalidOptionError(
                "give at most one of choice, regex and json_schema")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for provenance records and cache keys."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class Completion:
    """The outcome of one request. ``finish_reason`` is ``"stop"`` (a stop token),
    ``"length"`` (max_tokens or the context ran out), ``"abort"`` (interrupted or
    cancelled) or ``"error"`` (this request failed; ``error`` says why)."""

    index: int
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    latency_s: float
    first_token_s: float | None = None
    error: str | None = None
    #: log-probability of each generated token (when the sampling asked for them)
    logprobs: list[float] | None = None
    #: a tool conversation that ran where the engine is (a Ray replica), as
    #: ``Conversation.record()`` wrote it; this completion is its last round
    conversation: dict[str, Any] | None = None


@dataclass
class Event:
    """Something that happened to a request of a job: new tokens, or its end."""

    index: int
    new_token_ids: list[int]
    done: Completion | None = None


def context_error(prompt_tokens: int, max_model_len: int) -> str:
    """The error of a request whose prompt leaves no room in the model's context."""
    return (f"the prompt is {prompt_tokens} tokens but the model's context (max_model_len) "
            f"is {max_model_len}: shorten it or load with a larger max_model_len")


def request_error(exc: BaseException) -> str:
    """The error of a request that made the engine fail (the others went on)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"the engine failed on this request ({type(exc).__name__}: {first}); the other "
            "requests went on: check its sampling settings and prompt")


@runtime_checkable
class EngineProtocol(Protocol):
    """What the package needs from an engine: token prompts in, token ids out.

    ``info`` is a dict with the keys ``model``, ``vllm``, ``device``, ``dtype``,
    ``max_model_len``, ``multiprocess``, ``load_s``, ``reasoning_budget`` (per-request
    reasoning budgets are supported) and ``priority`` (priorities are honoured).

    An engine that runs tool conversations itself, where it generates (a Ray cluster's
    ``RayEngine``), also has ``submit_conversations(prompts, sampling, *, tools,
    max_rounds, timeout_s) -> Job``: each request's Completion is a conversation's last
    round with its record in ``Completion.conversation``. A map with tools uses it when
    it is there, and otherwise interleaves the conversations over :meth:`submit`."""

    info: dict[str, Any]

    @property
    def alive(self) -> bool:
        """True while the engine can serve requests."""
        ...

    @property
    def tokens_generated(self) -> int:
        """Tokens generated since the engine started."""
        ...

    def submit(self, prompts: Sequence[Sequence[int]],
               sampling: Sampling | Sequence[Sampling], *, stream: bool = False,
               priority: int = 0) -> Job:
        """Queue token prompts; the :class:`Job` reports their progress."""
        ...

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: Sampling | Sequence[Sampling], *,
                 on_done: Callable[[Completion], None] | None = None,
                 priority: int = 0, cancel: threading.Event | None = None
                 ) -> list[Completion]:
        """Generate every prompt; Completions come back in prompt order."""
        ...

    def stream(self, prompt: Sequence[int], sampling: Sampling
               ) -> Generator[Event, None, None]:
        """Stream one prompt: events with new token ids, the last one ``done``."""
        ...

    def scheduling(self) -> dict[str, int]:
        """``slots``, the ``reserve`` that background requests leave free for
        interactive ones, ``background_held``, ``background_in_flight`` and
        ``interactive_served`` (while background work ran, since the load)."""
        ...

    def close(self, timeout: float = 120.0) -> None:
        """Shut the engine down and give its memory back. Safe to call twice."""
        ...
