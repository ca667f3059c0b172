"""The three toy tasks of the embedded tiny gpt-oss, as synthetic harmony transcripts.

The trained tiny model (``build_tiny("tiny")``) learnt only these tasks:

* **sentiment**: a few filler words plus one or two keywords from a fixed positive or
  negative list (or none: neutral); the answer is ``positive``, ``negative`` or
  ``neutral``;
* **upper**: a known word to write in capital letters; the answer is the word
  upper-cased;
* **add**: two numbers from 0 to 99; the answer is their sum, reached by a digit by
  digit chain of thought.

Each :class:`Example` holds a user prompt, the reasoning (analysis channel) and the
final answer. The reasoning grows with the effort written into the system message:
``low`` is the core step, ``medium`` adds a restatement of the request, ``high`` adds a
check and a closing "Final answer: ...".

Some prompts are held out of training (15% of the addition pairs, 20% of the
(word, template) pairs for upper-casing, a tenth of the sentiment texts by a hash of
the text), so :func:`held_out` gives prompts the model has never seen with answers
that can be checked by :func:`is_correct`.

Pure Python: only the standard library and :mod:`gptoss_magics.harmony` (for token ids).
"""

from __future__ import annotations

import datetime as _dt
import functools
import random
import zlib
from dataclasses import dataclass

from .. import harmony

TASKS: tuple[str, ...] = ("sentiment", "upper", "add")
EFFORTS: tuple[str, ...] = ("low", "medium", "high")
#: Relative frequency of the tasks in training (addition needs the most practice).
TASK_WEIGHTS: dict[str, int] = {"sentiment": 1, "upper": 1, "add": 2}
SPLITS: tuple[str, ...] = ("train", "test")


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


@dataclass(frozen=True)
class Example:
    """One toy-task conversation: the user's prompt and the assistant's target reply.

    ``analysis`` is the reasoning the model is trained to write at this ``effort``,
    ``final`` the text of its final message, ``answer`` the expected answer a reply is
    checked against (the same text as ``final``).
    """

    task: str
    effort: str
    user: str
    analysis: str
    final: str
    answer: str


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


def _check_split(split: str) -> bool:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return split == "test"


def _by_effort(effort: str, core: str, restated: str, check: str) -> str:
    """The analysis at ``effort``: core; restatement + core; restatement + core + check."""
    if effort == "low":
        return core
    if effort == "medium":
        return f"{restated} {core}"
    return f"{restated} {core} {check}"


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
    analysis = _by_effort(
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
    analysis = _by_effort(
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
    analysis = _by_effort(
        effort, addition_steps(a, b), f"The user asks for {a} + {b}.",
        f"Check: {a} + {b} = {answer}. Final answer: {answer}.",
    )
    return Example("add", effort, user, analysis, answer, answer)


_MAKERS = {"sentiment": _sentiment, "upper": _upper, "add": _add}


def make_example(rng: random.Random, split: str = "train", task: str | None = None,
                 effort: str | None = None) -> Example:
    """Draw one example from ``split`` ('train' or 'test').

    ``task`` and ``effort`` default to random draws (tasks weighted by
    :data:`TASK_WEIGHTS`, efforts uniform). Only ``rng`` is used for randomness, so the
    same seed gives the same examples.
    """
    test = _check_split(split)
    if task is None:
        task = rng.choices(TASKS, weights=[TASK_WEIGHTS[t] for t in TASKS])[0]
    elif task not in _MAKERS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    if effort is None:
        effort = rng.choice(EFFORTS)
    elif effort not in EFFORTS:
        raise ValueError(f"effort must be low, medium or high, not {effort!r}")
    return _MAKERS[task](rng, test, effort)


def held_out(n_per_task_effort: int, seed: int = 0) -> list[Example]:
    """Held-out examples (never seen in training): ``n_per_task_effort`` for every task and
    effort, grouped by task then effort. The same seed gives the same list."""
    rng = random.Random(seed)
    return [make_example(rng, "test", task, effort)
            for task in TASKS for effort in EFFORTS for _ in range(n_per_task_effort)]


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
    """The prompt token ids for ``example``, rendered as the session renders prompts."""
    return harmony.render_prompt(example.user, effort=example.effort,
                                 current_date=current_date, history=history,
                                 instructions=instructions)


def completion_text(analysis: str, final: str) -> str:
    """The harmony text of an assistant turn: an analysis message, then a final one."""
    return (f"<|channel|>analysis<|message|>{analysis}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{final}<|return|>")


def completion_ids(example: Example) -> list[int]:
    """The target completion token ids for ``example`` (ending with ``<|return|>``)."""
    return list(harmony.encoding().encode(completion_text(example.analysis, example.final),
                                          allowed_special="all"))


def analysis_ids(example: Example) -> list[int]:
    """The token ids of ``example``'s reasoning text alone."""
    return list(harmony.encoding().encode(example.analysis, allowed_special=set()))


def cut_completion(example: Example, keep: int) -> tuple[list[int], list[int]]:
    """An assistant turn whose reasoning was cut after ``keep`` tokens by a reasoning
    budget: ``(forced ids, answer ids)``. The forced ids (analysis header, the first
    ``keep`` reasoning tokens, then ``harmony.FORCED_FINAL_TEXT``) are context the engine
    wrote; the answer ids (the final text and ``<|return|>``) are what the model must
    learn to write after them."""
    enc = harmony.encoding()
    head = list(enc.encode(harmony.REASONING_START_TEXT, allowed_special="all"))
    answer = list(enc.encode(f"{example.final}<|return|>", allowed_special="all"))
    return head + analysis_ids(example)[:keep] + list(harmony.forced_final_ids()), answer
