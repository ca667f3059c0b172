"""One generation pass of a map over the rows still to do.

:class:`Generation` sends the distinct prompts that the cache could not serve to the
engine in one job (rows with tools go through :mod:`.tool_rows`), reads each completion
as it ends, writes it to the result cache and the audit log at once, and gives a row
whose answer failed its schema one more try. :func:`reraise` turns what stopped a run
(an interrupt, a cancel, a dead engine) into its error with a note on what was kept.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import audit
from ..errors import CancelledError, EngineDeadError
from ..reply import read_completion
from .cache import ResultCache
from .result import RowResult
from .tool_rows import run_tool_rows

if TYPE_CHECKING:
    from .mapper import RowMapper


def reraise(exc: BaseException, note: str) -> None:
    """Raise what stopped a map again, with ``note`` (what was kept, what a rerun does)."""
    if isinstance(exc, KeyboardInterrupt):
        raise KeyboardInterrupt(f"map interrupted: {note}") from None
    if isinstance(exc, CancelledError):
        raise CancelledError(f"map cancelled: {note}") from None
    if isinstance(exc, EngineDeadError):
        raise EngineDeadError(f"{exc} {note}") from exc
    if hasattr(exc, "add_note"):
        exc.add_note(f"gptoss-magics: {note}")
    raise exc


class Generation:
    """One pass of generation over the rows still to do, saving each row as it ends."""

    def __init__(self, mapper: RowMapper, prompts: list[str | None], unique: list[str],
                 ids: list[list[int]], keys: list[str], results: dict[str, RowResult],
                 store: ResultCache | None) -> None:
        self.m, self.unique, self.ids, self.keys = mapper, unique, ids, keys
        self.results, self.store = results, store
        self.rows_per_prompt: dict[str, int] = {}
        for p in prompts:
            if p is not None:
                self.rows_per_prompt[p] = self.rows_per_prompt.get(p, 0) + 1
        self.auditing = audit.log_path() is not None
        self.bar: Any = None
        self.t0 = time.perf_counter()

    def run(self, todo: list[int]) -> None:
        """Generate the distinct prompts ``todo`` (indices), then retry failed schemas."""
        if not todo:
            return
        m = self.m
        if m.spec.progress:
            from tqdm.auto import tqdm

            initial = len(m.frame) - sum(self.rows_per_prompt[self.unique[i]] for i in todo)
            desc = m.session.engine.info.get("progress_label") or "gpt-oss"
            self.bar = tqdm(total=len(m.frame), initial=initial, unit="row", desc=desc,
                            leave=True)
        try:
            retry = self._pass(todo, m.sampling, first=True)
            if retry:
                m.summary.retried = len(retry)
                seed = m.sampling.seed
                self._pass(retry, replace(m.sampling, seed=None if seed is None else seed + 1),
                           first=False)
        finally:
            if self.bar is not None:
                self.bar.close()
        m.summary.generated = len(todo)

    def _pass(self, batch: list[int], sampling: Any, first: bool) -> list[int]:
        """Generate ``batch``; on any exception abort what is still running."""
        m = self.m
        if m.options.tools:  # each row's conversation goes on by itself
            return run_tool_rows(self, batch, sampling, first)
        retry: list[int] = []
        job = m.session.engine.submit([self.ids[i] for i in batch], sampling,
                                      priority=m.priority)
        try:
            for event in job.iter_events(cancel=m.cancel):
                if event.done is None:
                    continue
                index = batch[event.done.index]
                res = RowResult.from_reading(read_completion(
                    event.done, constraint=m.options.constraint,
                    reasoning_budget=sampling.reasoning_budget, as_model=False),
                    m.options.constraint)
                res.latency_s = round(event.done.latency_s, 4)
                if first and res.error is not None and not res.engine_error and \
                        m.options.constraint.kind == "schema" and res.has_final \
                        and not res.truncated:
                    retry.append(index)  # one more try before the row counts as failed
                    self._count(res.completion_tokens)
                    continue
                self._finish(index, res)
        except BaseException:
            job.abort()
            raise
        return retry

    def _count(self, tokens: int) -> None:
        self.m.progress.tokens_generated += tokens

    def _finish(self, index: int, res: RowResult) -> None:
        m, key = self.m, self.keys[index]
        self.results[key] = res
        if self.store is not None and res.finish_reason != "abort" and not res.engine_error \
                and not res.tool_failed:
            self.store.put(key, res.to_json())
        if self.auditing:
            m.write_audit({"kind": "map_row", "run": m.run_id, "key": key,
                           "prompt": self.unique[index], **res.to_json()})
        self._count(res.completion_tokens)
        rows = self.rows_per_prompt[self.unique[index]]
        m.progress.rows_done += rows
        if m.progress.callback is not None:
            m.progress.callback()
        if self.bar is not None:
            self.bar.update(rows)
            speed = m.progress.tokens_generated / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{speed:,.0f} tok/s", refresh=False)
