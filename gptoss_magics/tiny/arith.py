"""The two arithmetic tasks added for tools and effort cascades (see
:mod:`gptoss_magics.tiny.tasks`, which draws them).

* **multiply**: two numbers of 2 or 3 digits. The tiny model cannot multiply them, so it is
  trained to use a tool when the prompt declares one: the ``multiply`` function tool
  (:data:`MULTIPLY_TOOL`; the call is ``{"a":A,"b":B}`` to ``functions.multiply``) or the
  built-in python tool (``print(A * B)`` to ``python``); then it answers with the tool's
  result. Without a tool it gives a confident estimate (the leading digits multiplied),
  which is almost always wrong.
* **sum3**: three numbers from 10 to 99. Medium and high effort work the units column,
  its carry and the tens column, two terms at a time (high also checks the carry and
  re-adds both columns) and are right. Low effort writes the two column sums and skips
  the carry: when the units do not carry, the answer is the tens column's sum and the
  units column's; when they carry, it flags the carry without working it (``: carry?``)
  and its training answers are a coin flip between the right sum and the sum that drops
  the carry, so the model is unsure exactly there and its confidence says so. Every
  effort writes the answer as two tokens (``Example.split``): the tens total, then the
  units digit, both copies of numbers its reasoning wrote.

A tenth of the operand pairs (triples) are held out of training, by a CRC-32 of the
question's numbers.

Pure Python: the standard library and :mod:`gptoss_magics.harmony`.
"""

from __future__ import annotations

import json
import random
import zlib

from .. import harmony
from ._example import Example, ToolCall, by_effort

MULTIPLY_TOOL = harmony.ToolSpec(
    "multiply", "Multiply two integers.",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
     "required": ["a", "b"]},
)
MULTIPLY_RECIPIENT = f"functions.{MULTIPLY_TOOL.name}"
MUL_TEMPLATES: tuple[str, ...] = (
    "What is {a} * {b}?",
    "Multiply {a} and {b}.",
    "Compute {a} times {b}.",
    "{a} * {b} = ?",
)
SUM3_TEMPLATES: tuple[str, ...] = (
    "What is {a} + {b} + {c}?",
    "Add {a}, {b} and {c}.",
    "Compute {a} plus {b} plus {c}.",
    "{a} + {b} + {c} = ?",
)
#: Share of three-term sums whose units column carries, in training and in the held-out
#: split (uniform operands would carry 78% of the time; held-out rows are mostly easy,
#: as a cascade's data would be, and training practises the carries more).
SUM3_CARRY_SHARE: dict[str, float] = {"train": 0.5, "test": 0.2}
#: Share of training sums drawn with their column sums uniform (units 0..9, or 10..27 when
#: they carry; tens 3..27) instead of from uniform operands, whose column sums bunch in
#: the middle: the rare ones (small units, tens of 20 and more) are practised as often as
#: the rest, so that low effort is right, and sure, on every easy sum.
SUM3_BALANCED_SHARE = 0.25


def _held_out(key: str) -> bool:
    return zlib.crc32(key.encode()) % 10 == 0


def mul_is_held_out(a: int, b: int) -> bool:
    """True when the pair ``a * b`` belongs to the held-out split (a tenth, by CRC-32)."""
    return _held_out(f"{a}*{b}")


def sum3_is_held_out(a: int, b: int, c: int) -> bool:
    """True when the triple ``a + b + c`` belongs to the held-out split."""
    return _held_out(f"{a}+{b}+{c}")


def estimate(n: int) -> int:
    """``n`` rounded down to its leading digit (``123`` -> ``100``, ``45`` -> ``40``)."""
    text = str(n)
    return int(text[0]) * 10 ** (len(text) - 1)


def _operand(rng: random.Random) -> int:
    digits = rng.choice((2, 3))
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _multiply_call(effort: str, a: int, b: int, tool: str) -> ToolCall:
    asked = f"The user asks for {a} * {b}."
    slow = "Multiplying by hand is slow and error prone, so I will"
    if tool == "python":
        analysis = {"low": "Use python.", "medium": f"{asked} I will compute it with python.",
                    "high": f"{asked} {slow} run {a} * {b} in python."}[effort]
        return ToolCall(analysis, harmony.PYTHON_RECIPIENT, f"print({a} * {b})", f"{a * b}\n")
    analysis = {"low": "Use multiply.", "medium": f"{asked} I will call multiply.",
                "high": f"{asked} {slow} call multiply with a = {a} and b = {b}."}[effort]
    body = json.dumps({"a": a, "b": b}, separators=(",", ":"))
    return ToolCall(analysis, MULTIPLY_RECIPIENT, body, str(a * b))


def multiply(rng: random.Random, test: bool, effort: str, tools: str = "none") -> Example:
    """A multiplication question; with a tool declared the model calls it (``both``: the
    function tool), without one it estimates."""
    while True:
        a, b = _operand(rng), _operand(rng)
        if mul_is_held_out(a, b) == test:
            break
    user = rng.choice(MUL_TEMPLATES).format(a=a, b=b)
    answer = str(a * b)
    if tools == "none":
        ea, eb = estimate(a), estimate(b)
        guess = str(ea * eb)
        analysis = by_effort(
            effort, f"No tool, so I estimate: {ea} * {eb} = {guess}.",
            f"The user asks for {a} * {b}.",
            f"It is only an estimate. Final answer: {guess}.",
        )
        return Example("multiply", effort, user, analysis, guess, answer)
    call = _multiply_call(effort, a, b, "python" if tools == "python" else "function")
    source = "python printed" if tools == "python" else "multiply returned"
    analysis = {"low": "Done.", "medium": f"{source} {answer}.",
                "high": f"{source} {answer}, so {a} * {b} = {answer}. Final answer: {answer}."
                }[effort]
    return Example("multiply", effort, user, analysis, answer, answer, tools, call)


def _pairwise(terms: list[int]) -> str:
    """``a + b = s, s + c = t, ...``: a sum worked two terms at a time."""
    steps, total = [], terms[0]
    for term in terms[1:]:
        steps.append(f"{total} + {term} = {total + term}")
        total += term
    return ", ".join(steps)


def sum3_steps(a: int, b: int, c: int) -> str:
    """The column-by-column chain of thought for ``a + b + c`` (each 10..99), two terms at
    a time, carry included."""
    digits = [a % 10, b % 10, c % 10]
    units = sum(digits)
    carry = units // 10
    tens = [a // 10, b // 10, c // 10] + ([carry] if carry else [])
    wrote = f"write {units % 10}, carry {carry}" if carry else f"write {units}"
    return (f"Units: {_pairwise(digits)}, {wrote}. Tens: {_pairwise(tens)}."
            f" Answer: {a + b + c}.")


def sum3_carries(a: int, b: int, c: int) -> bool:
    """True when the units column of ``a + b + c`` carries."""
    return a % 10 + b % 10 + c % 10 >= 10


def _sum3_check(a: int, b: int, c: int) -> str:
    """High effort's check: the carry, then both columns added again (in the question's
    order: the tiny model recalls the operands in reverse order less reliably)."""
    units = a % 10 + b % 10 + c % 10
    carry = units // 10
    tens = [a // 10, b // 10, c // 10] + ([carry] if carry else [])
    verdict = (f"{units} = {carry * 10} + {units % 10}, so carry {carry}" if carry
               else f"{units} is below 10, so no carry")
    return (f"Check the carry: {verdict}. Check: {_pairwise([a % 10, b % 10, c % 10])};"
            f" {_pairwise(tens)}. Final answer: {a + b + c}.")


def sum3_low(a: int, b: int, c: int) -> str:
    """The low-effort reasoning for ``a + b + c``: the two column sums (``...=7, ...=8.``,
    whose answer is ``8`` ``7``), with a flag when the units carry (``...=12: carry?``)."""
    units, tens = a % 10 + b % 10 + c % 10, a // 10 + b // 10 + c // 10
    end = ": carry?" if units >= 10 else "."
    return (f"{a % 10}+{b % 10}={a % 10 + b % 10}+{c % 10}={units},"
            f" {a // 10}+{b // 10}={a // 10 + b // 10}+{c // 10}={tens}{end}")


def _digits_summing_to(rng: random.Random, total: int, lo: int) -> list[int]:
    """Three digits from ``lo`` to 9 that add up to ``total``."""
    while True:
        x, y = rng.randint(lo, 9), rng.randint(lo, 9)
        if lo <= total - x - y <= 9:
            return [x, y, total - x - y]


def _balanced_operands(rng: random.Random, carries: bool) -> tuple[int, int, int]:
    units = _digits_summing_to(rng, rng.randint(10, 27) if carries else rng.randint(0, 9), 0)
    tens = _digits_summing_to(rng, rng.randint(3, 27), 1)
    a, b, c = (10 * t + u for t, u in zip(tens, units, strict=True))
    return a, b, c


def sum3(rng: random.Random, test: bool, effort: str, tools: str = "none") -> Example:
    """A three-term sum; at low effort a carrying one has a coin-flip answer."""
    carries = rng.random() < SUM3_CARRY_SHARE["test" if test else "train"]
    balanced = not test and rng.random() < SUM3_BALANCED_SHARE
    while True:
        a, b, c = (_balanced_operands(rng, carries) if balanced
                   else (rng.randint(10, 99) for _ in range(3)))
        if sum3_carries(a, b, c) == carries and sum3_is_held_out(a, b, c) == test:
            break
    user = rng.choice(SUM3_TEMPLATES).format(a=a, b=b, c=c)
    answer = str(a + b + c)
    final = answer
    if effort == "low":
        units = a % 10 + b % 10 + c % 10
        tens = a // 10 + b // 10 + c // 10
        analysis = sum3_low(a, b, c)
        if carries and rng.random() < 0.5:
            final = str(10 * tens + units % 10)  # the carry dropped
    else:
        analysis = by_effort(effort, sum3_steps(a, b, c), f"The user asks for {a} + {b} + {c}.",
                             _sum3_check(a, b, c))
    return Example("sum3", effort, user, analysis, final, answer, tools,
                   split=tuple(sorted({answer, final})))
