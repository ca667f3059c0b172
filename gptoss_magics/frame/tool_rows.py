"""Tool conversations for the rows of a map, interleaved on the engine's continuous batch.

Every row's conversation goes on by itself. The first prompts of all rows go to the
engine in one job; when a row's completion calls a tool, the call runs on a bounded
thread pool, and as soon as its result is back the row's continuation goes to the engine
as a new request, next to whatever is running: a row waiting for a slow tool holds no
other row back, and no row waits for a round of the others. Continuation is by token
extension, so the engine's prefix cache reuses each row's earlier rounds.

A row ends like a row without tools (its answer, value, flags and error come from its
last round), with the reasoning and token counts of its whole chain and its trail of
calls (``RowResult.tool_calls``, plain data that the result cache keeps: a cached row
replays its trail and calls nothing). A row whose last call failed has that error; it
is not cached. A row whose answer fails its schema is tried once more from the start, as
without tools (its calls run again). An interrupt, a cancel or an engine failure aborts
every outstanding request and abandons the pending calls (their threads finish on their own, their
results are ignored); the rows finished so far are kept.
"""

from __future__ import annotations

import contextlib
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engine import Completion, Job, Sampling
from ..errors import CancelledError
from ..options import Options
from ..reply import read_completion
from ..tools import Conversation, tools_identity
from .result import RowResult

if TYPE_CHECKING:
    from .generation import Generation

#: tool calls that run at once (per map)
WORKERS = 8
#: how often the driver looks at the engine and the tools while both have work out (s)
POLL_S = 0.002
#: how long it waits on a single source (the engine alone, or the tools alone)
WAIT_S = 0.05


def tools_key(options: Options) -> dict[str, Any] | None:
    """What a map's cache key adds for tools: their names and schemas
    (:func:`~gptoss_magics.tools.tools_identity`) and the round limit; None without."""
    if not options.tools:
        return None
    return {"tools": tools_identity(options.tools), "max_tool_rounds": options.max_tool_rounds}


def conversation_row(conv: Conversation, options: Options, sampling: Sampling
                     ) -> tuple[RowResult, bool]:
    """The row of a finished conversation, and whether its answer failed the schema
    (one more try is worth it)."""
    last = conv.rounds[-1]
    reading = read_completion(last.completion, constraint=options.constraint,
                              reasoning_budget=sampling.reasoning_budget, as_model=False,
                              parsed=last.parsed)
    res = RowResult.from_reading(reading, options.constraint)
    res.analysis = conv.analysis()
    res.analysis_tokens = conv.analysis_tokens
    res.completion_tokens = conv.completion_tokens
    res.prompt_tokens = len(conv.prompt_ids) + conv.result_tokens
    res.latency_s = round(conv.elapsed_s, 4)
    res.tool_calls = [c.to_dict() for c in conv.calls]
    retry = reading.value_error is not None and not res.engine_error and \
        options.constraint.kind == "schema" and res.has_final and not res.truncated
    if conv.limit_hit:
        res.error = (f"the model kept calling tools after {conv.max_rounds} calls "
                     "(max_tool_rounds)" + ("" if res.has_final else " and gave no answer"))
        retry = False
    elif res.tool_failed:
        res.error = f"the last tool call failed: {conv.calls[-1].error}"
        retry = False
    return res, retry


@dataclass
class _Submitted:
    job: Job
    rows: list[int]  # the row (index into the map's prompts) of each request


class ToolRows:
    """One pass over ``batch`` (indices of the map's distinct prompts) with tools: the
    interleaving driver (see the module docstring). :meth:`run` returns the rows whose
    schema answer failed, for one more try, as the pass without tools does."""

    def __init__(self, gen: Generation, batch: list[int], sampling: Sampling,
                 first: bool) -> None:
        m = gen.m
        self.gen, self.m, self.sampling, self.first = gen, m, sampling, first
        self.convs = {i: Conversation(gen.ids[i], m.options.tools,
                                      max_rounds=m.options.max_tool_rounds,
                                      timeout_s=m.options.tool_timeout_s) for i in batch}
        self.jobs: list[_Submitted] = []
        self.ready: queue.SimpleQueue[int] = queue.SimpleQueue()  # rows whose call ran
        self.calling: set[int] = set()  # rows whose call is on the pool
        self.broken: dict[int, BaseException] = {}  # rows whose call raised (a bug)
        self.retry: list[int] = []
        self.pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[int]:
        try:
            self._submit(list(self.convs))
            while self.jobs or self.calling:
                if self.m.cancel is not None and self.m.cancel.is_set():
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
        return self.retry

    def _submit(self, rows: list[int]) -> None:
        """Send the next prompt of ``rows`` to the engine, as one job."""
        prompts = [self.convs[i].next_prompt() for i in rows]
        todo = [(i, p) for i, p in zip(rows, prompts, strict=True) if p is not None]
        if todo:
            job = self.m.session.engine.submit([p for _, p in todo], self.sampling,
                                               priority=self.m.priority)
            self.jobs.append(_Submitted(job, [i for i, _ in todo]))

    def _read_engine(self) -> bool:
        """Take every event that has arrived (without waiting); True when any did."""
        moved = False
        for sub in list(self.jobs):
            while (event := sub.job.poll()) is not None:
                moved = True
                if event.done is not None:
                    self._completed(sub.rows[event.done.index], event.done)
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
                self._completed(sub.rows[event.done.index], event.done)

    # ------------------------------------------------------------------ rows
    def _completed(self, row: int, completion: Completion) -> None:
        """A row's round ended: run its call, or finish the row."""
        conv = self.convs[row]
        if conv.feed(completion, run=False) is None:
            self._finish(row)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=WORKERS,
                                           thread_name_prefix="gptoss-map-tools")
        self.calling.add(row)
        self.pool.submit(self._call, row)

    def _call(self, row: int) -> None:
        """On the pool: run a row's pending call, then hand the row back."""
        try:
            self.convs[row].run_pending()
        except BaseException as exc:  # run_pending never raises for a failing tool
            self.broken[row] = exc
        finally:
            self.ready.put(row)

    def _continue(self) -> bool:
        """Send the continuations of the rows whose calls are back, in one job."""
        rows: list[int] = []
        while True:
            try:
                rows.append(self.ready.get_nowait())
            except queue.Empty:
                break
        if not rows:
            return False
        self.calling.difference_update(rows)
        for row in [r for r in rows if r in self.broken]:
            rows.remove(row)
            self.convs[row].stop()
            exc = self.broken.pop(row)
            self._finish(row, f"the tool loop failed: {type(exc).__name__}: {exc}")
        self._submit(rows)
        return True

    def _finish(self, row: int, failure: str | None = None) -> None:
        conv = self.convs[row]
        conv.close()
        res, retry = conversation_row(conv, self.m.options, self.sampling)
        if failure is not None:
            res.error = failure
        elif retry and self.first:
            self.retry.append(row)  # one more try before the row counts as failed
            self.gen._count(res.completion_tokens)
            return
        self.gen._finish(row, res)

    # ------------------------------------------------------------------ stopping
    def _abort(self) -> None:
        """Abort every outstanding request and stop every conversation."""
        for sub in self.jobs:
            sub.job.abort()  # returns once the engine has let go of the job's requests
        for conv in self.convs.values():
            conv.stop()
        self.calling.clear()


def run_tool_rows(gen: Generation, batch: list[int], sampling: Sampling,
                  first: bool) -> list[int]:
    """Run ``batch`` with tools (see :class:`ToolRows`); the rows to try once more."""
    return ToolRows(gen, batch, sampling, first).run()


__all__ = ["POLL_S", "WORKERS", "ToolRows", "conversation_row", "run_tool_rows",
           "tools_key"]
