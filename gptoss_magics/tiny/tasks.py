"""The toy tasks of the embedded tiny gpt-oss, as synthetic harmony transcripts.

The trained tiny model (``build_tiny("tiny")``) learnt only these tasks. Three it gets
right at every effort (:data:`TASKS`):

* **sentiment**: a few filler words plus one or two keywords from a fixed positive or
  negative list (or none: neutral); the answer is ``positive``, ``negative`` or
  ``neutral``;
* **upper**: a known word to write in capital letters; the answer is the word
  upper-cased;
* **add**: two numbers from 0 to 99; the answer is their sum, reached by a digit by
  digit chain of thought.

Two more (:data:`ARITH_TASKS`, made in :mod:`gptoss_magics.tiny.arith`) show tools and
effort: **multiply** (two numbers of 2 or 3 digits: right only with a tool, the
``multiply`` function tool or the python tool) and **sum3** (three numbers from 10 to 99:
low effort skips the carry and is unsure when the units carry).

Each :class:`Example` holds a user prompt, the reasoning (analysis channel), the final
answer and, for a tool call, the tool round. The reasoning grows with the effort written
into the system message: ``low`` is the core step, ``medium`` adds a restatement of the
request, ``high`` adds a check and a closing "Final answer: ...". A prompt may declare
tools (:data:`TOOLINGS`); the old tasks are then answered directly, without a call.

Some prompts are held out of training (15% of the addition pairs, 20% of the
(word, template) pairs for upper-casing, a tenth of the sentiment texts, of the
multiplication pairs and of the sum triples, by a hash), so :func:`held_out` gives
prompts the model has never seen with answers that can be checked by :func:`is_correct`.
:func:`transcript` renders a whole conversation (prompt, tool round, answer) as the
session renders it, with the spans the model writes marked.

Pure Python: only the standard library and :mod:`gptoss_magics.harmony` (for token ids).
"""

from __future__ import annotations

import datetime as _dt
import functools
import random
import zlib
from collections.abc import Callable
from dataclasses import replace

from .. import harmony
from . import arith
from ._example import EFFORTS, SPLITS, TOOLINGS, Example, ToolCall, by_effort, check_split
from ._written import written_ids

__all__ = [
    "ADD_MAX", "ALL_TASKS", "ARITH_TASKS", "EFFORTS", "FILLER_WORDS", "INSTRUCTIONS",
    "NEGATIVE_WORDS", "POSITIVE_WORDS", "SPLITS", "TASKS", "TASK_WEIGHTS", "TOOLINGS",
    "TRAIN_MIX", "UPPER_WORDS", "Example", "ToolCall", "addition_steps", "analysis_ids",
    "call_ids", "call_text", "completion_ids", "completion_text", "cut_completion", "held_out",
    "is_correct", "make_example", "prompt_ids", "result_ids", "sample_context",
    "sample_current_date", "sentiment_is_held_out", "tool_specs", "training_example",
    "transcript", "written_ids",
]

#: The toy tasks the model gets right at every effort (and without tools).
TASKS: tuple[str, ...] = ("sentiment", "upper", "add")
#: The arithmetic tasks for tools (multiply) and effort cascades (sum3).
ARITH_TASKS: tuple[str, ...] = ("multiply", "sum3")
ALL_TASKS: tuple[str, ...] = TASKS + ARITH_TASKS
#: Relative frequency of the tasks in :func:`make_example`'s random draw.
TASK_WEIGHTS: dict[str, int] = {"sentiment": 1, "upper": 1, "add": 2}
#: The training mix, by (task, tools declared): the old tasks, the sums and
#: multiplication with each tool, plus old tasks and sums under declared tools (answered
#: directly) so that the model calls a tool only for a product.
TRAIN_MIX: dict[tuple[str, str], int] = {
    ("sentiment", "none"): 12, ("upper", "none"): 12, ("add", "none"): 22,
    ("sum3", "none"): 44,
    ("multiply", "none"): 8, ("multiply", "function"): 21, ("multiply", "python"): 21,
    ("multiply", "both"): 2,
    **{(task, tools): 1 for task in ("sentiment", "upper", "add", "sum3")
       for tools in ("function", "python")},
}


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


POSITIVE_WORDS: tuple[str, ...] = _words(
    "good great excellent happy love wonderful amazing fantastic delightful pleasant lovely"
    " superb brilliant joyful cheerful awesome nice perfect beautiful glad"
)
NEGATIVE_WORDS: tuple[str, ...] = _words(
    "bad terrible awful sad hate horrible poor disappointing ugly angry boring nasty dreadful"
    " miserable annoying broken rude gloomy painful worst"
)
FILLER_WORDS: tuple[str, ...] = _words(
    "the a movie food day weather service room book song trip team car phone city house park"
    " dinner show game class story job coffee hotel train market garden window morning evening"
    " was is and very today really quite this our my their meeting project weekend concert"
    " lunch"
)
UPPER_WORDS: tuple[str, ...] = tuple(sorted(set(_words(
    "apple banana cherry river mountain ocean forest garden window table chair pencil paper"
    " bottle coffee dragon tiger rabbit horse eagle planet rocket silver golden castle bridge"
    " market school doctor summer winter spring autumn music guitar piano violin camera laptop"
    " button candle basket jacket pocket orange purple yellow simple happy quiet strong gentle"
    " bright little kitten puppy island desert valley thunder rain cloud storm stone flower"
    " honey butter cookie pizza salad sugar lemon mango peach grape melon tomato potato carrot"
    " onion pepper cotton wool leather metal wood glass cable engine wheel anchor harbor tower"
    " temple palace village farmer hunter sailor pilot driver singer writer teacher student"
    " friend family people number letter circle square triangle"
))))

SENTIMENT_TEMPLATES: tuple[str, ...] = (
    "What is the sentiment of: {text}",
    "Classify the sentiment (positive, negative or neutral): {text}",
    "Sentiment? {text}",
    "Is this positive, negative or neutral? {text}",
)
UPPER_TEMPLATES: tuple[str, ...] = (
    "Uppercase the word: {word}",
    "Write {word} in capital letters.",
    "Convert to uppercase: {word}",
    "Make this word uppercase: {word}",
)
ADD_TEMPLATES: tuple[str, ...] = (
    "What is {a} + {b}?",
    "Add {a} and {b}.",
    "Compute {a} plus {b}.",
    "{a} + {b} = ?",
)

ADD_MAX = 99  # operands are 0..ADD_MAX
_SPLIT_SEED = 1234  # fixes which pairs are held out; never change it after training
_FIRST_DAY = _dt.date(2024, 1, 1).toordinal()
_LAST_DAY = _dt.date(2049, 12, 31).toordinal()


@functools.lru_cache(maxsize=1)
def _held_out_pairs() -> tuple[frozenset[tuple[int, int]], frozenset[tuple[str, int]]]:
    """The (a, b) addition pairs and (word, template) upper-casing pairs kept out of training."""
    rng = random.Random(_SPLIT_SEED)
    add_pairs = [(a, b) for a in range(ADD_MAX + 1) for b in range(ADD_MAX + 1)]
    rng.shuffle(add_pairs)
    add_test = frozenset(add_pairs[: len(add_pairs) * 15 // 100])
    upper_pairs = [(w, i) for w in UPPER_WORDS for i in range(len(UPPER_TEMPLATES))]
    rng.shuffle(upper_pairs)
    upper_test = frozenset(upper_pairs[: len(upper_pairs) // 5])
    return add_test, upper_test


def sentiment_is_held_out(text: str) -> bool:
    """True when the sentiment text belongs to the held-out split (a tenth, by CRC-32)."""
    return zlib.crc32(text.encode()) % 10 == 0


def _sentiment(rng: random.Random, test: bool, effort: str) -> Example:
    while True:
        label = rng.choice(("positive", "negative", "neutral"))
        words = [rng.choice(FILLER_WORDS) for _ in range(rng.randint(3, 7))]
        keywords: list[str] = []
        if label != "neutral":
            source = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
            keywords = rng.sample(source, rng.randint(1, 2))
            for kw in keywords:
                words.insert(rng.randint(0, len(words)), kw)
        text = " ".join(words)
        if sentiment_is_held_out(text) == test:
            break
    user = rng.choice(SENTIMENT_TEMPLATES).format(text=text)
    if keywords:
        core = f"Keywords: {', '.join(keywords)}. They are {label}."
        verdict = f"Yes, {keywords[0]} is {label}."
    else:
        core = "No sentiment keywords. It is neutral."
        verdict = "Yes, there are none."
    analysis = by_effort(
        effort, core, "The user wants the sentiment of the text.",
        f"Let me double check each word for positive or negative meaning. {verdict}"
        f" Final answer: {label}.",
    )
    return Example("sentiment", effort, user, analysis, label, label)


def _upper(rng: random.Random, test: bool, effort: str) -> Example:
    _, upper_test = _held_out_pairs()
    while True:
        word, template = rng.choice(UPPER_WORDS), rng.randrange(len(UPPER_TEMPLATES))
        if ((word, template) in upper_test) == test:
            break
    user = UPPER_TEMPLATES[template].format(word=word)
    answer = word.upper()
    analysis = by_effort(
        effort, f"{word} -> {answer}.", f"The user wants the word {word} in uppercase.",
        f"I changed every letter to a capital letter. Final answer: {answer}.",
    )
    return Example("upper", effort, user, analysis, answer, answer)


def addition_steps(a: int, b: int) -> str:
    """The digit-by-digit chain of thought for ``a + b`` (both 0..99).

    The units digit is written out explicitly ("write d") so the answer reads off as
    the tens result followed by that digit.
    """
    units = a % 10 + b % 10
    carry = units // 10
    tens = a // 10 + b // 10 + carry
    if carry:
        return (f"Units: {a % 10} + {b % 10} = {units}, write {units % 10}, carry 1."
                f" Tens: {a // 10} + {b // 10} + 1 = {tens}. Answer: {a + b}.")
    return (f"Units: {a % 10} + {b % 10} = {units}, write {units % 10}."
            f" Tens: {a // 10} + {b // 10} = {tens}. Answer: {a + b}.")


def _add(rng: random.Random, test: bool, effort: str) -> Example:
    add_test, _ = _held_out_pairs()
    while True:
        a, b = rng.randrange(ADD_MAX + 1), rng.randrange(ADD_MAX + 1)
        if ((a, b) in add_test) == test:
            break
    user = rng.choice(ADD_TEMPLATES).format(a=a, b=b)
    answer = str(a + b)
    analysis = by_effort(
        effort, addition_steps(a, b), f"The user asks for {a} + {b}.",
        f"Check: {a} + {b} = {answer}. Final answer: {answer}.",
    )
    return Example("add", effort, user, analysis, answer, answer)


_Maker = Callable[[random.Random, bool, str], Example]
_MAKERS: dict[str, _Maker] = {"sentiment": _sentiment, "upper": _upper, "add": _add}


def make_example(rng: random.Random, split: str = "train", task: str | None = None,
                 effort: str | None = None, tools: str = "none") -> Example:
    """Draw one example from ``split`` ('train' or 'test').

    ``task`` and ``effort`` default to random draws (tasks of :data:`TASKS` weighted by
    :data:`TASK_WEIGHTS`, efforts uniform). ``tools`` is what the prompt declares
    (:data:`TOOLINGS`): a product is then worked out with a tool call, any other task is
    answered directly. Only ``rng`` is used for randomness, so the same seed gives the
    same examples.
    """
    test = check_split(split)
    if task is None:
        task = rng.choices(TASKS, weights=[TASK_WEIGHTS[t] for t in TASKS])[0]
    elif task not in ALL_TASKS:
        raise ValueError(f"task must be one of {', '.join(ALL_TASKS)}, not {task!r}")
    if effort is None:
        effort = rng.choice(EFFORTS)
    elif effort not in EFFORTS:
        raise ValueError(f"effort must be low, medium or high, not {effort!r}")
    if tools not in TOOLINGS:
        raise ValueError(f"tools must be one of {', '.join(TOOLINGS)}, not {tools!r}")
    if task == "multiply":
        return arith.multiply(rng, test, effort, tools)
    if task == "sum3":
        return arith.sum3(rng, test, effort, tools)
    example = _MAKERS[task](rng, test, effort)
    return example if tools == "none" else replace(example, tools=tools)


def training_example(rng: random.Random) -> Example:
    """One training example: (task, tools) drawn by :data:`TRAIN_MIX`, effort uniform."""
    keys = list(TRAIN_MIX)
    task, tools = rng.choices(keys, weights=[TRAIN_MIX[k] for k in keys])[0]
    return make_example(rng, "train", task, tools=tools)


def held_out(n_per_task_effort: int, seed: int = 0, tasks: tuple[str, ...] = TASKS,
             tools: str = "none") -> list[Example]:
    """Held-out examples (never seen in training): ``n_per_task_effort`` for every task and
    effort, grouped by task then effort, with ``tools`` declared. The same seed gives the
    same list."""
    rng = random.Random(seed)
    return [make_example(rng, "test", task, effort, tools)
            for task in tasks for effort in EFFORTS for _ in range(n_per_task_effort)]


def is_correct(example: Example, final: str) -> bool:
    """True when a reply's final text answers ``example`` (surrounding whitespace and a
    trailing full stop are ignored; case matters, since upper-casing is a task)."""
    return final.strip().removesuffix(".").strip() == example.answer


def sample_current_date(rng: random.Random) -> str | None:
    """A 'current date' for a training system message: any day from 2024 to 2049, or None
    (one time in five) for a system message without one, as the session may send either.
    Every day of the month occurs, so no date the session writes is new to the model."""
    if rng.random() < 0.2:
        return None
    return _dt.date.fromordinal(rng.randint(_FIRST_DAY, _LAST_DAY)).isoformat()


#: developer instructions the model learns to live with (it answers its task regardless)
INSTRUCTIONS: tuple[str, ...] = (
    "Be brief.", "Answer in one word.", "Answer tersely.", "Be concise and precise.",
    "You are a careful analyst.", "Reply with the answer only.",
)


def sample_context(rng: random.Random) -> tuple[tuple[harmony.Turn, ...], str | None]:
    """Earlier chat turns (one time in four, one or two finished turns of the tasks) and
    developer instructions (one time in five) for a training prompt, so that the model
    answers the last question of a chat and ignores instructions it cannot follow."""
    history: tuple[harmony.Turn, ...] = ()
    if rng.random() < 0.25:
        turns = [make_example(rng, "train") for _ in range(rng.randint(1, 2))]
        history = tuple(harmony.Turn(t.user, t.final) for t in turns)
    instructions = rng.choice(INSTRUCTIONS) if rng.random() < 0.2 else None
    return history, instructions


def prompt_ids(example: Example, current_date: str | None = None,
               history: tuple[harmony.Turn, ...] = (),
               instructions: str | None = None) -> list[int]:
    """The prompt token ids for ``example``, rendered as the session renders prompts
    (with the tools it declares)."""
    specs, python = tool_specs(example.tools)
    return harmony.render_prompt(example.user, effort=example.effort,
                                 current_date=current_date, history=history,
                                 instructions=instructions, tools=specs, python=python)


def tool_specs(tools: str) -> tuple[list[harmony.ToolSpec], bool]:
    """What ``render_prompt`` declares for ``tools`` (:data:`TOOLINGS`): the function
    tools and whether the python tool is on."""
    specs = [arith.MULTIPLY_TOOL] if tools in ("function", "both") else []
    return specs, tools in ("python", "both")


def completion_text(analysis: str, final: str) -> str:
    """The harmony text of an assistant turn: an analysis message, then a final one."""
    return (f"<|channel|>analysis<|message|>{analysis}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{final}<|return|>")


def completion_ids(example: Example) -> list[int]:
    """The target completion token ids for ``example`` (ending with ``<|return|>``): its
    answer, after the tool's result when it calls a tool."""
    return written_ids(example, completion_text(example.analysis, example.final))


def call_text(call: ToolCall) -> str:
    """The harmony text of an assistant turn that calls a tool: reasoning, then the call
    (``commentary to=functions.NAME <|constrain|>json`` for a function,
    ``analysis to=python code`` for python), ending with ``<|call|>``."""
    if call.recipient == harmony.PYTHON_RECIPIENT:
        header = f"analysis to={call.recipient} code"
    else:
        header = f"commentary to={call.recipient} <|constrain|>json"
    return (f"<|channel|>analysis<|message|>{call.analysis}<|end|>"
            f"<|start|>assistant<|channel|>{header}<|message|>{call.body}<|call|>")


def call_ids(example: Example) -> list[int]:
    """The completion ids of ``example``'s tool call (ValueError when it makes none)."""
    if example.call is None:
        raise ValueError(f"this {example.task} example makes no tool call")
    return list(harmony.encoding().encode(call_text(example.call), allowed_special="all"))


def result_ids(example: Example) -> list[int]:
    """The ids that follow ``example``'s call: the tool's result message, then
    ``<|start|>assistant`` (:func:`gptoss_magics.harmony.tool_result_ids`)."""
    if example.call is None:
        raise ValueError(f"this {example.task} example makes no tool call")
    return harmony.tool_result_ids(example.call.recipient, example.call.result)


def transcript(example: Example, current_date: str | None = None,
               history: tuple[harmony.Turn, ...] = (), instructions: str | None = None,
               prompt: list[int] | None = None) -> list[tuple[list[int], bool]]:
    """The whole conversation as ``(ids, written by the model)`` spans: the prompt, then
    the answer; with a tool call, the prompt, the call, the tool's result, the answer.
    ``prompt``: the prompt ids, when already rendered."""
    if prompt is None:
        prompt = prompt_ids(example, current_date, history, instructions)
    if example.call is None:
        return [(prompt, False), (completion_ids(example), True)]
    return [(prompt, False), (call_ids(example), True), (result_ids(example), False),
            (completion_ids(example), True)]


def analysis_ids(example: Example) -> list[int]:
    """The token ids of ``example``'s reasoning text alone."""
    return written_ids(example, example.analysis, special=False)


def cut_completion(example: Example, keep: int) -> tuple[list[int], list[int]]:
    """An assistant turn whose reasoning was cut after ``keep`` tokens by a reasoning
    budget: ``(forced ids, answer ids)``. The forced ids (analysis header, the first
    ``keep`` reasoning tokens, then ``harmony.FORCED_FINAL_TEXT``) are context the engine
    wrote; the answer ids (the final text and ``<|return|>``) are what the model must
    learn to write after them."""
    enc = harmony.encoding()
    head = list(enc.encode(harmony.REASONING_START_TEXT, allowed_special="all"))
    answer = written_ids(example, f"{example.final}<|return|>")
    return head + analysis_ids(example)[:keep] + list(harmony.forced_final_ids()), answer
