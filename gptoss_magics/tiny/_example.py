"""What one toy-task conversation is: :class:`Example` (and its :class:`ToolCall`), shared
by the task makers of :mod:`gptoss_magics.tiny.tasks` and :mod:`gptoss_magics.tiny.arith`.

Pure Python, standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

EFFORTS: tuple[str, ...] = ("low", "medium", "high")
SPLITS: tuple[str, ...] = ("train", "test")
#: What a prompt declares: no tool, the ``multiply`` function tool, the built-in python
#: tool, or both.
TOOLINGS: tuple[str, ...] = ("none", "function", "python", "both")


@dataclass(frozen=True)
class ToolCall:
    """The tool round of a conversation: the reasoning before the call, the call itself
    (its ``recipient``, ``functions.multiply`` or ``python``, and its message: the JSON
    arguments or the code) and what the tool returns."""

    analysis: str
    recipient: str
    body: str
    result: str


@dataclass(frozen=True)
class Example:
    """One toy-task conversation: the user's prompt and the assistant's target reply.

    ``analysis`` is the reasoning the model is trained to write at this ``effort`` (after
    the tool's result, when there is a ``call``), ``final`` the text of its final message
    and ``answer`` the right answer a reply is checked against. ``final`` is ``answer``
    except where the model is trained to be wrong: multiplication without a tool (an
    estimate) and, half the time, a low-effort three-term sum that carries. ``tools`` is
    what the prompt declares (:data:`TOOLINGS`); ``call`` the tool round, if the model is
    trained to make one. ``split`` lists numbers the model is trained to write as two
    tokens, all digits but the last and then the last (``217`` as ``21`` ``7``), so that it
    copies a column's sum and a digit it wrote instead of recalling one token per sum.
    """

    task: str
    effort: str
    user: str
    analysis: str
    final: str
    answer: str
    tools: str = "none"
    call: ToolCall | None = None
    split: tuple[str, ...] = ()


def check_split(split: str) -> bool:
    """True for the held-out split; ValueError for a split that does not exist."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return split == "test"


def by_effort(effort: str, core: str, restated: str, check: str) -> str:
    """The analysis at ``effort``: core; restatement + core; restatement + core + check."""
    if effort == "low":
        return core
    if effort == "medium":
        return f"{restated} {core}"
    return f"{restated} {core} {check}"
