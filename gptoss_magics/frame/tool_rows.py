"""Tool conversations for the rows of a map.

Every row's conversation goes on by itself, on the engine's continuous batch
(:mod:`gptoss_magics.tools.interleave`): a row waiting for a slow tool holds no other
row back, and no row waits for a round of the others. On a Ray cluster each replica
runs its rows' conversations the same way on its own engine, and each finished
conversation comes back as a record that is replayed here.

A row ends like a row without tools (its answer, value, flags and error come from its
last round), with the reasoning and token counts of its whole chain and its trail of
calls (``RowResult.tool_calls``, plain data that the result cache keeps: a cached row
replays its trail and calls nothing). A row whose last call failed has that error; it
is not cached. A row whose answer fails its schema is tried once more from the start, as
without tools (its calls run again). An interrupt, a cancel or an engine failure aborts
every outstanding request and abandons the pending calls (their threads finish on their
own, their results are ignored); the rows finished so far are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine import Sampling
from ..options import Options
from ..reply import read_completion
from ..tools import Conversation, tools_identity
from ..tools.interleave import WORKERS, Interleaver
from .result import RowResult

if TYPE_CHECKING:
    from .generation import Generation


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


class ToolRows:
    """One pass over ``batch`` (indices of the map's distinct prompts) with tools.
    :meth:`run` returns the rows whose schema answer failed, for one more try, as the
    pass without tools does.

    On the loaded engine the rows' conversations interleave here
    (:class:`~gptoss_magics.tools.interleave.Interleaver`). An engine that runs
    conversations itself (a Ray cluster: ``submit_conversations``) gets the rows' first
    prompts and the tools, and sends back each row's whole conversation, rebuilt here
    from its record (:meth:`Conversation.replayed`: no tool runs twice)."""

    def __init__(self, gen: Generation, batch: list[int], sampling: Sampling,
                 first: bool) -> None:
        m = gen.m
        self.gen, self.m, self.sampling, self.first = gen, m, sampling, first
        self.batch = batch
        self.convs = {i: self._conversation(gen.ids[i]) for i in batch}
        self.retry: list[int] = []

    def _conversation(self, prompt_ids: list[int], record: dict[str, Any] | None = None
                      ) -> Conversation:
        o = self.m.options
        if record is not None:
            return Conversation.replayed(prompt_ids, o.tools, record,
                                         max_rounds=o.max_tool_rounds,
                                         timeout_s=o.tool_timeout_s)
        return Conversation(prompt_ids, o.tools, max_rounds=o.max_tool_rounds,
                            timeout_s=o.tool_timeout_s)

    def run(self) -> list[int]:
        engine = self.m.session.engine
        remote = getattr(engine, "submit_conversations", None)
        if remote is None:
            Interleaver(engine, self.convs, self.sampling, self._finish,
                        priority=self.m.priority, cancel=self.m.cancel).run()
            return self.retry
        o = self.m.options
        job = remote([self.gen.ids[i] for i in self.batch], self.sampling, tools=o.tools,
                     max_rounds=o.max_tool_rounds, timeout_s=o.tool_timeout_s)
        try:
            for event in job.iter_events(cancel=self.m.cancel):
                done = event.done
                if done is None:
                    continue
                row = self.batch[done.index]
                record = done.conversation
                if record is not None:
                    self.convs[row] = self._conversation(self.gen.ids[row], record)
                else:  # a row the cluster could not run (aborted, or the map stopped)
                    self.convs[row].feed(done, run=False)
                    self.convs[row].stop()
                self._finish(row, None if record is None else record.get("failure"))
        except BaseException:
            job.abort()
            raise
        return self.retry

    def _finish(self, row: int, failure: str | None) -> None:
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


def run_tool_rows(gen: Generation, batch: list[int], sampling: Sampling,
                  first: bool) -> list[int]:
    """Run ``batch`` with tools (see :class:`ToolRows`); the rows to try once more."""
    return ToolRows(gen, batch, sampling, first).run()


__all__ = ["WORKERS", "ToolRows", "conversation_row", "run_tool_rows", "tools_key"]
