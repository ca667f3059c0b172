"""The engine room of ``df.gptoss.map``: one template, many rows, one engine batch.

* Rows go to the engine together; identical prompts are generated once; the system and
  developer messages (and the worked examples) open every prompt, so vLLM's prefix
  cache reuses them.
* Every finished row is written at once to the result cache, keyed by the weights
  fingerprint, the prompt's token ids and the sampling settings. An interrupt, a crash or
  any error loses nothing finished: the outstanding requests are aborted,
  :func:`last_result` holds the partial result, and the same map run again generates
  only the missing rows. Rows the engine refused (a prompt too long for the context) are
  not cached: they depend on how the engine was loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from .. import audit, harmony
from .. import template as tmpl
from ..errors import (
    CancelledError,
    EngineDeadError,
    GptOssWarning,
    InvalidOptionError,
)
from ..fewshot import examples_to_turns
from ..options import MAP_OPTIONS, PROMPT_OPTIONS, Options, check_bool, check_names
from ..reply import read_completion
from ..session import Session, current, is_loaded
from ..settings import settings
from .cache import ResultCache
from .checks import check_frame, is_missing
from .plan import MapPlan
from .result import MapSummary, RowResult, add_columns, answers, raise_first_error, row_lists
from .tool_rows import run_tool_rows, tools_key

#: the result of the last map, complete or partial (after an interrupt or a crash)
_LAST: dict[str, Any] = {}


def last_result() -> pd.Series | pd.DataFrame | None:
    """The result of the last ``map`` (partial when it was interrupted or crashed)."""
    return _LAST.get("result")


@dataclass(frozen=True)
class MapSpec:
    """The map options beyond the prompt's: what the map returns and how it runs."""

    examples: tuple[harmony.Turn, ...] = ()
    reasoning: bool = False
    usage: bool = False
    cache: bool = True
    on_error: str = "mark"
    progress: bool = True
    tool_calls: bool = False

    @classmethod
    def resolve(cls, template_text: str, given: dict[str, Any]) -> MapSpec:
        """Check the map's own options (taking them out of ``given``)."""
        on_error = given.pop("on_error", "mark")
        if on_error not in ("mark", "raise"):
            raise InvalidOptionError(f"on_error must be 'mark' or 'raise', not {on_error!r}")
        flags = {n: check_bool(n, given.pop(n)) for n in ("reasoning", "usage", "cache",
                                                          "progress", "tool_calls") if n in given}
        return cls(examples=examples_to_turns(template_text, given.pop("examples", None)),
                   on_error=on_error, **flags)


@dataclass
class Progress:
    """What a running map has done, readable from other threads."""

    rows_done: int = 0
    tokens_generated: int = 0
    callback: Callable[[], None] | None = field(default=None, repr=False)


class RowMapper:
    """Maps one template over the rows of a DataFrame."""

    def __init__(self, frame: pd.DataFrame, template_text: str, options: Options,
                 spec: MapSpec, *, session: Session | None = None, priority: int = 0,
                 cancel: threading.Event | None = None, quiet: bool = False) -> None:
        self.fields = check_frame(frame, template_text)
        self.frame = frame
        self.template = template_text
        self.options = options
        self.spec = spec
        self.sampling = options.sampling()
        self._session = session
        self.priority = priority
        self.cancel = cancel
        self.quiet = quiet  # keep the warning in self.warning instead of warning
        self.warning: str | None = None
        self.per_row: list[RowResult | None] = []  # set by run(): each row's result
        self.auditing = True  # False once an audit write failed (warned once per run)
        self.summary = MapSummary(rows=len(frame))
        self.progress = Progress()
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{id(self):x}"

    @classmethod
    def create(cls, frame: pd.DataFrame, template_text: str, **options: Any) -> RowMapper:
        """A mapper for the map options ``options`` (checked; unset ones from settings)."""
        check_names(options, MAP_OPTIONS)
        given = dict(options)
        if given.pop("cascade", None) is not None:
            raise InvalidOptionError("cascade= runs with df.gptoss.map and df.gptoss.plan "
                                     "(not submit or the magics): call map instead")
        spec = MapSpec.resolve(template_text if isinstance(template_text, str) else "", given)
        prompt = {k: v for k, v in given.items() if k in PROMPT_OPTIONS}
        return cls(frame, template_text, Options.resolve(**prompt), spec)

    @property
    def session(self) -> Session:
        """The loaded model (raises EngineNotLoadedError when there is none)."""
        if self._session is None:
            self._session = current()
        return self._session

    # ------------------------------------------------------------------ prompts
    def prompts(self) -> list[str | None]:
        """The rendered prompt of every row, or None where a referenced value is missing."""
        out: list[str | None] = []
        cols = self.fields
        for values in self.frame[cols].itertuples(index=False, name=None):
            row = dict(zip(cols, values, strict=True))
            if any(is_missing(v) for v in row.values()):
                out.append(None)
                continue
            out.append(tmpl.render(self.template, tmpl.namespace_lookup(row)))
        return out

    def key(self, prompt_ids: Sequence[int]) -> str:
        """The cache key of a prompt under this map's sampling and model."""
        # asking for log-probabilities changes no token: such rows share their key
        sampling = {k: v for k, v in self.sampling.as_dict().items() if k != "logprobs"}
        parts: list[Any] = [self.session.fingerprint, list(prompt_ids), sampling]
        if self.options.tools:  # their names and schemas, and the round limit
            parts.append(tools_key(self.options))
        blob = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _render(self) -> tuple[list[str | None], list[str], list[list[int]]]:
        """Each row's prompt (None: missing values), the distinct prompts, and their
        token ids with the examples ahead."""
        prompts = self.prompts()
        unique = list(dict.fromkeys(p for p in prompts if p is not None))
        return prompts, unique, [self.options.render(p, self.spec.examples, run_tools=True)
                                 for p in unique]

    def _store(self) -> ResultCache | None:
        if not self.spec.cache:
            return None
        store = ResultCache(settings().cache_path("results.sqlite"))
        return store if store.db is not None else None

    # ------------------------------------------------------------------ plan
    def plan(self) -> MapPlan:
        """What :meth:`run` would do: counts, prompt sizes and the first prompt."""
        prompts, unique, ids = self._render()
        lengths = [len(i) for i in ids] or [0]
        cached = too_long = None
        if is_loaded():
            cached = 0
            store = self._store()
            if store is not None:
                try:
                    cached = len(self._cached_rows(store, [self.key(i) for i in ids]))
                finally:
                    store.close()
            limit = int(self.session.engine.info.get("max_model_len") or 0)
            long_prompts = {p for p, i in zip(unique, ids, strict=True) if len(i) >= limit}
            too_long = [label for label, p in zip(self.frame.index, prompts, strict=True)
                        if p in long_prompts]
        return MapPlan(
            rows=len(prompts), missing=sum(p is None for p in prompts),
            distinct_prompts=len(unique), cached=cached,
            to_generate=None if cached is None else len(unique) - cached,
            prompt_tokens_min=min(lengths), prompt_tokens_median=statistics.median(lengths),
            prompt_tokens_max=max(lengths), too_long=too_long,
            max_tokens=self.options.max_tokens, reasoning_budget=self.options.reasoning_budget,
            effort=self.options.effort, constraint=self.options.constraint.kind,
            first_prompt=harmony.decode(ids[0]) if ids else "",
            tools=tuple(t.recipient for t in self.options.tools),
            max_tool_rounds=self.options.max_tool_rounds)

    # ------------------------------------------------------------------ run
    def run(self) -> pd.Series | pd.DataFrame:
        """Generate (or fetch from the cache) every row and assemble the result."""
        t0 = time.perf_counter()
        audit.check_writable()
        prompts, unique, ids = self._render()
        self.summary.missing = sum(p is None for p in prompts)
        self.summary.unique_prompts = len(unique)
        keys = [self.key(i) for i in ids]
        results: dict[str, RowResult] = {}
        store = self._store()
        stopped: BaseException | None = None
        saved = 0
        try:
            self._from_cache(store, keys, results)
            todo = [i for i, k in enumerate(keys) if k not in results]
            waiting = {unique[i] for i in todo}
            self.progress.rows_done = sum(1 for p in prompts if p not in waiting)
            try:
                _Generation(self, prompts, unique, ids, keys, results, store).run(todo)
            except BaseException as exc:
                stopped = exc
            saved = store.count(keys) if store is not None and stopped is not None else 0
        finally:
            if store is not None:
                store.close()
        self.summary.seconds = round(time.perf_counter() - t0, 3)
        result = self.assemble(prompts, unique, keys, results)
        _LAST["result"] = result
        self.write_audit({"kind": "map", "run": self.run_id,
                          "interrupted": stopped is not None, **result.attrs["gptoss"]})
        if stopped is not None:
            _reraise(stopped, self._note(store, saved, keys, results))
        self._warn()
        return result

    def write_audit(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the audit log; after a failed write (warned once) this run
        writes no more."""
        if self.auditing:
            self.auditing = audit.write(record)

    def _from_cache(self, store: ResultCache | None, keys: list[str],
                    results: dict[str, RowResult]) -> None:
        if store is not None:
            results.update(self._cached_rows(store, keys))
        self.summary.cached = len(results)

    def _cached_rows(self, store: ResultCache, keys: list[str]) -> dict[str, RowResult]:
        """The rows of ``keys`` the cache can serve to this map."""
        out = {}
        for k, v in store.get_many(keys).items():
            cached = RowResult.from_json(v)
            if cached is None or cached.engine_error:
                continue  # unreadable, or an engine error saved by an older version
            if self.options.confidence and cached.answer_logprob is None and \
                    cached.final and not cached.truncated:
                continue  # made without log-probabilities: generate it again
            out[k] = cached
        return out

    def _note(self, store: ResultCache | None, saved: int, keys: list[str],
              results: dict[str, RowResult]) -> str:
        done = sum(1 for k in keys if k in results)
        if store is not None:  # what is on disk, counted after the interruption
            where = f"{saved} of {len(keys)} distinct prompts are saved in the result cache"
            if store.broken is not None:
                where += f" (it could not save more: {store.broken})"
            again = "running the same map again generates only the rest"
        else:
            where = f"{done} of {len(keys)} distinct prompts are finished (the cache is off)"
            again = "the cache was off, so running it again generates every row"
        return (f"{where}; gptoss_magics.last_result() holds the partial result ({done} "
                f"finished), and {again}.")

    # ------------------------------------------------------------------ output
    def assemble(self, prompts: list[str | None], unique: list[str], keys: list[str],
                 results: dict[str, RowResult]) -> pd.Series | pd.DataFrame:
        """Build the Series/DataFrame aligned to the frame's index."""
        by_prompt = {p: results.get(k) for p, k in zip(unique, keys, strict=True)}
        index = self.frame.index
        per_row = [by_prompt.get(p) if p is not None else None for p in prompts]
        self.per_row = per_row  # each row's result (None: not sent), for the evaluation
        self.summary.count(per_row, results)
        if self.spec.on_error == "raise":
            raise_first_error(index, per_row)
        out = add_columns(answers(index, per_row, self.options.constraint), index, per_row,
                          usage=self.spec.usage, confidence=self.options.confidence,
                          reasoning=self.spec.reasoning, tool_calls=self.spec.tool_calls)
        out.attrs["gptoss"] = self.provenance(per_row)
        return out

    def provenance(self, per_row: list[RowResult | None]) -> dict[str, Any]:
        """``attrs['gptoss']``: how the column was made, and which rows to look at."""
        info = self.session.provenance(self.options, self.sampling.as_dict())
        info.update(template=self.template,
                    examples=[[t.user, t.final] for t in self.spec.examples],
                    constraint=self.options.constraint.kind,
                    summary=dict(self.summary.__dict__),
                    **row_lists(self.frame.index, per_row))
        return info

    def _warn(self) -> None:
        s, o = self.summary, self.options
        problems = []
        if s.truncated:
            hint = "raise max_tokens or lower effort"
            if o.reasoning_budget is None:
                hint += (f", or set reasoning_budget well below {o.max_tokens} so that every "
                         "row gets an answer")
            problems.append(f"{s.truncated} of {s.rows} rows hit max_tokens ({o.max_tokens}); "
                            f"{hint}")
        if s.no_final:
            problems.append(f"{s.no_final} of {s.rows} rows ended without a final answer")
        if s.errors:
            problems.append(f"{s.errors} of {s.rows} rows failed (see the error column or "
                            "attrs['gptoss']['error_rows'])")
        if s.missing:
            problems.append(f"{s.missing} of {s.rows} rows had missing values and were not "
                            "sent (<NA>)")
        if problems:
            self.warning = "; ".join(problems)
            if not self.quiet:
                warnings.warn(self.warning, GptOssWarning, stacklevel=4)


def _reraise(exc: BaseException, note: str) -> None:
    if isinstance(exc, KeyboardInterrupt):
        raise KeyboardInterrupt(f"map interrupted: {note}") from None
    if isinstance(exc, CancelledError):
        raise CancelledError(f"map cancelled: {note}") from None
    if isinstance(exc, EngineDeadError):
        raise EngineDeadError(f"{exc} {note}") from exc
    if hasattr(exc, "add_note"):
        exc.add_note(f"gptoss-magics: {note}")
    raise exc


class _Generation:
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
        if not todo:
            return
        m = self.m
        if m.spec.progress:
            from tqdm.auto import tqdm

            initial = len(m.frame) - sum(self.rows_per_prompt[self.unique[i]] for i in todo)
            self.bar = tqdm(total=len(m.frame), initial=initial, unit="row", desc="gpt-oss",
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
