"""Many tool conversations on one engine's continuous batch, each going on by itself.

The first prompts of all conversations go to the engine in one job; when a completion
calls a tool, the call runs on a bounded thread pool, and as soon as its result is back
the conversation's continuation goes to the engine as a new request, next to whatever is
running: a conversation waiting for a slow tool holds no other back, and none waits for
a round of the others. Continuation is by token extension, so the engine's prefix cache
reuses each conversation's earlier rounds.

:class:`Interleaver` is driven by the DataFrame map on the loaded engine
(:mod:`gptoss_magics.frame.tool_rows`) and, on a Ray cluster, by each replica on its own
engine (:mod:`gptoss_magics.cluster.replica`). An interrupt, a cancel or an engine
failure aborts every outstanding request and abandons the pending calls (their threads
finish on their own, their results are ignored).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CancelledError
from .loop import Conversation

if TYPE_CHECKING:
    from ..engine import Completion, EngineProtocol, Job, Sampling

#: tool calls that run at once (per map, or per replica)
WORKERS = 8
#: how often the driver looks at the engine and the tools while both have work out (s)
POLL_S = 0.002
#: how long it waits on a single source (the engine alone, or the tools alone)
WAIT_S = 0.05

#: called when a conversation ends: its key, and why it failed (None: it ended itself)
OnDone = Callable[[int, "str | None"], None]


@dataclass
class _Submitted:
    job: Job
    keys: list[int]  # the conversation of each request


class Interleaver:
    """Run ``convs`` (by key) to their end on ``engine`` (see the module docstring);
    ``on_done(key, failure)`` is called on this thread as each one ends (``failure``:
    the tool loop itself broke, a bug, never a failing tool). The conversations' tool
    sessions are closed in every case."""

    def __init__(self, engine: EngineProtocol, convs: dict[int, Conversation],
                 sampling: Sampling, on_done: OnDone, *, priority: int = 0,
                 cancel: threading.Event | None = None, workers: int = WORKERS) -> None:
        self.engine, self.convs, self.sampling = engine, convs, sampling
        self.on_done, self.priority, self.cancel, self.workers = on_done, priority, cancel, \
            workers
        self.jobs: list[_Submitted] = []
        self.ready: queue.SimpleQueue[int] = queue.SimpleQueue()  # calls that ran
        self.calling: set[int] = set()  # conversations whose call is on the pool
        self.broken: dict[int, BaseException] = {}  # conversations whose call raised
        self.pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        try:
            self._submit(list(self.convs))
            while self.jobs or self.calling:
                if self.cancel is not None and self.cancel.is_set():
                    raise CancelledError("cancelled")
                moved = self._read_engine()
                moved = self._continue() or moved
                if not moved:
                    self._wait()
        except BaseException:
            self._abort()
            raise
        finally:
            if self.pool is not None:  # abandon calls still running: they are ignored
                self.pool.shutdown(wait=False, cancel_futures=True)
            for conv in self.convs.values():
                conv.close()

    def _submit(self, keys: list[int]) -> None:
        """Send the next prompt of ``keys`` to the engine, as one job."""
        prompts = [self.convs[k].next_prompt() for k in keys]
        todo = [(k, p) for k, p in zip(keys, prompts, strict=True) if p is not None]
        if todo:
            job = self.engine.submit([p for _, p in todo], self.sampling,
                                     priority=self.priority)
            self.jobs.append(_Submitted(job, [k for k, _ in todo]))

    def _read_engine(self) -> bool:
        """Take every event that has arrived (without waiting); True when any did."""
        moved = False
        for sub in list(self.jobs):
            while (event := sub.job.poll()) is not None:
                moved = True
                if event.done is not None:
                    self._completed(sub.keys[event.done.index], event.done)
            if sub.job.finished:
                self.jobs.remove(sub)
        return moved

    def _wait(self) -> None:
        """Block briefly on whichever source has work out."""
        if self.calling:
            with contextlib.suppress(queue.Empty):  # put back: _continue takes it
                self.ready.put(self.ready.get(timeout=POLL_S if self.jobs else WAIT_S))
        elif self.jobs:
            sub = self.jobs[0]
            event = sub.job.poll(POLL_S if len(self.jobs) > 1 else WAIT_S)
            if event is not None and event.done is not None:
                self._completed(sub.keys[event.done.index], event.done)

    # ------------------------------------------------------------------ conversations
    def _completed(self, key: int, completion: Completion) -> None:
        """A round ended: run its call, or end the conversation."""
        conv = self.convs[key]
        if conv.feed(completion, run=False) is None:
            conv.close()
            self.on_done(key, None)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.workers,
                                           thread_name_prefix="gptoss-map-tools")
        self.calling.add(key)
        self.pool.submit(self._call, key)

    def _call(self, key: int) -> None:
        """On the pool: run a pending call, then hand the conversation back."""
        try:
            self.convs[key].run_pending()
        except BaseException as exc:  # run_pending never raises for a failing tool
            self.broken[key] = exc
        finally:
            self.ready.put(key)

    def _continue(self) -> bool:
        """Send the continuations of the conversations whose calls are back, in one job."""
        keys: list[int] = []
        while True:
            try:
                keys.append(self.ready.get_nowait())
            except queue.Empty:
                break
        if not keys:
            return False
        self.calling.difference_update(keys)
        for key in [k for k in keys if k in self.broken]:
            keys.remove(key)
            conv = self.convs[key]
            conv.stop()
            conv.close()
            exc = self.broken.pop(key)
            self.on_done(key, f"the tool loop failed: {type(exc).__name__}: {exc}")
        self._submit(keys)
        return True

    def _abort(self) -> None:
        """Abort every outstanding request and stop every conversation."""
        for sub in self.jobs:
            sub.job.abort()  # returns once the engine has let go of the job's requests
        for conv in self.convs.values():
            conv.stop()
        self.calling.clear()


__all__ = ["POLL_S", "WAIT_S", "WORKERS", "Interleaver"]
