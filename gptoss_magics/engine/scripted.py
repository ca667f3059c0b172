"""A deterministic engine without vLLM, for fast tests of everything above the engine.

:class:`ScriptedEngine` implements :class:`~gptoss_magics.engine.EngineProtocol` the way
the vLLM engine does: a step loop on its own thread, a command queue, :class:`Job`
events, ``max_num_seqs`` slots filled by priority (lower first, first come first served
within a priority, no preemption), streamed deltas, aborts between steps. What it
"generates" comes from a script::

    engine = ScriptedEngine()                      # "echo: <the user's message>"
    engine = ScriptedEngine(lambda ids, s: harmony_completion("42"))
    engine = ScriptedEngine().enqueue("first answer", ("its reasoning", "second answer"))
    engine = ScriptedEngine(step_s=0.05, tokens_per_step=1)   # slow, for interrupts
    engine = ScriptedEngine(fail={1})              # request 1 of every batch fails alone
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .. import harmony
from .base import Abort, Add, Call, Shutdown, ThreadedEngine
from .job import Job
from .reserve import Reserve
from .types import Sampling, context_error, request_error

#: A script: the completion token ids for a prompt.
Script = Callable[[list[int], Sampling], Sequence[int]]
#: A queued reply: final text, (analysis, final) texts, or completion token ids.
QueuedReply = str | tuple[str, str] | Sequence[int]
#: What the default script reasons.
DEFAULT_ANALYSIS = "scripted reasoning"


def harmony_completion(final: str, analysis: str | None = DEFAULT_ANALYSIS) -> list[int]:
    """Completion ids in harmony form: the analysis (when given), then the final answer,
    ending with ``<|return|>`` (200002)."""
    text = f"<|channel|>final<|message|>{final}<|return|>"
    if analysis:
        text = (f"<|channel|>analysis<|message|>{analysis}<|end|>"
                f"<|start|>assistant{text}")
    return list(harmony.encoding().encode(text, allowed_special="all"))


def user_message(prompt_ids: Sequence[int]) -> str:
    """The text of the last user message of a harmony prompt ("" when there is none)."""
    text = harmony.decode(prompt_ids)
    head = "<|start|>user<|message|>"
    start = text.rfind(head)
    if start < 0:
        return ""
    body = text[start + len(head):]
    return body.split("<|end|>", 1)[0]


def default_script(prompt_ids: list[int], sampling: Sampling) -> list[int]:
    """Reasons ``"scripted reasoning"``, answers ``"echo: <the user's message>"`` (its
    first 200 characters), the first choice under ``choice``, ``{}`` under a JSON
    schema."""
    if sampling.choice:
        final = sampling.choice[0]
    elif sampling.json_schema is not None:
        final = "{}"
    else:
        final = f"echo: {user_message(prompt_ids)[:200]}"
    return harmony_completion(final)


@dataclass(frozen=True)
class ScriptedRequest:
    """A request the scripted engine received (for tests to assert on)."""

    prompt_ids: tuple[int, ...]
    sampling: Sampling
    priority: int
    stream: bool
    job_id: str
    index: int


class ScriptedFailure(RuntimeError):
    """What a request chosen by ``fail`` raises in its step."""


@dataclass
class _Active:
    job: Job
    index: int
    prompt: list[int]
    sampling: Sampling
    stream: bool
    order: int
    ids: list[int] | None = None  # the planned completion, set when admitted
    reason: str = "stop"
    pos: int = 0


class ScriptedEngine(ThreadedEngine):
    """A deterministic :class:`EngineProtocol` engine; see the module docstring.

    ``script`` gives each request's completion ids (default :func:`default_script`);
    replies queued with :meth:`enqueue` are used first, in the order requests start.
    ``tokens_per_step`` tokens per request per step, each step taking ``step_s`` seconds;
    ``max_num_seqs`` requests run at once, of which background ones (priority above 0)
    leave ``reserve`` free, as in the vLLM engine (:mod:`.reserve`). ``fail`` picks
    requests whose step raises: a predicate ``(prompt_ids, sampling) -> bool`` or a set
    of indices within a submission. Every token has log-probability ``logprob`` (when asked for).
    :attr:`requests` records what was submitted.
    """

    def __init__(self, script: Script | None = None, *, tokens_per_step: int = 4,
                 step_s: float = 0.0, max_num_seqs: int = 8, max_model_len: int = 4096,
                 logprob: float = -0.1, reserve: int | None = None,
                 fail: Callable[[list[int], Sampling], bool] | Collection[int] | None = None
                 ) -> None:
        super().__init__()
        self.script: Script = script or default_script
        self.tokens_per_step = max(1, int(tokens_per_step))
        self.step_s = float(step_s)
        self.max_num_seqs = max(1, int(max_num_seqs))
        self.reserve = Reserve(self.max_num_seqs, reserve)
        self.logprob = float(logprob)
        self.fail = fail
        self.requests: list[ScriptedRequest] = []
        self.info = {"model": "scripted", "vllm": "scripted", "device": "cpu",
                     "dtype": "scripted", "max_model_len": int(max_model_len),
                     "multiprocess": False, "load_s": 0.0, "reasoning_budget": True,
                     "priority": True, "max_num_seqs": self.max_num_seqs,
                     "background_reserve": self.reserve.reserve}
        self._replies: deque[QueuedReply] = deque()
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._waiting: list[_Active] = []
        self._running: list[_Active] = []
        self._thread = threading.Thread(target=self._loop, name="gptoss-scripted",
                                        daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """Requests the engine holds: running or waiting for a slot."""
        return len(self._waiting) + len(self._running) + self.reserve.holding

    def enqueue(self, *replies: QueuedReply) -> ScriptedEngine:
        """Queue replies for the next requests to start (before the script is asked)."""
        with self._lock:
            self._replies.extend(replies)
        return self

    def submit(self, prompts: Sequence[Sequence[int]],
               sampling: Sampling | Sequence[Sampling], *, stream: bool = False,
               priority: int = 0) -> Job:
        """Queue token prompts (see :meth:`ThreadedEngine.submit`) and record them."""
        job = super().submit(prompts, sampling, stream=stream, priority=priority)
        samplings = [sampling] * len(prompts) if isinstance(sampling, Sampling) else sampling
        for i, (p, s) in enumerate(zip(prompts, samplings, strict=True)):
            self.requests.append(ScriptedRequest(tuple(p), s, job.priority, stream, job.id, i))
        return job

    # ------------------------------------------------------------------ engine thread
    def _loop(self) -> None:
        while True:
            busy = bool(self._waiting or self._running or self.reserve.holding)
            try:
                cmd = self._commands.get(block=not busy)
            except queue.Empty:
                cmd = None
            while cmd is not None:
                if isinstance(cmd, Shutdown):
                    left = self._waiting + self._running + self.reserve.drain()
                    for job in {id(a.job): a.job for a in left}.values():
                        job.fail(None)
                    return
                self._command(cmd)
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    cmd = None
            self._admit()
            if self._running:
                if self.step_s:
                    time.sleep(self.step_s)
                for active in list(self._running):
                    self._advance(active)

    def _command(self, cmd: Add | Abort | Call) -> None:
        if isinstance(cmd, Add):
            max_len = int(self.info["max_model_len"])
            for i, (ids, s) in enumerate(zip(cmd.prompts, cmd.samplings, strict=True)):
                if max_len - len(ids) < 1:
                    cmd.job.finish(i, "error", error=context_error(len(ids), max_len))
                else:
                    self._enter(_Active(cmd.job, i, ids, s, cmd.stream, next(self._order)))
        elif isinstance(cmd, Abort):
            ended = [a for a in self._waiting + self._running if a.job is cmd.job]
            self._waiting = [a for a in self._waiting if a.job is not cmd.job]
            self._running = [a for a in self._running if a.job is not cmd.job]
            for a in ended:
                self.reserve.finished(a)
            for a in ended + self.reserve.drop(cmd.job):
                a.job.finish(a.index, "abort")
        else:
            try:
                cmd.box.put((True, cmd.fn(self)))
            except BaseException as exc:
                cmd.box.put((False, exc))

    def _enter(self, a: _Active) -> None:
        if Reserve.background(a):
            self.reserve.hold(a)
        else:
            self._waiting.append(a)
            self.reserve.entered(a)

    def _admit(self) -> None:
        for a in self.reserve.take(len(self._waiting) + len(self._running)):
            self._waiting.append(a)
            self.reserve.entered(a)
        while self._waiting and len(self._running) < self.max_num_seqs:
            active = min(self._waiting, key=lambda a: (a.job.priority, a.order))
            self._waiting.remove(active)
            self._running.append(active)

    def _advance(self, a: _Active) -> None:
        try:
            if a.ids is None:
                if self._fails(a):
                    raise ScriptedFailure(f"scripted failure of request {a.index}")
                a.ids, a.reason = self._plan(a)
        except Exception as exc:
            self._running.remove(a)
            self.reserve.finished(a)
            a.job.finish(a.index, "error", error=request_error(exc))
            return
        chunk = a.ids[a.pos:a.pos + self.tokens_per_step]
        a.pos += len(chunk)
        self._tokens_generated += len(chunk)
        done = a.pos >= len(a.ids)
        if a.stream and not done:
            a.job.record(a.index, chunk, self._logprobs(a, chunk))
        elif done:
            self._running.remove(a)
            self.reserve.finished(a)
            # like vLLM's final-only output: a batch request's tokens come at its end
            new = chunk if a.stream else a.ids
            a.job.finish(a.index, a.reason, new_ids=new, logprobs=self._logprobs(a, new))

    def _fails(self, a: _Active) -> bool:
        if self.fail is None:
            return False
        if callable(self.fail):
            return bool(self.fail(a.prompt, a.sampling))
        return a.index in self.fail

    def _plan(self, a: _Active) -> tuple[list[int], str]:
        """The completion ``a`` will produce, and its finish reason."""
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            ids = list(self.script(list(a.prompt), a.sampling))
        elif isinstance(reply, str):
            ids = harmony_completion(reply)
        elif isinstance(reply, tuple) and all(isinstance(x, str) for x in reply):
            ids = harmony_completion(str(reply[1]), str(reply[0]))
        else:
            ids = [int(t) for t in reply]
        s = a.sampling
        if s.reasoning_budget is not None:
            ids = _cut_reasoning(ids, s.reasoning_budget)
        stops = [i for i, t in enumerate(ids) if t in s.stop_token_ids]
        if stops:
            ids = ids[:stops[0] + 1]
        limit = min(s.max_tokens, int(self.info["max_model_len"]) - len(a.prompt))
        if len(ids) > limit:
            return ids[:limit], "length"
        return ids, "stop"

    def _logprobs(self, a: _Active, ids: Sequence[int]) -> list[float] | None:
        return [self.logprob] * len(ids) if a.sampling.logprobs else None


def _cut_reasoning(ids: list[int], budget: int) -> list[int]:
    """What a reasoning budget does: after ``budget`` analysis tokens, the engine
    writes :func:`harmony.forced_final_ids` and the answer follows."""
    head = list(harmony.encoding().encode(harmony.REASONING_START_TEXT,
                                          allowed_special="all"))
    if ids[:len(head)] != head:
        return ids
    body = len(head)
    end = ids.index(harmony.END, body) if harmony.END in ids[body:] else len(ids)
    if end - body <= budget:
        return ids
    span = harmony.final_span(ids)
    answer = ids[span[0]:] if span else []
    return ids[:body + budget] + list(harmony.forced_final_ids()) + answer

