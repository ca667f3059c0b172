"""What both engines share: the caller's side (submit, generate, stream, close) and the
commands it sends to the engine's thread.

An engine runs its step loop on a thread of its own; the caller's thread only puts
commands on a queue and waits on job events, so that an interrupt reaches the caller at
once and the engine aborts the requests between two steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CancelledError, EngineDeadError, InvalidOptionError, MissingDependencyError
from .job import Job
from .reserve import Reserve
from .types import Completion, Event, Sampling


@dataclass
class Add:
    """Start the requests of ``job``."""

    job: Job
    prompts: list[list[int]]
    samplings: list[Sampling]
    stream: bool


@dataclass
class Abort:
    """Abort what is left of ``job``."""

    job: Job


@dataclass
class Call:
    """Run ``fn`` on the engine's thread; its outcome goes to ``box``."""

    fn: Callable[[Any], Any]
    box: queue.Queue[tuple[bool, Any]]


@dataclass
class Shutdown:
    """Stop the loop and release the engine."""


Command = Add | Abort | Call | Shutdown


class ThreadedEngine:
    """The caller's side of an engine whose step loop runs on its own thread.

    Subclasses run the loop (reading :attr:`_commands`) and set :attr:`info`."""

    def __init__(self) -> None:
        self._commands: queue.Queue[Command] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._dead: str | None = None
        self._closed = False
        self._tokens_generated = 0
        self.info: dict[str, Any] = {}
        #: background requests held back so that interactive ones always find a slot
        self.reserve: Reserve[Any] = Reserve(1, 0)

    def scheduling(self) -> dict[str, int]:
        """The engine's slots (``max_num_seqs``), the ``reserve`` kept free for
        interactive requests while background work runs, the background requests held
        and running, and the interactive requests served meanwhile since the load."""
        return self.reserve.stats()

    @property
    def alive(self) -> bool:
        """True while the engine can serve requests."""
        return self._thread is not None and not self._dead and not self._closed

    @property
    def tokens_generated(self) -> int:
        """Tokens this engine has generated since it was loaded."""
        return self._tokens_generated

    def close(self, timeout: float = 120.0) -> None:
        """Shut the engine down and give its memory back. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._commands.put(Shutdown())
            self._thread.join(timeout)

    def submit(self, prompts: Sequence[Sequence[int]],
               sampling: Sampling | Sequence[Sampling], *, stream: bool = False,
               priority: int = 0) -> Job:
        """Queue token prompts; returns a :class:`Job` whose events report progress.

        ``priority``: lower runs first. Interactive requests use 0 and background maps
        1, so that a cell's request does not wait behind thousands of queued rows."""
        self._check_alive()
        samplings = [sampling] * len(prompts) if isinstance(sampling, Sampling) \
            else list(sampling)
        if len(samplings) != len(prompts):
            raise InvalidOptionError(
                f"{len(prompts)} prompts but {len(samplings)} sampling settings: pass one "
                "for all, or one per prompt"
            )
        if not self.info.get("reasoning_budget") and any(
                s.reasoning_budget is not None for s in samplings):
            raise MissingDependencyError(
                f"this vLLM ({self.info.get('vllm')}) has no reasoning budgets "
                "(thinking_token_budget): upgrade vllm, or leave reasoning_budget unset")
        lists = [list(p) for p in prompts]
        # under first-come-first-served scheduling vLLM refuses priorities
        job = Job([len(p) for p in lists], priority if self.info.get("priority") else 0,
                  on_abort=lambda j: self._commands.put(Abort(j)))
        self._commands.put(Add(job, lists, samplings, stream))
        return job

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: Sampling | Sequence[Sampling], *,
                 on_done: Callable[[Completion], None] | None = None,
                 priority: int = 0, cancel: threading.Event | None = None
                 ) -> list[Completion]:
        """Generate every prompt in one batch; Completions come back in prompt order.

        ``on_done`` is called (on the calling thread) as each request finishes, so
        that finished work can be saved at once. On KeyboardInterrupt, or when
        ``cancel`` is set (:class:`CancelledError`), the unfinished requests are aborted
        and the exception propagates; what finished was already handed to ``on_done``.
        """
        job = self.submit(prompts, sampling, priority=priority)
        try:
            for event in job.iter_events(cancel=cancel):
                if event.done is not None and on_done is not None:
                    on_done(event.done)
        except (KeyboardInterrupt, CancelledError):
            job.abort()
            raise
        return [c for c in job.completions if c is not None]

    def stream(self, prompt: Sequence[int], sampling: Sampling
               ) -> Generator[Event, None, None]:
        """Stream one prompt: yields events with new token ids, the last one ``done``.

        Closing the iterator early (or an interrupt while it runs) aborts the request.
        """
        job = self.submit([prompt], sampling, stream=True)
        finished = False
        try:
            for event in job.iter_events():
                if event.done is not None:
                    finished = True
                yield event
        finally:
            if not finished:
                job.abort()

    def _check_alive(self) -> None:
        if self._closed:
            raise EngineDeadError("This engine was unloaded: load a model again.")
        if self._dead:
            raise EngineDeadError(
                f"The engine stopped ({self._dead}): run gptoss_magics.unload(), then load "
                "the model again."
            )
