"""The conversation loop: generate, run the tool the model called, continue.

A :class:`Conversation` holds one prompt's state; it never touches the engine itself, so
that any driver can run it: :func:`run_conversations` (``complete``, ``complete_batch``,
``reproduce``), the streaming handle, or a DataFrame map interleaving many rows::

    conv = Conversation(prompt_ids, tools)
    while (ids := conv.next_prompt()) is not None:
        conv.feed(engine.generate([ids], sampling)[0])   # runs the call, if one was made
    conv.close()

Continuation is by token extension: the next prompt is the previous one, the completion
and the tool's result message (:func:`harmony.tool_result_ids`), so the engine's prefix
cache reuses every round. At most ``max_rounds`` calls run; a call past that gets the
error text :data:`LIMIT_TEXT` instead, and a call after that ends the conversation.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .. import harmony
from .base import Tool, ToolCall, ToolOutcome, ToolSession
from .functions import error_outcome

if TYPE_CHECKING:
    from ..engine import Completion, EngineProtocol, Sampling

#: default limit on the tool calls of one reply
MAX_ROUNDS = 8
#: default time limit of one tool call, in seconds
TIMEOUT_S = 60.0
#: what the model reads when it calls a tool past the limit
LIMIT_TEXT = "tool round limit reached ({n} calls): answer now without calling tools"


@dataclass(frozen=True)
class Round:
    """One generation of a conversation, parsed."""

    completion: Completion
    parsed: harmony.Parsed


@dataclass(frozen=True)
class PendingCall:
    """A call the model made that has not run yet."""

    recipient: str
    text: str


def call_of(completion: Completion, parsed: harmony.Parsed) -> PendingCall | None:
    """The tool call a completion ends with (``<|call|>`` after a message with a
    recipient), or None."""
    ids = completion.token_ids
    if completion.finish_reason != "stop" or not ids or ids[-1] != harmony.CALL:
        return None
    if not parsed.messages or not parsed.messages[-1].recipient:
        return None
    last = parsed.messages[-1]
    return PendingCall(str(last.recipient).strip(), last.text)


class Conversation:
    """One prompt's tool conversation (see the module docstring).

    ``replay`` (recorded :class:`ToolCall`s) makes the conversation run no tool: the
    i-th call gets the recorded i-th result when the model called the same tool with
    the same arguments, else an error text saying it was not recorded."""

    def __init__(self, prompt_ids: Sequence[int], tools: Sequence[Tool] = (), *,
                 max_rounds: int = MAX_ROUNDS, timeout_s: float = TIMEOUT_S,
                 replay: Sequence[ToolCall] | None = None) -> None:
        self.prompt_ids = list(prompt_ids)
        self.tools = {t.recipient: t for t in tools}
        self.max_rounds = max_rounds
        self.timeout_s = timeout_s
        self.replay = None if replay is None else list(replay)
        self.rounds: list[Round] = []
        self.calls: list[ToolCall] = []
        self.pending: PendingCall | None = None
        self.limit_hit = False  # a call past max_rounds was refused
        self.aborted = False  # stopped from outside (an interrupt)
        self.result_tokens = 0  # tokens of the tool results sent to the model
        self._ids = list(prompt_ids)
        self._done = False
        self._sessions: dict[str, ToolSession] = {}
        self._t0 = time.perf_counter()
        self.elapsed_s = 0.0

    # ------------------------------------------------------------------ driving
    @property
    def done(self) -> bool:
        """True when nothing more is to be generated."""
        return self._done

    def next_prompt(self) -> list[int] | None:
        """The ids to generate next; None when the conversation is over or a call is
        waiting to run (:meth:`run_pending`)."""
        if self._done or self.pending is not None:
            return None
        return list(self._ids)

    def feed(self, completion: Completion, parsed: harmony.Parsed | None = None, *,
             run: bool = True) -> PendingCall | None:
        """Take the engine's completion of :meth:`next_prompt`. When it calls a tool, the
        call is pending: run now (``run=True``) or later by :meth:`run_pending` (a map
        runs calls on a thread pool). Returns the pending call, if any."""
        parsed = parsed or harmony.parse_completion(completion.token_ids,
                                                    completion.finish_reason)
        self.rounds.append(Round(completion, parsed))
        self._ids.extend(completion.token_ids)
        self.elapsed_s = time.perf_counter() - self._t0
        call = call_of(completion, parsed) if self.tools else None
        if call is None or len(self.calls) > self.max_rounds:
            self._done = True  # an answer, an error, a cut, or a call after the limit
            return None
        self.pending = call
        if run:
            self.run_pending()
        return call

    def run_pending(self) -> ToolCall:
        """Run the pending call (or replay it, or refuse it past the limit) and append
        its result to the conversation. Never raises for a failing tool."""
        pending = self.pending
        if pending is None:
            raise RuntimeError("no tool call is pending")
        index = len(self.calls)
        t0 = time.perf_counter()
        if index >= self.max_rounds:
            self.limit_hit = True
            outcome = error_outcome(LIMIT_TEXT.format(n=self.max_rounds))
        elif self.replay is not None:
            outcome = self._replayed(index, pending)
        else:
            outcome = self._run(pending)
        call = ToolCall(pending.recipient, _arguments(pending), outcome.value, outcome.error,
                        round(time.perf_counter() - t0, 4), outcome.text)
        self.calls.append(call)
        result = harmony.tool_result_ids(pending.recipient, outcome.text)
        self.result_tokens += len(result)
        self._ids.extend(result)
        self.pending = None
        self.elapsed_s = time.perf_counter() - self._t0
        return call

    def stop(self) -> None:
        """End the conversation from outside (an interrupt): nothing more runs."""
        if not self._done:
            self.aborted = True
        self._done = True
        self.pending = None

    def close(self) -> None:
        """Release the tools' sessions (idempotent)."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            with contextlib.suppress(Exception):  # a tool that cannot close loses nothing
                session.close()

    # ------------------------------------------------------------------ elsewhere
    def record(self) -> dict[str, Any]:
        """Plain data for :meth:`replayed` (JSON-serialisable): every round's completion,
        every call and the time taken. A conversation run where the engine is (a Ray
        replica) travels back to the map this way."""
        return {"rounds": [asdict(r.completion) for r in self.rounds],
                "calls": [c.to_dict() for c in self.calls], "elapsed_s": self.elapsed_s,
                "aborted": self.aborted}

    @classmethod
    def replayed(cls, prompt_ids: Sequence[int], tools: Sequence[Tool], record: dict[str, Any],
                 *, max_rounds: int = MAX_ROUNDS, timeout_s: float = TIMEOUT_S
                 ) -> Conversation:
        """The conversation :meth:`record` describes, rebuilt here by feeding its rounds
        and replaying its calls' recorded results (no tool runs): the same state, rounds,
        calls (with their latencies) and transcript as where it ran."""
        from ..engine.types import Completion

        calls = [ToolCall.from_dict(c) for c in record["calls"]]
        conv = cls(prompt_ids, tools, max_rounds=max_rounds, timeout_s=timeout_s,
                   replay=calls)
        for data in record["rounds"]:
            conv.feed(Completion(**data), run=False)
            if conv.pending is not None:
                conv.run_pending()
        conv.calls = calls[:len(conv.calls)]
        conv.elapsed_s = float(record["elapsed_s"])
        conv.aborted = bool(record.get("aborted"))
        return conv

    # ------------------------------------------------------------------ calls
    def _run(self, pending: PendingCall) -> ToolOutcome:
        tool = self.tools.get(pending.recipient)
        if tool is None:
            names = ", ".join(self.tools) or "none"
            return error_outcome(f"there is no tool named {pending.recipient!r}; the tools "
                                 f"are: {names}")
        try:
            session = self._sessions.get(pending.recipient)
            if session is None:
                session = self._sessions[pending.recipient] = tool.open()
            return session.call(pending.text, self.timeout_s)
        except Exception as exc:  # the protocol says never; a broken tool still must not
            return error_outcome(f"{pending.recipient} failed: {type(exc).__name__}: {exc}")

    def _replayed(self, index: int, pending: PendingCall) -> ToolOutcome:
        assert self.replay is not None
        if index < len(self.replay):
            recorded = self.replay[index]
            if (recorded.name, recorded.arguments) == (pending.recipient, _arguments(pending)):
                return ToolOutcome(text=recorded.output, value=recorded.result,
                                   error=recorded.error)
        return error_outcome(f"this call to {pending.recipient} is not in the recorded reply, "
                             "so it was not run")

    # ------------------------------------------------------------------ the chain
    @property
    def transcript_ids(self) -> list[int]:
        """Everything after the prompt: each completion and each tool result."""
        return self._ids[len(self.prompt_ids):]

    @property
    def completion_tokens(self) -> int:
        """Tokens the model generated, over every round."""
        return sum(len(r.completion.token_ids) for r in self.rounds)

    @property
    def analysis_tokens(self) -> int:
        """Reasoning tokens, over every round."""
        return sum(r.parsed.analysis_tokens for r in self.rounds)

    def analysis(self) -> str:
        """The reasoning of every round, joined (tool calls themselves are left out:
        :attr:`calls` holds them)."""
        return "\n\n".join(m.text for r in self.rounds for m in r.parsed.messages
                           if m.channel in ("analysis", "commentary") and not m.recipient)


def _arguments(pending: PendingCall) -> Any:
    """The call's arguments as recorded: parsed JSON for a function, the code for
    python (or the raw text when it is not JSON)."""
    if pending.recipient == harmony.PYTHON_RECIPIENT:
        return pending.text
    try:
        return json.loads(pending.text)
    except ValueError:
        return pending.text


def run_pending_calls(conversations: Sequence[Conversation], workers: int = 8) -> None:
    """Run the pending calls of ``conversations``, up to ``workers`` at once."""
    waiting = [c for c in conversations if c.pending is not None]
    if len(waiting) <= 1 or workers <= 1:
        for conv in waiting:
            conv.run_pending()
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(waiting)),
                              thread_name_prefix="gptoss-tools")
    try:
        futures = [pool.submit(c.run_pending) for c in waiting]
        wait(futures)
        for future in futures:
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_conversations(engine: EngineProtocol, conversations: Sequence[Conversation],
                      sampling: Sampling, *, priority: int = 0, workers: int = 8) -> None:
    """Run ``conversations`` to their end on ``engine``, round by round: each round's
    requests go to the engine in one batch, then their calls run (``workers`` at once).
    An interrupt stops every conversation (their state so far is kept); the tools'
    sessions are closed in every case."""
    try:
        while True:
            todo = [(c, ids) for c in conversations if (ids := c.next_prompt()) is not None]
            if not todo:
                return
            completions = engine.generate([ids for _, ids in todo], sampling,
                                          priority=priority)
            for (conv, _), completion in zip(todo, completions, strict=True):
                conv.feed(completion, run=False)
            run_pending_calls([c for c, _ in todo], workers)
    except BaseException:
        for conv in conversations:
            conv.stop()
        raise
    finally:
        for conv in conversations:
            conv.close()
