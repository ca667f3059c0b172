"""The harmony format: special token ids, the encoding, rendering prompts and tool
results, and spans of a completion."""


from __future__ import annotations

import functools
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding

RETURN, CONSTRAIN, CHANNEL, START, END, MESSAGE, CALL = (
    200002, 200003, 200005, 200006, 200007, 200008, 200012,
)
#: the token "final" (as in <|channel|>final<|message|>)
FINAL_TOKEN = 17196
#: <|channel|>final<|message|>: what opens the answer
FINAL_MARK: tuple[int, int, int] = (CHANNEL, FINAL_TOKEN, MESSAGE)
#: what opens the reasoning, and what a reasoning budget forces when it runs out (end the
#: analysis, open the answer)
REASONING_START_TEXT = "<|channel|>analysis<|message|>"
FORCED_FINAL_TEXT = "<|end|><|start|>assistant<|channel|>final<|message|>"
#: Stop tokens for an assistant turn: <|return|> and <|call|>.
STOP_TOKEN_IDS: tuple[int, ...] = (RETURN, CALL)
VOCAB_SIZE = 201088
FIRST_SPECIAL = 199998


@functools.lru_cache(maxsize=1)
def encoding() -> HarmonyEncoding:
    """The gpt-oss harmony encoding (loaded once; the vocabulary is embedded)."""
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


@dataclass(frozen=True)
class Turn:
    """One finished exchange of a chat: what the user said and the final answer."""

    user: str
    final: str


@dataclass(frozen=True)
class ToolSpec:
    """A function tool as the model sees it: its name, description and JSON-schema
    parameters (declared in the developer message, called as ``functions.NAME``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


#: The recipient of harmony's built-in python tool.
PYTHON_RECIPIENT = "python"
#: How the built-in python tool is described to the model (the sandbox's own terms).
PYTHON_TOOL_TEXT = (
    "Use this tool to execute Python code in your chain of thought. The code will not be "
    "shown to the user.\n\nWhen you send a message containing Python code to python, it will "
    "be executed in a stateful sandboxed Python process. python will respond with the output "
    "of the execution or time out. Files given to you are in the working folder. There is no "
    "internet access."
)


def render_prompt(
    prompt: str,
    *,
    effort: str = "medium",
    instructions: str | None = None,
    history: Sequence[Turn] = (),
    knowledge_cutoff: str = "2024-06",
    current_date: str | None = None,
    tools: Sequence[ToolSpec] = (),
    python: bool = False,
) -> list[int]:
    """Prompt token ids for ``prompt``, ending with ``<|start|>assistant``.

    Earlier turns enter as user message + final answer only: their analysis is
    dropped, as the harmony format asks once a turn has ended in a final answer.
    ``tools`` are declared in the developer message (namespace ``functions``) and
    ``python`` declares the built-in python tool in the system message.
    """
    from openai_harmony import Conversation, Message, Role

    messages = _opening_messages(effort, instructions, history, knowledge_cutoff,
                                 current_date, tools, python)
    messages.append(Message.from_role_and_content(Role.USER, prompt))
    convo = Conversation.from_messages(messages)
    return list(encoding().render_conversation_for_completion(convo, Role.ASSISTANT))


def _opening_messages(effort: str, instructions: str | None, history: Sequence[Turn],
                      knowledge_cutoff: str, current_date: str | None,
                      tools: Sequence[ToolSpec], python: bool) -> list[Any]:
    """The messages ahead of the user's: system, developer, the earlier turns."""
    from openai_harmony import Message, Role

    messages = [_system_message(effort, knowledge_cutoff, current_date, python)]
    if instructions or tools:
        messages.append(_developer_message(instructions, tools))
    for turn in history:
        messages.append(Message.from_role_and_content(Role.USER, turn.user))
        messages.append(
            Message.from_role_and_content(Role.ASSISTANT, turn.final).with_channel("final")
        )
    return messages


class PromptRenderer:
    """Renders many prompts that differ only in the user's message, as
    :func:`render_prompt` would, token for token, but faster: the opening messages
    (system, developer, earlier turns) are rendered once, each distinct user message
    once per process (a bounded memo), and a prompt is their concatenation.

    The first prompt is also rendered in full and compared with the concatenation; if
    they ever differed (a future harmony renderer that joins messages differently), every
    prompt is rendered in full.
    """

    def __init__(self, *, effort: str = "medium", instructions: str | None = None,
                 history: Sequence[Turn] = (), knowledge_cutoff: str = "2024-06",
                 current_date: str | None = None, tools: Sequence[ToolSpec] = (),
                 python: bool = False) -> None:
        from openai_harmony import Conversation

        self._kwargs: dict[str, Any] = dict(
            effort=effort, instructions=instructions, history=tuple(history),
            knowledge_cutoff=knowledge_cutoff, current_date=current_date, tools=tuple(tools),
            python=python)
        opening = _opening_messages(effort, instructions, history, knowledge_cutoff,
                                    current_date, tools, python)
        self._head = list(encoding().render_conversation(Conversation.from_messages(opening)))
        self._function_tools = bool(tools)
        self._tail: list[int] | None = None  # <|start|>assistant, read off the first render
        self._full = False  # True: the concatenation did not match; render in full

    @property
    def head(self) -> list[int]:
        """The ids of the opening messages, which every prompt rendered here starts with
        (unless it fell back to full renders)."""
        return list(self._head)

    def __call__(self, prompt: str) -> list[int]:
        """The prompt token ids for the user's message ``prompt``."""
        if self._full:
            return render_prompt(prompt, **self._kwargs)
        user = _user_ids(prompt, self._function_tools)
        if self._tail is None:
            full = render_prompt(prompt, **self._kwargs)
            cut = len(self._head) + len(user)
            if full[:len(self._head)] == self._head and full[len(self._head):cut] == list(user):
                self._tail = full[cut:]
            else:
                self._full = True
            return full
        return [*self._head, *user, *self._tail]


class _Memo:
    """Token ids of rendered user messages, least recently used out first, holding at
    most ``budget`` token ids in all."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.items: OrderedDict[tuple[str, bool], array[int]] = OrderedDict()
        self.lock = threading.Lock()

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.size = 0

    def get(self, key: tuple[str, bool]) -> array[int] | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: tuple[str, bool], ids: array[int]) -> None:
        if len(ids) > self.budget // 16:
            return  # a very long message: not worth the room
        with self.lock:
            if key in self.items:
                return
            self.items[key] = ids
            self.size += len(ids)
            while self.size > self.budget:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)


#: at most 2M token ids (8 MB as 32-bit integers), and their texts
_USER_MEMO = _Memo(2_000_000)


def _user_ids(text: str, function_tools: bool) -> array[int]:
    """Token ids of the user message ``text`` (made once per process)."""
    key = (text, function_tools)
    found = _USER_MEMO.get(key)
    if found is None:
        frame = _user_frame(function_tools)
        if frame is not None:  # the text of a message is encoded as plain text
            ids = [*frame[0], *encoding().encode(text, disallowed_special=()), *frame[1]]
        else:
            ids = list(_render_user(text, function_tools))
        found = array("I", ids)
        _USER_MEMO.put(key, found)
    return found


def _render_user(text: str, function_tools: bool) -> tuple[int, ...]:
    from openai_harmony import Message, RenderOptions, Role

    return tuple(encoding().render(
        Message.from_role_and_content(Role.USER, text),
        RenderOptions(conversation_has_function_tools=function_tools)))


@functools.lru_cache(maxsize=2)
def _user_frame(function_tools: bool) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The ids harmony renders around the text of a user message (``<|start|>user
    <|message|>`` and ``<|end|>``), read off a rendered message; None if it is not
    found there (then each message is rendered by harmony)."""
    ids = list(_render_user("x", function_tools))
    inner = list(encoding().encode("x", disallowed_special=()))
    for cut in range(len(ids) - len(inner) + 1):
        if ids[cut:cut + len(inner)] == inner:
            return tuple(ids[:cut]), tuple(ids[cut + len(inner):])
    return None


def _system_message(effort: str, knowledge_cutoff: str, current_date: str | None,
                    python: bool) -> Any:
    from openai_harmony import Message, ReasoningEffort, Role, SystemContent

    efforts = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM,
               "high": ReasoningEffort.HIGH}
    try:
        level = efforts[effort.lower()]
    except KeyError:
        raise ValueError(f"effort must be low, medium or high, not {effort!r}") from None
    system = SystemContent.new().with_reasoning_effort(level)
    system = system.with_knowledge_cutoff(knowledge_cutoff)
    if current_date:
        system = system.with_conversation_start_date(current_date)
    if python:
        from openai_harmony import ToolNamespaceConfig

        system = system.with_tools(ToolNamespaceConfig(
            name=PYTHON_RECIPIENT, description=PYTHON_TOOL_TEXT, tools=[]))
    return Message.from_role_and_content(Role.SYSTEM, system)


def _developer_message(instructions: str | None, tools: Sequence[ToolSpec]) -> Any:
    from openai_harmony import DeveloperContent, Message, Role, ToolDescription

    developer = DeveloperContent.new()
    if instructions:
        developer = developer.with_instructions(instructions)
    if tools:
        developer = developer.with_function_tools([
            ToolDescription.new(t.name, t.description, parameters=dict(t.parameters))
            for t in tools])
    return Message.from_role_and_content(Role.DEVELOPER, developer)


def tool_result_ids(author: str, content: str) -> list[int]:
    """The ids that continue a conversation after a tool call: the tool's result
    message, then ``<|start|>assistant``. ``author`` is the call's recipient
    (``functions.NAME`` or ``python``); ``content`` is always text, never markup (special
    tokens in it are encoded as plain text).

    The header is written in the order gpt-oss was trained on and vLLM's server renders
    (``<|start|>functions.f to=assistant<|channel|>commentary<|message|>``), not in the
    newer order of openai_harmony's renderer.
    """
    enc = encoding()
    channel = "analysis" if author == PYTHON_RECIPIENT else "commentary"
    head = f"<|start|>{author} to=assistant<|channel|>{channel}<|message|>"
    return (list(enc.encode(head, allowed_special="all"))
            + list(enc.encode(content, disallowed_special=()))
            + [END, START] + list(enc.encode("assistant", disallowed_special=())))


def final_header_ids() -> list[int]:
    """Ids of ``<|start|>assistant<|channel|>final<|message|>``: a prompt that ends here
    makes the model write its final answer directly (used for constrained answers)."""
    return list(
        encoding().encode("<|start|>assistant<|channel|>final<|message|>", allowed_special="all")
    )


@functools.lru_cache(maxsize=1)
def forced_final_ids() -> tuple[int, ...]:
    """Ids of :data:`FORCED_FINAL_TEXT`, what the engine writes when a reasoning budget
    runs out."""
    return tuple(encoding().encode(FORCED_FINAL_TEXT, allowed_special="all"))


def final_span(ids: Sequence[int]) -> tuple[int, int] | None:
    """``(start, end)`` of the text tokens of the last final-channel message in a
    completion's ids, or None when there is no final message. ``end`` stops before
    ``<|return|>``/``<|end|>``/``<|call|>``, or at the end of the ids."""
    start = -1
    for i in range(len(ids) - 2, -1, -1):
        if ids[i] == CHANNEL and tuple(ids[i:i + 3]) == FINAL_MARK:
            start = i + 3
            break
    if start < 0:
        return None
    end = start
    while end < len(ids) and ids[end] not in (RETURN, END, CALL):
        end += 1
    return start, end


def answer_logprob(ids: Sequence[int], logprobs: Sequence[float]) -> float | None:
    """Sum of the log-probabilities of the final answer's tokens (the log of the model's
    probability of its answer), or None when there is no non-empty final answer."""
    span = final_span(ids)
    if span is None or span[0] == span[1] or len(logprobs) < span[1]:
        return None
    return float(sum(logprobs[span[0]:span[1]]))


def decode(ids: Iterable[int]) -> str:
    """Text of ``ids``; ids outside the vocabulary are skipped."""
    return str(encoding().decode([t for t in ids if 0 <= t < VOCAB_SIZE]))


__all__ = [
    "CALL", "CHANNEL", "CONSTRAIN", "END", "FINAL_MARK", "FINAL_TOKEN", "FIRST_SPECIAL",
    "FORCED_FINAL_TEXT", "MESSAGE", "PYTHON_RECIPIENT", "PYTHON_TOOL_TEXT",
    "REASONING_START_TEXT", "RETURN", "START", "STOP_TOKEN_IDS", "VOCAB_SIZE", "PromptRenderer",
    "ToolSpec", "Turn", "answer_logprob", "decode", "encoding", "final_header_ids",
    "final_span", "forced_final_ids", "render_prompt", "tool_result_ids",
]
