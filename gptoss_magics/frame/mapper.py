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
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .. import audit, harmony
from .. import template as tmpl
from ..cluster.backend import backend_session
from ..errors import GptOssWarning, InvalidOptionError
from ..fewshot import examples_to_turns
from ..options import MAP_OPTIONS, PROMPT_OPTIONS, Options, check_bool, check_names
from ..session import Session, current, is_loaded
from ..settings import settings
from .cache import ResultCache
from .checks import check_frame, is_missing
from .generation import Generation, reraise
from .plan import MapPlan
from .result import MapSummary, RowResult, add_columns, answers, raise_first_error, row_lists
from .tool_rows import tools_key

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
        self._key_parts: tuple[Any, Any, bytes] | None = None  # key(): hashed once
        self._ids_ahead: list[int] = []  # the ids every prompt starts with
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{id(self):x}"

    @classmethod
    def create(cls, frame: pd.DataFrame, template_text: str, **options: Any) -> RowMapper:
        """A mapper for the map options ``options`` (checked; unset ones from settings)."""
        check_names(options, MAP_OPTIONS)
        given = dict(options)
        if given.pop("cascade", None) is not None:
            raise InvalidOptionError("cascade= runs with df.gptoss.map and df.gptoss.plan "
                                     "(not submit or the magics): call map instead")
        backend = given.pop("backend", None)
        spec = MapSpec.resolve(template_text if isinstance(template_text, str) else "", given)
        prompt = {k: v for k, v in given.items() if k in PROMPT_OPTIONS}
        resolved = Options.resolve(**prompt)
        if backend is None:
            return cls(frame, template_text, resolved, spec)
        check_frame(frame, template_text)  # a bad template fails before Ray starts
        return cls(frame, template_text, resolved, spec,
                   session=backend_session(backend, resolved.tools))

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
        pieces = tmpl.parse(self.template)
        # {column} alone, no format or conversion: a row of str values is just joined
        plain = all(f is None or (f in cols and not spec and conv is None)
                    for _, f, spec, conv in pieces)
        for values in self.frame[cols].itertuples(index=False, name=None):
            row = dict(zip(cols, values, strict=True))
            if plain and all(type(v) is str for v in values):
                out.append("".join(lit + (row[f] if f is not None else "")
                                   for lit, f, _, _ in pieces))
            elif any(is_missing(v) for v in values):
                out.append(None)
            else:
                out.append(tmpl.render(self.template, tmpl.namespace_lookup(row)))
        return out

    def key(self, prompt_ids: Sequence[int]) -> str:
        """The cache key of a prompt under this map's sampling and model: the SHA-256 of
        ``json.dumps([fingerprint, ids, sampling(, tools)], sort_keys=True)``, computed in
        parts (the JSON around the ids and the ids every prompt starts with are hashed once
        per map)."""
        if self._key_parts is None:
            # asking for log-probabilities changes no token: such rows share their key
            sampling = {k: v for k, v in self.sampling.as_dict().items() if k != "logprobs"}
            after: list[Any] = [sampling]
            if self.options.tools:  # their names and schemas, and the round limit
                after.append(tools_key(self.options))
            # json.dumps writes a list of ints as the ints joined by ", "
            head = json.dumps([self.session.fingerprint, []], sort_keys=True)[:-2]
            tail = json.dumps([[], *after], sort_keys=True)[2:]
            start = hashlib.sha256(head.encode())
            ahead = start.copy()
            ahead.update("".join(f"{i}, " for i in self._ids_ahead).encode())
            self._key_parts = (start, ahead, tail.encode())
        start, ahead, end = self._key_parts
        n = len(self._ids_ahead)
        if n and len(prompt_ids) > n and list(prompt_ids[:n]) == self._ids_ahead:
            digest, rest = ahead.copy(), prompt_ids[n:]
        else:
            digest, rest = start.copy(), prompt_ids
        digest.update(", ".join(map(str, rest)).encode())
        digest.update(end)
        return digest.hexdigest()

    def _render(self) -> tuple[list[str | None], list[str], list[list[int]]]:
        """Each row's prompt (None: missing values), the distinct prompts, and their
        token ids with the examples ahead."""
        prompts = self.prompts()
        unique = list(dict.fromkeys(p for p in prompts if p is not None))
        render = self.options.renderer(self.spec.examples, run_tools=True)
        if self._key_parts is None:
            self._ids_ahead = render.head  # what key() hashes once
        return prompts, unique, [render(p) for p in unique]

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
        if self._session is not None or is_loaded():
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
                        if p in long_prompts] if limit else None
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
                Generation(self, prompts, unique, ids, keys, results, store).run(todo)
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
            reraise(stopped, self._note(store, saved, keys, results))
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
