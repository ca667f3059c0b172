"""Map gpt-oss over DataFrame rows: ``df.gptoss.map(...)`` and ``series.gptoss.map(...)``.

One template, many rows, one engine batch. The work is done by :class:`RowMapper`, a
plain class; the pandas accessors only hand it the frame.

* Rows go to vLLM together; identical prompts are generated once; the system and
  developer messages open every prompt, so vLLM's prefix cache reuses them.
* Every finished row is written at once to an on-disk cache (SQLite, readable by
  the user only), keyed by the model's weights fingerprint, the prompt's token
  ids and the sampling settings. An interrupt or an engine crash loses nothing
  finished: :func:`last_result` holds the partial result, and running the same map
  again generates only the missing rows. A second identical run comes from the
  cache.
* ``choices``, ``regex`` and ``schema`` constrain the final answer through vLLM's
  structured outputs, while the reasoning (analysis channel) stays free.
* Rows whose referenced values are missing are never sent (they get <NA>); rows that
  hit ``max_tokens`` or never reached a final answer are flagged and counted, never
  silently turned into empty answers.
* ``examples`` (few-shot) become earlier chat turns ahead of every row; ``confidence``
  and ``usage`` add per-row columns; ``reasoning_budget`` bounds each row's reasoning.
* ``df.gptoss.plan(...)`` says what a map would do without generating;
  ``df.gptoss.submit(...)`` runs it in the background (:class:`MapJob`), at a lower
  engine priority than interactive requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import audit, harmony
from . import template as tmpl
from .constraint import Constraint
from .errors import CancelledError, EngineDeadError, GptOssError, TemplateError
from .session import Options, Session, current, reasoning_was_cut, report_activity

#: the result of the last map, complete or partial (after an interrupt or a crash)
_LAST: dict[str, Any] = {}


class GptOssWarning(UserWarning):
    """Rows that hit max_tokens, missed a final answer, or failed."""


class RowError(GptOssError):
    """Raised with ``on_error='raise'`` when a row fails; names the row."""


def last_result() -> pd.Series | pd.DataFrame | None:
    """The result of the last ``map`` (partial when it was interrupted or crashed)."""
    return _LAST.get("result")


# ---------------------------------------------------------------------- cache
class ResultCache:
    """Finished rows on disk: SQLite in the cache folder, mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            # keep the damaged file for recovery, and carry on with a fresh cache
            aside = f"{self.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, aside + suffix)
            warnings.warn(f"the result cache could not be read ({exc}); it was moved to "
                          f"{aside} and a new one started", GptOssWarning, stacklevel=3)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        # Create the file readable by the user only (SQLite gives its -wal and -shm files
        # the same mode). Never open and close an existing database file ourselves: closing
        # any descriptor of it drops the POSIX locks that this process's SQLite connections
        # hold on it, which can corrupt the database.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, "
                   "value TEXT NOT NULL, created REAL NOT NULL)")
        db.commit()
        return db

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached values for those of ``keys`` that are present."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self.db.execute(
                        f"SELECT key, value FROM rows WHERE key IN ({marks})", chunk):
                    out[key] = json.loads(value)
        return out

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Store one finished row (committed at once)."""
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?)",
                            (key, json.dumps(value), time.time()))
            self.db.commit()

    def close(self) -> None:
        with self._lock:
            self.db.close()


# ---------------------------------------------------------------------- results
@dataclass
class RowResult:
    """What one prompt produced (shared by duplicate rows)."""

    final: str | None
    analysis: str
    finish_reason: str
    truncated: bool
    has_final: bool
    completion_tokens: int
    prompt_tokens: int
    value: Any = None
    error: str | None = None
    reasoning_cut: bool = False
    answer_logprob: float | None = None
    analysis_tokens: int | None = None  # None in rows cached by versions before 0.2
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("cached")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RowResult:
        return cls(**{**d, "cached": True})


def examples_to_turns(template_text: str, examples: Any) -> tuple[harmony.Turn, ...]:
    """Worked examples as earlier chat turns: ``template_text`` filled with each example's
    values as the question, its answer as the final answer.

    ``examples`` is a DataFrame with the template's columns and an ``answer`` column, or
    ``(input, answer)`` pairs whose input is a dict of the fields (or, for a template with
    one field, its value). Raises ValueError / TemplateError saying what is wrong."""
    if examples is None:
        return ()
    fields = tmpl.fields(template_text)
    pairs: list[tuple[Any, Any]]
    if isinstance(examples, pd.DataFrame):
        if "answer" not in examples.columns:
            raise ValueError("examples needs an 'answer' column next to the template's "
                             f"columns ({', '.join(fields)})")
        missing = [f for f in fields if f not in examples.columns]
        if missing:
            raise TemplateError(f"examples has no column {missing[0]!r}, which the "
                                "template uses")
        pairs = [(dict(zip(fields, values, strict=True)), answer) for *values, answer
                 in examples[[*fields, "answer"]].itertuples(index=False, name=None)]
    else:
        pairs = []
        for item in examples:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError("examples must be a DataFrame with an 'answer' column or "
                                 f"(input, answer) pairs, not {type(item).__name__} "
                                 f"{item!r:.60}")
            pairs.append((item[0], item[1]))
    turns = []
    for given, answer in pairs:
        if not isinstance(given, Mapping):
            if len(fields) != 1:
                raise ValueError(f"the template has {len(fields)} fields "
                                 f"({', '.join(fields)}): give each example's input as a "
                                 "dict of them")
            given = {fields[0]: given}
        missing = [f for f in fields if f not in given]
        if missing:
            raise TemplateError(f"an example has no value for {missing[0]!r}")
        if isinstance(answer, (dict, list)):
            answer = json.dumps(answer, default=str)  # as a schema answer is written
        turns.append(harmony.Turn(tmpl.render(template_text, tmpl.namespace_lookup(
            dict(given))), str(answer)))
    return tuple(turns)


# ---------------------------------------------------------------------- the plan
@dataclass
class MapPlan:
    """What a map would do, worked out without generating anything.

    ``first_prompt`` is the exact text the model would receive for the first row
    (the harmony system, developer and user messages). ``cached`` and ``too_long``
    are known only with a model loaded (None otherwise).
    """

    rows: int
    missing: int
    distinct_prompts: int
    cached: int | None
    to_generate: int | None
    prompt_tokens_min: int
    prompt_tokens_median: float
    prompt_tokens_max: int
    too_long: list[Any] | None
    max_tokens: int
    reasoning_budget: int | None
    effort: str
    constraint: str
    first_prompt: str

    @property
    def most_tokens(self) -> int | None:
        """The most tokens the run can generate: prompts to generate x max_tokens."""
        return None if self.to_generate is None else self.to_generate * self.max_tokens

    def _rows(self) -> list[tuple[str, str]]:
        def known(v: Any) -> str:
            return "? (no model loaded)" if v is None else f"{v:,}"

        rows = [
            ("rows", f"{self.rows:,} ({self.missing:,} with missing values, not sent)"),
            ("distinct prompts", f"{self.distinct_prompts:,}"),
            ("from the cache", known(self.cached)),
            ("to generate", known(self.to_generate)),
            ("prompt tokens", f"{self.prompt_tokens_min:,} / {self.prompt_tokens_median:,.0f} "
                              f"/ {self.prompt_tokens_max:,} (min / median / max)"),
            ("longer than the context", "? (no model loaded)" if self.too_long is None
             else f"{len(self.too_long):,}"),
            ("settings", f"effort {self.effort}, max_tokens {self.max_tokens:,}, reasoning "
                         f"budget {self.reasoning_budget}, constraint {self.constraint}"),
            ("at most", "?" if self.most_tokens is None
             else f"{self.most_tokens:,} generated tokens"),
        ]
        return rows

    def __repr__(self) -> str:
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        body = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
        return f"{body}\n--- first prompt, as the model receives it ---\n{self.first_prompt}"

    def _repr_html_(self) -> str:
        import html

        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                       for k, v in self._rows())
        return (f"<table class='gptoss-plan'>{body}</table><details><summary>first prompt, as "
                f"the model receives it</summary><pre>{html.escape(self.first_prompt)}</pre>"
                "</details>")


# ---------------------------------------------------------------------- the mapper
@dataclass
class MapSummary:
    """Counts of a map run."""

    rows: int = 0
    missing: int = 0
    unique_prompts: int = 0
    cached: int = 0
    generated: int = 0
    retried: int = 0
    truncated: int = 0
    reasoning_cut: int = 0
    no_final: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class RowMapper:
    """Maps one template over the rows of a DataFrame (the accessor's engine room)."""

    def __init__(self, frame: pd.DataFrame, template_text: str, *,
                 effort: str | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, seed: int | str | None = "default",
                 instructions: str | None = None, choices: Sequence[str] | None = None,
                 schema: Any = None, regex: str | None = None, reasoning: bool = False,
                 cache: bool = True, on_error: str = "mark", progress: bool = True,
                 reasoning_budget: int | str | None = "default", confidence: bool = False,
                 examples: Any = None, usage: bool = False,
                 session: Session | None = None) -> None:
        if on_error not in ("mark", "raise"):
            raise ValueError(f"on_error must be 'mark' or 'raise', not {on_error!r}")
        if not isinstance(template_text, str):
            raise TypeError("the template must be a string such as 'Summarise: {text}'")
        self.frame = frame
        self.template = template_text
        self.fields = tmpl.fields(template_text)
        missing = [f for f in self.fields if f not in frame.columns]
        if missing:
            cols = ", ".join(repr(c) for c in frame.columns)
            near = tmpl.missing_message(missing[0], [str(c) for c in frame.columns],
                                            "column")
            raise TemplateError(f"{near} The columns are: {cols}.")
        if not self.fields:
            raise TemplateError("The template refers to no column: write e.g. "
                                "'Summarise: {text}' with a column name in braces.")
        self.options = Options.resolve(effort, max_tokens, temperature, None, seed,
                                       instructions, reasoning_budget)
        self.constraint = Constraint.make(choices, schema, regex)
        self.examples = examples_to_turns(template_text, examples)
        self.sampling = self.options.sampling(logprobs=True if confidence else None,
                                              **self.constraint.sampling_args)
        self.reasoning = reasoning
        self.confidence = confidence
        self.usage = usage
        self.use_cache = cache
        self.on_error = on_error
        self.progress = progress
        self._session = session
        self.summary = MapSummary(rows=len(frame))
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{id(self):x}"
        # set by MapJob for a background run
        self.priority = 0
        self.cancel: threading.Event | None = None
        self.quiet = False  # keep the warning in self.warning instead of warning
        self.warning: str | None = None
        # progress, readable from other threads while running
        self.rows_done = 0
        self.tokens_generated = 0
        self.on_progress: Callable[[], None] | None = None

    @property
    def session(self) -> Session:
        """The loaded model (raises EngineNotLoadedError when there is none)."""
        if self._session is None:
            self._session = current()
        return self._session

    # ------------------------------------------------------------------ steps
    def prompts(self) -> list[str | None]:
        """The rendered prompt of every row, or None where a referenced value is missing."""
        out: list[str | None] = []
        cols = self.fields
        for values in self.frame[cols].itertuples(index=False, name=None):
            row = dict(zip(cols, values, strict=True))
            if any(_is_missing(v) for v in row.values()):
                out.append(None)
                continue
            out.append(tmpl.render(self.template, tmpl.namespace_lookup(row)))
        return out

    def key(self, prompt_ids: Sequence[int], sampling: Any) -> str:
        # asking for log-probabilities changes no token: such rows share their key
        settings = {k: v for k, v in sampling.as_dict().items() if k != "logprobs"}
        blob = json.dumps([self.session.fingerprint, list(prompt_ids), settings],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _render(self) -> tuple[list[str | None], list[str], list[list[int]]]:
        """Each row's prompt (None: missing values), the distinct prompts, and their
        token ids with the examples ahead."""
        prompts = self.prompts()
        unique = list(dict.fromkeys(p for p in prompts if p is not None))
        return prompts, unique, [self.options.render(p, self.examples) for p in unique]

    def plan(self) -> MapPlan:
        """What :meth:`run` would do: counts, prompt sizes and the first prompt."""
        import statistics

        from .session import is_loaded

        prompts, unique, ids = self._render()
        lengths = [len(i) for i in ids] or [0]
        cached = too_long = None
        if is_loaded():
            keys = [self.key(i, self.sampling) for i in ids]
            cached = 0
            if self.use_cache:
                store = ResultCache(self.session_cache_path())
                try:
                    cached = len(store.get_many(keys))
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
            effort=self.options.effort, constraint=self.constraint.kind,
            first_prompt=harmony.decode(ids[0]) if ids else "")

    def run(self) -> pd.Series | pd.DataFrame:
        """Generate (or fetch from the cache) every row and assemble the result."""
        t0 = time.perf_counter()
        prompts, unique, ids = self._render()
        self.summary.missing = sum(p is None for p in prompts)
        self.summary.unique_prompts = len(unique)
        sampling = self.sampling
        keys = [self.key(i, sampling) for i in ids]
        results: dict[str, RowResult] = {}
        store = ResultCache(self.session_cache_path()) if self.use_cache else None
        try:
            if store is not None:
                for k, v in store.get_many(keys).items():
                    cached = RowResult.from_json(v)
                    if self.confidence and cached.answer_logprob is None and \
                            cached.final and not cached.truncated:
                        continue  # made without log-probabilities: generate it again
                    results[k] = cached
            self.summary.cached = len(results)
            todo = [i for i, k in enumerate(keys) if k not in results]
            waiting = {unique[i] for i in todo}
            self.rows_done = sum(1 for p in prompts if p not in waiting)
            interrupted: BaseException | None = None
            try:
                self._generate(todo, ids, keys, sampling, results, store, prompts, unique)
            except (KeyboardInterrupt, EngineDeadError, CancelledError) as exc:
                interrupted = exc
        finally:
            if store is not None:
                store.close()
        self.summary.seconds = round(time.perf_counter() - t0, 3)
        result = self.assemble(prompts, unique, keys, results)
        _LAST["result"] = result
        audit.write({"kind": "map", "run": self.run_id, "interrupted": interrupted is not None,
                     **result.attrs["gptoss"]})
        if interrupted is not None:
            done = sum(1 for k in keys if k in results)
            note = (f"{done} of {len(unique)} distinct prompts are finished and saved; "
                    "gptoss_magics.last_result() holds the partial result, and running the "
                    "same map again generates only the rest.")
            if isinstance(interrupted, KeyboardInterrupt):
                raise KeyboardInterrupt(f"map interrupted: {note}") from None
            if isinstance(interrupted, CancelledError):
                raise CancelledError(f"map cancelled: {note}") from None
            raise EngineDeadError(f"{interrupted} {note}") from interrupted
        self._warn()
        return result

    def session_cache_path(self) -> str:
        from .settings import settings

        return str(settings().cache_path("results.sqlite"))

    def _generate(self, todo: list[int], ids: list[list[int]], keys: list[str], sampling: Any,
                  results: dict[str, RowResult], store: ResultCache | None,
                  prompts: list[str | None], unique: list[str]) -> None:
        if not todo:
            return
        rows_per_prompt: dict[str, int] = {}
        for p in prompts:
            if p is not None:
                rows_per_prompt[p] = rows_per_prompt.get(p, 0) + 1
        auditing = audit.log_path() is not None
        bar = self._bar(len(self.frame), len(self.frame) - sum(
            rows_per_prompt[unique[i]] for i in todo))
        tokens = [0]
        t0 = time.perf_counter()
        retry: list[int] = []

        def finish(index: int, res: RowResult) -> None:
            results[keys[index]] = res
            if store is not None and res.finish_reason != "abort":
                store.put(keys[index], res.to_json())
            if auditing:
                audit.write({"kind": "map_row", "run": self.run_id, "key": keys[index],
                             "prompt": unique[index], **res.to_json()})
            tokens[0] += res.completion_tokens
            self.tokens_generated = tokens[0]
            self.rows_done += rows_per_prompt[unique[index]]
            if self.on_progress is not None:
                self.on_progress()
            if bar is not None:
                bar.update(rows_per_prompt[unique[index]])
                elapsed = time.perf_counter() - t0
                bar.set_postfix_str(f"{tokens[0] / max(elapsed, 1e-9):,.0f} tok/s",
                                    refresh=False)

        def on_done(first_pass: bool) -> Callable[[Any], None]:
            def handle(completion: Any) -> None:
                index = batch[completion.index]
                res = self._read(completion)
                if first_pass and res.error is not None and self.constraint.kind == "schema" \
                        and res.has_final and not res.truncated:
                    retry.append(index)  # one more try before the row counts as failed
                    tokens[0] += res.completion_tokens
                    return
                finish(index, res)
            return handle

        engine = self.session.engine
        try:
            batch = todo
            engine.generate([ids[i] for i in batch], sampling, on_done=on_done(True),
                            priority=self.priority, cancel=self.cancel)
            if retry:
                self.summary.retried = len(retry)
                batch = list(retry)
                again = _reseeded(sampling)
                engine.generate([ids[i] for i in batch], again, on_done=on_done(False),
                                priority=self.priority, cancel=self.cancel)
        finally:
            if bar is not None:
                bar.close()
        self.summary.generated = len(todo)

    def _read(self, completion: Any) -> RowResult:
        parsed = harmony.parse_completion(completion.token_ids, completion.finish_reason)
        res = RowResult(final=parsed.final if parsed.has_final else None,
                        analysis=parsed.analysis, finish_reason=completion.finish_reason,
                        truncated=parsed.truncated, has_final=parsed.has_final,
                        completion_tokens=len(completion.token_ids),
                        prompt_tokens=completion.prompt_tokens, error=completion.error,
                        reasoning_cut=reasoning_was_cut(self.options.reasoning_budget, parsed),
                        analysis_tokens=parsed.analysis_tokens,
                        answer_logprob=None if completion.logprobs is None else
                        harmony.answer_logprob(completion.token_ids, completion.logprobs))
        if res.error is None and res.final is not None and not res.truncated:
            try:
                res.value = self.constraint.read(res.final)
            except (ValueError, TypeError) as exc:
                res.error = f"{type(exc).__name__}: {exc}"
        return res

    def _bar(self, total: int, initial: int) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="row", desc="gpt-oss", leave=True)

    # ------------------------------------------------------------------ output
    def assemble(self, prompts: list[str | None], unique: list[str], keys: list[str],
                 results: dict[str, RowResult]) -> pd.Series | pd.DataFrame:
        """Build the Series/DataFrame aligned to the frame's index."""
        by_prompt = {p: results.get(k) for p, k in zip(unique, keys, strict=True)}
        index = self.frame.index
        per_row = [by_prompt.get(p) if p is not None else None for p in prompts]
        s = self.summary
        s.truncated = sum(1 for r in per_row if r is not None and r.truncated)
        s.reasoning_cut = sum(1 for r in per_row if r is not None and r.reasoning_cut)
        s.no_final = sum(1 for r in per_row if r is not None and not r.has_final
                         and not r.truncated and r.finish_reason != "error")
        s.errors = sum(1 for r in per_row if r is not None and r.error is not None)
        s.prompt_tokens = sum(r.prompt_tokens for r in results.values() if not r.cached)
        s.completion_tokens = sum(r.completion_tokens for r in results.values() if not r.cached)
        if self.on_error == "raise":
            for label, r in zip(index, per_row, strict=True):
                if r is not None and r.error is not None:
                    raise RowError(f"row {label!r} failed: {r.error} (use on_error='mark' to "
                                   "keep going and get an error column)")

        def good(r: RowResult | None) -> Any:
            """The row's value when it succeeded, else None."""
            if r is None or r.error is not None or r.final is None or r.truncated:
                return None
            return r.value

        if self.constraint.kind == "schema":
            columns = self.constraint.columns()
            dicts = [good(r) for r in per_row]
            data = {c: [d.get(c) if isinstance(d, dict) else None for d in dicts]
                    for c in columns}
            out: pd.DataFrame | pd.Series = pd.DataFrame(data, index=index)
            for c, dtype in self.constraint.dtypes().items():
                with contextlib.suppress(TypeError, ValueError):
                    out[c] = out[c].astype(dtype)
        else:
            values = [good(r) for r in per_row]
            if self.constraint.kind == "choices":
                out = pd.Series(pd.Categorical(values, categories=list(
                    self.constraint.choices or ())), index=index, name="answer")
            else:
                out = pd.Series(values, index=index, dtype="string", name="answer")
        if self.reasoning or self.confidence or self.usage or isinstance(out, pd.DataFrame):
            frame = out.to_frame() if isinstance(out, pd.Series) else out
            if self.usage:
                for column, attr in (("prompt_tokens", "prompt_tokens"),
                                     ("reasoning_tokens", "analysis_tokens"),
                                     ("completion_tokens", "completion_tokens")):
                    frame[column] = pd.Series(
                        [getattr(r, attr) if r is not None else None for r in per_row],
                        index=index, dtype="Int64")
            if self.confidence:
                logprobs = [r.answer_logprob if r is not None and good(r) is not None
                            else None for r in per_row]
                frame["confidence"] = pd.Series(
                    [None if lp is None else math.exp(lp) for lp in logprobs],
                    index=index, dtype="Float64")
            if self.reasoning:
                frame["reasoning"] = pd.Series(
                    [r.analysis if r is not None else None for r in per_row],
                    index=index, dtype="string")
            frame["truncated"] = pd.Series(
                [r.truncated if r is not None else pd.NA for r in per_row], index=index,
                dtype="boolean")
            frame["error"] = pd.Series([_row_error(r) for r in per_row], index=index,
                                       dtype="string")
            out = frame
        out.attrs["gptoss"] = self.provenance(per_row)
        return out

    def provenance(self, per_row: list[RowResult | None]) -> dict[str, Any]:
        index = list(self.frame.index)
        info = self.session.provenance(self.options, self.sampling.as_dict())
        info.update(
            template=self.template,
            examples=[[t.user, t.final] for t in self.examples],
            constraint=self.constraint.kind,
            summary=dict(self.summary.__dict__),
            missing_rows=[i for i, p in zip(index, per_row, strict=True) if p is None],
            truncated_rows=[i for i, r in zip(index, per_row, strict=True)
                            if r is not None and r.truncated],
            reasoning_cut_rows=[i for i, r in zip(index, per_row, strict=True)
                                if r is not None and r.reasoning_cut],
            error_rows={str(i): _row_error(r) for i, r in zip(index, per_row, strict=True)
                        if _row_error(r)},
        )
        return info

    def _warn(self) -> None:
        s = self.summary
        problems = []
        if s.truncated:
            hint = "raise max_tokens or lower effort"
            if self.options.reasoning_budget is None:
                hint += (f", or set reasoning_budget well below {self.options.max_tokens} so "
                         "that every row gets an answer")
            problems.append(f"{s.truncated} of {s.rows} rows hit max_tokens "
                            f"({self.options.max_tokens}); {hint}")
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


def _row_error(r: RowResult | None) -> str | None:
    if r is None:
        return None
    if r.error:
        return r.error
    if r.truncated:
        return "hit max_tokens"
    if not r.has_final:
        return "no final answer"
    return None


def _reseeded(sampling: Any) -> Any:
    from dataclasses import replace

    return replace(sampling, seed=None if sampling.seed is None else sampling.seed + 1)


def _is_missing(value: Any) -> bool:
    """None, NaN, NaT and pd.NA are missing; strings (even "nan") and containers are not."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)) or not pd.api.types.is_scalar(value):
        return False
    return bool(pd.isna(value))


# ---------------------------------------------------------------------- accessors
_MAP_DOC = """Run gpt-oss on every row and return the answers aligned to the index.

    Parameters
    ----------
    template : str
        The prompt, with ``{column}`` fields (``{{``/``}}`` for literal braces).
    effort, max_tokens, temperature, seed, instructions, reasoning_budget
        As for ``gptoss_magics.complete``; unset ones come from the settings. With
        ``reasoning_budget`` the engine makes a row's model answer once its reasoning
        reaches that many tokens: rows get answers instead of hitting ``max_tokens``
        (``attrs["gptoss"]["reasoning_cut_rows"]`` lists the rows it cut).
    choices : list of str, optional
        Constrain the answer to one of these: a categorical column.
    schema : pydantic model class or JSON schema dict, optional
        Constrain the answer to JSON of this shape: one typed column per field.
    regex : str, optional
        Constrain the answer to this regular expression.
    reasoning : bool
        Also return the reasoning (analysis channel) as a column.
    examples : DataFrame or list of (input, answer) pairs, optional
        Worked examples (few-shot). A DataFrame has the template's columns and an
        ``answer`` column; a pair's input is the value of a one-field template or a dict
        of the fields. Each example becomes an earlier chat turn (the filled-in template,
        then its answer) ahead of every row, where vLLM's prefix cache computes it once.
    usage : bool
        Also return ``prompt_tokens``, ``reasoning_tokens`` and ``completion_tokens``
        columns (Int64): what each row cost, for accounting (duplicate rows share one
        generation; rows from the cache cost nothing this time).
    confidence : bool
        Also return a ``confidence`` column: the model's probability of each row's
        answer (the product of its answer tokens' probabilities, after its reasoning and
        under the constraint, so with ``choices`` it is the probability of that label
        among the choices). Sort by it to send the least certain rows to review.
    cache : bool
        Serve rows from, and save them to, the on-disk result cache.
    on_error : {"mark", "raise"}
        "mark" puts failures into an ``error`` column (``attrs`` for a Series);
        "raise" raises, naming the row.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Series (answers) or DataFrame (with ``schema`` or ``reasoning=True``: the
    answer or fields, ``reasoning``, ``truncated`` and ``error`` columns).
    ``result.attrs["gptoss"]`` records the model fingerprint, vLLM version,
    parameters, time, token totals and row counts.
    """


class MapJob:
    """A map running in the background (``df.gptoss.submit``): the kernel stays free.

    Its rows go to the engine at a lower priority than interactive requests, so
    ``%%gptoss`` cells and ``complete`` calls made meanwhile are answered first. Every
    finished row is saved to the result cache as it comes, as in a foreground map.

    ``job.result()`` waits and returns what ``map`` returns (or raises what it raised);
    ``job.cancel()`` stops it (finished rows stay in the cache, so a later map of the
    same rows generates only the rest); ``job.done``, ``job.rows_done`` and
    ``job.rows`` report progress, and the job displays as a progress line.
    """

    def __init__(self, mapper: RowMapper) -> None:
        _ = mapper.session  # raises EngineNotLoadedError here, not in the thread
        mapper.progress = False
        mapper.quiet = True
        mapper.priority = 1
        mapper.cancel = threading.Event()
        self._mapper = mapper
        self._result: pd.Series | pd.DataFrame | None = None
        self._error: BaseException | None = None
        self._t0 = time.perf_counter()
        self._t1: float | None = None
        self._key = f"map-{mapper.run_id}"
        self._reported = 0.0
        mapper.on_progress = self._report
        self._report(force=True)
        self._thread = threading.Thread(target=self._run, name="gptoss-map", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._mapper.run()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc
        finally:
            self._t1 = time.perf_counter()
            report_activity(self._key, None)

    def _report(self, force: bool = False) -> None:
        """Tell the session (and so the lab status bar) how far the job is, at most
        about once a second."""
        now = time.perf_counter()
        if not force and now - self._reported < 1.0:
            return
        self._reported = now
        report_activity(self._key, {
            "kind": "map", "rows": self.rows, "rows_done": self.rows_done,
            "tokens_per_s": round(self._mapper.tokens_generated / max(self.seconds, 1e-9), 1)})

    @property
    def done(self) -> bool:
        """True once the map has finished, failed or been cancelled."""
        return not self._thread.is_alive()

    @property
    def rows(self) -> int:
        """Rows of the DataFrame."""
        return len(self._mapper.frame)

    @property
    def rows_done(self) -> int:
        """Rows finished so far (from the cache, generated, or missing values)."""
        return self._mapper.rows_done

    @property
    def seconds(self) -> float:
        """Time since the job started (until it ended)."""
        return (self._t1 or time.perf_counter()) - self._t0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until done); True when done."""
        self._thread.join(timeout)
        return self.done

    def cancel(self, wait: bool = True) -> None:
        """Stop the job: unfinished rows are aborted, finished ones stay in the cache."""
        assert self._mapper.cancel is not None
        self._mapper.cancel.set()
        if wait:
            self.wait(60)

    def result(self, timeout: float | None = None) -> pd.Series | pd.DataFrame:
        """Wait for the map and return its result, or raise its error
        (:class:`CancelledError` after :meth:`cancel`)."""
        if not self.wait(timeout):
            raise TimeoutError(f"the map is still running ({self._progress()}); wait longer, "
                               "or cancel() it")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        if self._mapper.warning:
            warnings.warn(self._mapper.warning, GptOssWarning, stacklevel=2)
        return self._result

    def _state(self) -> str:
        if not self.done:
            return "running"
        if isinstance(self._error, CancelledError):
            return "cancelled"
        return "failed" if self._error is not None else "done"

    def _progress(self) -> str:
        rows = max(self.rows, 1)
        speed = self._mapper.tokens_generated / max(self.seconds, 1e-9)
        return (f"{self.rows_done:,} of {self.rows:,} rows ({100 * self.rows_done / rows:.0f}%), "
                f"{speed:,.0f} tok/s, {self.seconds:,.1f} s")

    def __repr__(self) -> str:
        tail = {"running": ".result() waits for it, .cancel() stops it",
                "done": ".result() has it", "cancelled": "finished rows are in the cache",
                "failed": f"{type(self._error).__name__}: {self._error}"}[self._state()]
        return f"MapJob {self._state()}: {self._progress()}; {tail}"

    def _repr_html_(self) -> str:
        import html

        return (f"<div class='gptoss-map-job'><progress value='{self.rows_done}' "
                f"max='{max(self.rows, 1)}'></progress> {html.escape(repr(self))}</div>")


@pd.api.extensions.register_dataframe_accessor("gptoss")
class DataFrameAccessor:
    """``df.gptoss``: run gpt-oss over the rows of a DataFrame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def map(self, template: str, **kwargs: Any) -> pd.Series | pd.DataFrame:
        return RowMapper(self._frame, template, **kwargs).run()

    map.__doc__ = _MAP_DOC

    def submit(self, template: str, **kwargs: Any) -> MapJob:
        """Start ``map`` (same arguments) in the background and return its
        :class:`MapJob` at once: the notebook stays usable, and interactive requests made
        meanwhile go ahead of its rows. ``job.result()`` gives the column."""
        return MapJob(RowMapper(self._frame, template, **kwargs))

    def plan(self, template: str, **kwargs: Any) -> MapPlan:
        """What ``map`` with the same arguments would do, without generating: rows,
        distinct prompts, rows already in the cache, prompt token counts, prompts too
        long for the model's context, the most tokens it can generate, and the first
        prompt exactly as the model would receive it."""
        return RowMapper(self._frame, template, **kwargs).plan()


@pd.api.extensions.register_series_accessor("gptoss")
class SeriesAccessor:
    """``series.gptoss``: run gpt-oss over the values of a Series (``{}`` or ``{value}``)."""

    def __init__(self, series: pd.Series) -> None:
        self._series = series

    def map(self, template: str, **kwargs: Any) -> pd.Series | pd.DataFrame:
        return self._mapper(template, **kwargs).run()

    map.__doc__ = _MAP_DOC.replace("``{column}`` fields", "``{}`` or ``{value}`` for the value")

    def submit(self, template: str, **kwargs: Any) -> MapJob:
        """Start ``map`` in the background (see ``DataFrame.gptoss.submit``)."""
        return MapJob(self._mapper(template, **kwargs))

    def plan(self, template: str, **kwargs: Any) -> MapPlan:
        """What ``map`` with the same arguments would do, without generating (see
        ``DataFrame.gptoss.plan``)."""
        return self._mapper(template, **kwargs).plan()

    def _mapper(self, template: str, **kwargs: Any) -> RowMapper:
        if not isinstance(template, str):
            raise TypeError("the template must be a string such as 'Summarise: {}'")
        rebuilt = []
        for literal, fld, spec, conv in tmpl.parse(template):
            rebuilt.append(literal.replace("{", "{{").replace("}", "}}"))
            if fld is not None:
                name = "value" if fld == "" else fld
                rebuilt.append("{" + name + (f"!{conv}" if conv else "") +
                               (f":{spec}" if spec else "") + "}")
        frame = pd.DataFrame({"value": self._series})
        return RowMapper(frame, "".join(rebuilt), **kwargs)

