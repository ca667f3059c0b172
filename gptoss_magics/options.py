"""The prompt options, declared once, and how a call's options are resolved.

Every surface takes the same options: ``complete``, ``complete_batch``, ``stream``,
``df.gptoss.map`` / ``submit`` / ``plan``, ``compare_efforts``, the ``%%gptoss`` and
``%gptoss_map`` magics and the effort panel. They are declared here once:
:class:`PromptOptions` (the names and types, for type checkers and ``Unpack``) and
:data:`OPTION_DOCS` (the help text and the magic flags). :func:`with_options` gives a
function taking ``**options`` a real signature and docstring, so ``gm.complete?``,
``df.gptoss.map?`` and IDE completion show every option.

An option left out takes its value from :func:`gptoss_magics.settings`. Some options
take ``None`` as a real value (``seed=None``: a fresh draw; ``reasoning_budget=None``: no
limit), so "not given" is the :data:`UNSET` sentinel, never a string.

:meth:`Options.resolve` checks every value and raises :class:`InvalidOptionError`
(one line naming the option and what it accepts) before anything is generated.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, TypeVar

from . import harmony
from .constraint import Constraint
from .errors import InvalidOptionError
from .settings import EFFORTS, settings
from .tools import MAX_ROUNDS, TIMEOUT_S, declarations, resolve_tools, tools_identity

#: Largest seed the engine accepts (a 64-bit signed integer).
MAX_SEED: Final = 2**63 - 1


class _Unset:
    """The type of :data:`UNSET`: an option that was not given."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<from settings>"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


#: An option that was not given: its value comes from the settings.
UNSET: Final = _Unset()


class PromptOptions(TypedDict, total=False):
    """The options of one prompt (every surface takes them)."""

    effort: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    instructions: str
    reasoning_budget: int | None
    confidence: bool
    choices: Sequence[str] | None
    regex: str | None
    schema: Any
    tools: Sequence[Any] | None
    max_tool_rounds: int
    tool_timeout_s: float


class MapOptions(PromptOptions, total=False):
    """The options of a DataFrame map: the prompt options and what the map returns."""

    examples: Any
    reasoning: bool
    usage: bool
    cache: bool
    on_error: str
    progress: bool
    cascade: Any
    tool_calls: bool
    backend: Any


@dataclass(frozen=True)
class OptionDoc:
    """Help for one option, and its magic flags (None: no flag)."""

    help: str
    flags: tuple[str, ...] = ()
    default: Any = UNSET  # the default when not from the settings


#: Help and magic flags of every option; the keys are exactly the options.
OPTION_DOCS: Final[dict[str, OptionDoc]] = {
    "effort": OptionDoc("Reasoning effort: low, medium or high.", ("--effort", "-e")),
    "max_tokens": OptionDoc("Most tokens generated per reply, reasoning included.",
                            ("--max-tokens", "-n")),
    "temperature": OptionDoc("Sampling temperature (0 is greedy).", ("--temperature", "-t")),
    "top_p": OptionDoc("Nucleus sampling threshold, in (0, 1].", ("--top-p",)),
    "seed": OptionDoc("Sampling seed, 0 to 2**63-1 (None: a fresh draw each time).",
                      ("--seed", "-s")),
    "instructions": OptionDoc("Developer instructions sent with the prompt.",
                              ("--instructions", "-i")),
    "reasoning_budget": OptionDoc(
        "Most reasoning tokens; then the answer is forced (None / 'none': no limit).",
        ("--reasoning-budget", "-b")),
    "confidence": OptionDoc("Report the model's probability of its answer.",
                            ("--confidence",), False),
    "choices": OptionDoc("The answer is one of these labels (a list of strings).",
                         ("--choices",), None),
    "regex": OptionDoc("The answer matches this regular expression.", ("--regex",), None),
    "schema": OptionDoc("The answer is JSON of this pydantic model or JSON schema dict.",
                        ("--schema",), None),
    "tools": OptionDoc("Tools the model may call: Python functions (their docstring and type "
                       "hints describe them) and 'python', the sandboxed Python tool.",
                       ("--tools",), None),
    "max_tool_rounds": OptionDoc("Most tool calls per reply; a call past it is refused and "
                                 "the model told to answer.", (), MAX_ROUNDS),
    "tool_timeout_s": OptionDoc("Seconds one tool call may take; then the model is told it "
                                "timed out.", (), TIMEOUT_S),
    "examples": OptionDoc("Worked examples (few-shot): a DataFrame with the template's "
                          "columns and an 'answer' column, or (input, answer) pairs.",
                          ("--examples",), None),
    "reasoning": OptionDoc("Also return the reasoning as a column.", ("--reasoning",), False),
    "usage": OptionDoc("Also return prompt, reasoning and completion token columns.",
                       ("--usage",), False),
    "cache": OptionDoc("Serve rows from, and save them to, the on-disk result cache.",
                       (), True),
    "on_error": OptionDoc("'mark' puts failures into an error column; 'raise' raises.",
                          (), "mark"),
    "progress": OptionDoc("Show a progress bar.", (), True),
    "cascade": OptionDoc("A gptoss_magics.Cascade: rows run at its first level; those the "
                         "model is unsure of go on to the next (map and plan only).",
                         (), None),
    "tool_calls": OptionDoc("With tools, also return each row's tool calls as a column (a "
                            "list of dicts per row).", ("--tool-calls",), False),
    "backend": OptionDoc("Where the rows are generated: None (the model loaded here) or "
                         "gptoss_magics.RayBackend(replicas=N, ...) (a Ray cluster, through "
                         "Ray Data; map and submit only).", (), None),
}

PROMPT_OPTIONS: Final = tuple(PromptOptions.__annotations__)
MAP_OPTIONS: Final = tuple(MapOptions.__annotations__)

F = TypeVar("F", bound=Callable[..., Any])


def with_options(names: Sequence[str] = PROMPT_OPTIONS) -> Callable[[F], F]:
    """Give a function that takes ``**options`` a signature and docstring listing ``names``
    (what ``fn?`` and IDE completion show)."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        hints = {**PromptOptions.__annotations__, **MapOptions.__annotations__}
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY,
                                     default=OPTION_DOCS[n].default,
                                     annotation=getattr(hints[n], "__forward_arg__", hints[n]))
                   for n in names]
        fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        lines = [f"    {n}: {OPTION_DOCS[n].help}" for n in names]
        fn.__doc__ = (fn.__doc__ or "").rstrip() + (
            "\n\n    Options (unset ones come from gptoss_magics.settings()):\n"
            + "\n".join(lines) + "\n")
        return fn

    return decorate


def check_names(given: Mapping[str, Any], allowed: Sequence[str] = PROMPT_OPTIONS) -> None:
    """Refuse an option name that is not one of ``allowed``, suggesting the closest."""
    for name in given:
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidOptionError(f"unknown option {name!r}{hint}; the options are "
                                     f"{', '.join(allowed)}")


# ---------------------------------------------------------------------- validation
def _bad(name: str, accepts: str, value: Any) -> InvalidOptionError:
    return InvalidOptionError(f"{name} must be {accepts}, not {value!r:.80}")


def check_int(name: str, value: Any, low: int, high: int | None = None,
              accepts: str | None = None) -> int:
    """``value`` as an int in [low, high]; bools, floats and strings are refused."""
    what = accepts or (f"a whole number from {low:,}" + (f" to {high:,}" if high else ""))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _bad(name, what, value)
    number = operator.index(value)
    if number < low or (high is not None and number > high):
        raise _bad(name, what, value)
    return number


def check_float(name: str, value: Any, low: float, high: float | None = None, *,
                low_open: bool = False, accepts: str = "") -> float:
    """``value`` as a finite float within the bounds; bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(float(value)):
        raise _bad(name, accepts, value)
    number = float(value)
    if number < low or (low_open and number == low) or (high is not None and number > high):
        raise _bad(name, accepts, value)
    return number


def check_effort(value: Any) -> str:
    """A reasoning effort, case-insensitive."""
    if not isinstance(value, str) or value.strip().lower() not in EFFORTS:
        raise _bad("effort", "'low', 'medium' or 'high'", value)
    return value.strip().lower()


def check_seed(value: Any) -> int | None:
    """A sampling seed (None: a fresh draw)."""
    if value is None:
        return None
    return check_int("seed", value, 0, MAX_SEED, "a whole number from 0 to 2**63-1, or None")


def check_budget(value: Any) -> int | None:
    """A reasoning budget (None: no limit)."""
    if value is None:
        return None
    return check_int("reasoning_budget", value, 0, None,
                     "a number of tokens (0 or more), or None for no limit")


def check_bool(name: str, value: Any) -> bool:
    """A flag: True or False only."""
    if not isinstance(value, bool):
        raise _bad(name, "True or False", value)
    return value


# ---------------------------------------------------------------------- resolved
@dataclass(frozen=True)
class Options:
    """Resolved options of one request: call arguments first, then the settings."""

    effort: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    instructions: str
    current_date: str | None
    knowledge_cutoff: str
    reasoning_budget: int | None = None
    confidence: bool = False
    constraint: Constraint = field(default_factory=lambda: Constraint("none"))
    tools: tuple[Any, ...] = ()
    max_tool_rounds: int = MAX_ROUNDS
    tool_timeout_s: float = TIMEOUT_S

    @classmethod
    def resolve(cls, **given: Any) -> Options:
        """Fill unset options from the settings and check every value.

        Raises :class:`InvalidOptionError` naming the option."""
        check_names(given)
        s = settings()

        def pick(name: str, fallback: Any) -> Any:
            value = given.get(name, UNSET)
            return fallback if value is UNSET else value

        instructions = pick("instructions", s.instructions)
        if instructions is None:
            instructions = ""
        if not isinstance(instructions, str):
            raise _bad("instructions", "a string", instructions)
        return cls(
            effort=check_effort(pick("effort", s.effort)),
            max_tokens=check_int("max_tokens", pick("max_tokens", s.max_tokens), 1),
            temperature=check_float("temperature", pick("temperature", s.temperature), 0.0,
                                    accepts="a number, 0 or more"),
            top_p=check_float("top_p", pick("top_p", s.top_p), 0.0, 1.0, low_open=True,
                              accepts="a number in (0, 1]"),
            seed=check_seed(pick("seed", s.seed)),
            instructions=instructions,
            current_date=s.resolved_date(),
            knowledge_cutoff=s.knowledge_cutoff,
            reasoning_budget=check_budget(pick("reasoning_budget", s.reasoning_budget)),
            confidence=check_bool("confidence", pick("confidence", False)),
            constraint=Constraint.make(pick("choices", None), pick("schema", None),
                                       pick("regex", None)),
            tools=resolve_tools(pick("tools", None)),
            max_tool_rounds=check_int("max_tool_rounds",
                                      pick("max_tool_rounds", MAX_ROUNDS), 0, 1000),
            tool_timeout_s=check_float("tool_timeout_s", pick("tool_timeout_s", TIMEOUT_S),
                                       0.0, low_open=True,
                                       accepts="a number of seconds, more than 0"),
        )

    def render(self, prompt: str, history: Sequence[harmony.Turn] = (), *,
               run_tools: bool = False) -> list[int]:
        """Prompt token ids for ``prompt`` under these options. With tools, only a caller
        that runs them (``run_tools=True``) may render the prompt that declares them."""
        return harmony.render_prompt(prompt, **self._render_args(history, run_tools))

    def renderer(self, history: Sequence[harmony.Turn] = (), *,
                 run_tools: bool = False) -> harmony.PromptRenderer:
        """A function rendering many prompts as :meth:`render` would, token for token, with
        the opening messages rendered once (a map's rows)."""
        return harmony.PromptRenderer(**self._render_args(history, run_tools))

    def _render_args(self, history: Sequence[harmony.Turn], run_tools: bool
                     ) -> dict[str, Any]:
        if self.tools and not run_tools:
            raise InvalidOptionError(
                "this surface does not run tools yet (complete, complete_batch, stream, "
                "%%gptoss and the DataFrame map do): leave tools out here")
        specs, python = declarations(self.tools)
        return dict(effort=self.effort, instructions=self.instructions or None,
                    history=history, knowledge_cutoff=self.knowledge_cutoff,
                    current_date=self.current_date, tools=specs, python=python)

    def sampling(self) -> Any:
        """The engine's sampling settings for these options."""
        from .engine import Sampling

        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature,
                        top_p=self.top_p, seed=self.seed,
                        stop_token_ids=harmony.STOP_TOKEN_IDS,
                        reasoning_budget=self.reasoning_budget,
                        logprobs=True if self.confidence else None,
                        **self.constraint.sampling_args)

    def describe(self) -> dict[str, Any]:
        """The options as plain data, for provenance records (with tools: their
        identities and limits)."""
        out: dict[str, Any] = {
            "effort": self.effort, "instructions": self.instructions,
            "current_date": self.current_date, "knowledge_cutoff": self.knowledge_cutoff}
        if self.tools:
            out.update(tools=tools_identity(self.tools), max_tool_rounds=self.max_tool_rounds,
                       tool_timeout_s=self.tool_timeout_s)
        return out


__all__ = ["MAP_OPTIONS", "OPTION_DOCS", "PROMPT_OPTIONS", "UNSET", "MapOptions", "Options",
           "PromptOptions", "check_names", "with_options"]
