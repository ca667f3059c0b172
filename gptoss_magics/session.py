"""The process-wide model session: load a model, prompt it, unload it.

This is the plain-Python API that the magics, the DataFrame accessor and the
widgets call::

    import gptoss_magics as gm
    gm.load("tiny")                        # or a local weights folder
    reply = gm.complete("Is 7 prime?", effort="high")
    replies = gm.complete_batch(["a", "b", "c"], effort="low")
    gm.unload()                            # frees the memory, verified
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import harmony
from .constraint import Constraint
from .errors import (
    EngineAlreadyLoadedError,
    EngineNotLoadedError,
    ModelFolderError,
    ModelNotFoundError,
)
from .model_check import check_model
from .reply import Reply
from .settings import EFFORTS, settings
from .tiny import TINY_ENGINE_ARGS, build_tiny, is_tiny, notice_for, tiny_info

_LOCK = threading.RLock()
_SESSION: Session | None = None
_SESSION_LOADING = threading.Event()  # set while load() waits for vLLM
_LISTENERS: list[Callable[[dict[str, Any]], None]] = []
_ACTIVITY: dict[str, dict[str, Any]] = {}  # background work in progress, by key


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    """Resolved per-call options: call arguments first, then the settings."""

    effort: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    instructions: str
    current_date: str | None
    knowledge_cutoff: str
    reasoning_budget: int | None = None

    @classmethod
    def resolve(cls, effort: str | None = None, max_tokens: int | None = None,
                temperature: float | None = None, top_p: float | None = None,
                seed: int | str | None = "default", instructions: str | None = None,
                reasoning_budget: int | str | None = "default") -> Options:
        """Fill unset arguments from the settings and validate them.

        ``seed`` and ``reasoning_budget`` take ``None`` as a value (no seed, no
        limit), so "unset" is spelled ``"default"`` for them."""
        s = settings()
        eff = (effort or s.effort).lower()
        if eff not in EFFORTS:
            raise ValueError(f"effort must be low, medium or high, not {effort!r}")
        mt = s.max_tokens if max_tokens is None else int(max_tokens)
        if mt < 1:
            raise ValueError(f"max_tokens must be at least 1, not {mt}")
        temp = s.temperature if temperature is None else float(temperature)
        if temp < 0:
            raise ValueError(f"temperature must be >= 0, not {temp}")
        tp = s.top_p if top_p is None else float(top_p)
        if not 0 < tp <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {tp}")
        sd = s.seed if seed == "default" else seed
        rb = s.reasoning_budget if reasoning_budget == "default" else reasoning_budget
        if rb is not None:
            rb = int(rb)
            if rb < 0:
                raise ValueError(f"reasoning_budget must be 0 or more tokens (or None), not {rb}")
        return cls(eff, mt, temp, tp, None if sd is None else int(sd),
                   s.instructions if instructions is None else instructions,
                   s.resolved_date(), s.knowledge_cutoff, rb)

    def render(self, prompt: str, history: Sequence[harmony.Turn] = ()) -> list[int]:
        """Prompt token ids for ``prompt`` under these options."""
        return harmony.render_prompt(
            prompt, effort=self.effort, instructions=self.instructions or None,
            history=history, knowledge_cutoff=self.knowledge_cutoff,
            current_date=self.current_date,
        )

    def sampling(self, **constraint: Any) -> Any:
        """Engine sampling settings (imported lazily: the engine module is light)."""
        from .engine import Sampling

        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature,
                        top_p=self.top_p, seed=self.seed,
                        reasoning_budget=self.reasoning_budget, **constraint)


# ---------------------------------------------------------------------- models
def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def resolve_model(name: str) -> tuple[Path, bool]:
    """The local folder for ``name`` and whether it is the tiny model. Never downloads."""
    if is_tiny(name):
        return build_tiny(name), True
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} has no config.json: point at the folder that holds config.json and "
                "the *.safetensors weights."
            )
        return path.resolve(), tiny_info(path) is not None
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(name, local_files_only=True)
            return Path(local), False
        except Exception:
            pass
        hint = "" if _has_gpu() else (
            " This machine has no GPU either: try `tiny`, the embedded CPU test model."
        )
        raise ModelNotFoundError(
            f"{name} is not on this machine (not a folder, not in the local Hugging Face "
            "cache) and nothing is downloaded at run time: copy the weights here and load "
            f"the folder, e.g. load('/models/gpt-oss-20b').{hint}"
        )
    raise ModelNotFoundError(
        f"No model folder at {path}: give a folder with config.json and the weights, a "
        "Hugging Face id already in the local cache, or 'tiny'."
    )


def weights_fingerprint(folder: Path) -> str:
    """A SHA-256 over the config and weight files of ``folder``.

    Files up to 512 MiB are hashed whole; larger ones by their safetensors header,
    size and three 4 MiB samples, so that 60 GB of weights fingerprint in a second.
    The result is cached in the cache folder by path, size and modification time.
    """
    names = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".pt")
                            or p.name in ("config.json", "generation_config.json",
                                          "tokenizer.json"))
    )
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in names]
    key = hashlib.sha256(json.dumps([str(folder), stamp]).encode()).hexdigest()
    cache_file = settings().cache_path("fingerprints.json")
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return str(known[key])
    digest = hashlib.sha256()
    for p in names:
        size = p.stat().st_size
        digest.update(f"{p.name}\0{size}\0".encode())
        with p.open("rb") as fh:
            if size <= 512 * 2**20:
                while block := fh.read(2**20):
                    digest.update(block)
            else:
                chunk = 4 * 2**20
                for offset in (0, size // 2, size - chunk):
                    fh.seek(offset)
                    digest.update(fh.read(chunk))
    value = "sha256:" + digest.hexdigest()
    known[key] = value
    try:
        cache_file.write_text(json.dumps(known))
        os.chmod(cache_file, 0o600)
    except OSError:
        pass
    return value


def _package_version() -> str:
    try:
        return metadata.version("gptoss-magics")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "dev"


# ---------------------------------------------------------------------- session
@dataclass
class Session:
    """A loaded model: its engine and what is known about it."""

    engine: Any
    label: str
    path: Path
    tiny: bool
    fingerprint: str
    memory_before: Any
    memory_loaded: Any
    loaded_at: float = field(default_factory=time.time)
    last_tokens_per_s: float | None = None

    @property
    def notice(self) -> str | None:
        """A line every display of this model's output must carry, or None."""
        return notice_for(self.label) if self.tiny else None

    def provenance(self, options: Options, sampling: dict[str, Any]) -> dict[str, Any]:
        """How an answer from this session was made."""
        return {
            "model": self.label,
            "model_path": str(self.path),
            "weights_fingerprint": self.fingerprint,
            "vllm": self.engine.info.get("vllm"),
            "device": self.engine.info.get("device"),
            "dtype": self.engine.info.get("dtype"),
            "gptoss_magics": _package_version(),
            "effort": options.effort,
            "instructions": options.instructions,
            "current_date": options.current_date,
            "knowledge_cutoff": options.knowledge_cutoff,
            "sampling": sampling,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def on_change(callback: Callable[[dict[str, Any]], None]) -> None:
    """Call ``callback(status())`` whenever a model is loaded, unloaded or has run."""
    _LISTENERS.append(callback)


def report_activity(key: str, info: dict[str, Any] | None) -> None:
    """Record the progress of background work under ``key`` (None: it ended) and tell
    the listeners; ``status()["background"]`` lists what is running."""
    if info is None:
        _ACTIVITY.pop(key, None)
    else:
        _ACTIVITY[key] = dict(info)
    _notify()


def _notify() -> None:
    if not _LISTENERS:
        return
    info = status()
    for callback in list(_LISTENERS):
        with contextlib.suppress(Exception):  # a broken listener must not break generation
            callback(info)


def current() -> Session:
    """The loaded session; raises :class:`EngineNotLoadedError` when none is."""
    session = _SESSION
    if session is None:
        raise EngineNotLoadedError()
    return session


def is_loaded() -> bool:
    """True when a model is loaded."""
    return _SESSION is not None


def load(model: str | None = None, **engine_args: Any) -> dict[str, Any]:
    """Start a vLLM engine for ``model`` in this process and return its status.

    ``model`` is a local weights folder, a Hugging Face id already in the local
    cache, or ``"tiny"`` (the embedded CPU test model); it defaults to
    ``settings().model``. Keyword arguments go to vLLM's engine (``dtype``,
    ``max_model_len``, ``gpu_memory_utilization``, ``tensor_parallel_size``...), over
    ``settings().engine_args``. ``multiprocess=True`` runs vLLM's engine core in a
    child process instead of this one. Nothing is ever downloaded.
    """
    global _SESSION
    from .engine import Engine, MemoryReport

    with _LOCK:
        s = settings()
        name = model or s.model
        # the folder first: a broken copy is worth knowing about before unloading anything
        path, tiny = resolve_model(name)
        check = check_model(path)
        if not check.ok:
            more = len(check.problems) - 1
            raise ModelFolderError(
                f"{path} cannot be loaded: {check.problems[0]}" + (
                    f" (and {more} more problem{'s' if more > 1 else ''}: "
                    f"gptoss_magics.check_model({str(path)!r}) lists them)" if more else ""))
        if _SESSION is not None:
            raise EngineAlreadyLoadedError(
                f"{_SESSION.label} is already loaded: run gptoss_magics.unload() "
                "(%gptoss_unload) first, then load again."
            )
        args: dict[str, Any] = dict(TINY_ENGINE_ARGS) if tiny else {}
        if tiny:
            args["use_tqdm_on_load"] = False
        args.update(s.engine_args)
        args.update(engine_args)
        multiprocess = bool(args.pop("multiprocess", False))
        fingerprint = weights_fingerprint(path)
        before = MemoryReport.now()
        _SESSION_LOADING.set()
        _notify()
        try:
            engine = Engine.start(str(path), multiprocess=multiprocess, offline=s.offline,
                                  **args)
        finally:
            _SESSION_LOADING.clear()
        label = (tiny_info(path) or {}).get("kind", "tiny") if tiny else name
        _SESSION = Session(engine, label, path, tiny, fingerprint, before, MemoryReport.now())
    _notify()
    return status()


def unload() -> dict[str, Any]:
    """Shut the engine down and free its memory; returns the memory figures.

    Raises :class:`EngineNotLoadedError` when nothing is loaded.
    """
    global _SESSION
    from .engine import MemoryReport

    with _LOCK:
        session = current()
        _SESSION = None
        session.engine.close()
        after = MemoryReport.now()
    _notify()
    return {
        "model": session.label,
        "rss_before_load": session.memory_before.rss_bytes,
        "rss_loaded": session.memory_loaded.rss_bytes,
        "rss_after_unload": after.rss_bytes,
        "gpu_before_load": session.memory_before.gpu_used_bytes,
        "gpu_loaded": session.memory_loaded.gpu_used_bytes,
        "gpu_after_unload": after.gpu_used_bytes,
    }


def status() -> dict[str, Any]:
    """Model, device, memory in use and current defaults, as a dict."""
    from .engine import MemoryReport, process_rss

    s = settings()
    defaults = {"effort": s.effort, "max_tokens": s.max_tokens,
                "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed,
                "reasoning_budget": s.reasoning_budget}
    background = [dict(v) for v in list(_ACTIVITY.values())]
    session = _SESSION
    if session is None:
        state = "loading" if _SESSION_LOADING.is_set() else "none"
        return {"state": state, "model": None, "rss_bytes": process_rss(),
                "defaults": defaults, "background": background}
    mem = MemoryReport.now()
    info = session.engine.info
    return {
        "state": "ready" if session.engine.alive else "dead",
        "model": session.label,
        "path": str(session.path),
        "tiny": session.tiny,
        "notice": session.notice,
        "weights_fingerprint": session.fingerprint,
        "device": info.get("device"),
        "dtype": info.get("dtype"),
        "max_model_len": info.get("max_model_len"),
        "vllm": info.get("vllm"),
        "multiprocess": info.get("multiprocess"),
        "load_s": info.get("load_s"),
        "rss_bytes": mem.rss_bytes,
        "gpu_used_bytes": mem.gpu_used_bytes,
        "tokens_generated": session.engine.tokens_generated,
        "last_tokens_per_s": session.last_tokens_per_s,
        "defaults": defaults,
        "background": background,
    }


# ---------------------------------------------------------------------- prompting
def make_reply(session: Session, options: Options, sampling: Any, completion: Any,
               parsed: harmony.Parsed | None = None,
               prompt_ids: Sequence[int] | None = None, prompt: str = "",
               history: Sequence[harmony.Turn] = (), audit: bool = True,
               constraint: Constraint | None = None) -> Reply:
    """Build the Reply for one engine Completion (and append it to the audit log)."""
    from . import audit as audit_log

    parsed = parsed or harmony.parse_completion(completion.token_ids, completion.finish_reason)
    value = value_error = None
    if constraint is not None and constraint.kind != "none" and parsed.has_final \
            and not parsed.truncated and not completion.error:
        try:
            value = constraint.read(parsed.final, as_model=True)
        except (ValueError, TypeError) as exc:
            value_error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    provenance = session.provenance(options, sampling.as_dict())
    if prompt_ids is not None:
        provenance["prompt_sha256"] = hashlib.sha256(
            json.dumps(list(prompt_ids)).encode()).hexdigest()
    if history:
        provenance["history"] = [[t.user, t.final] for t in history]
    reply = Reply(
        final=parsed.final,
        analysis=parsed.analysis,
        finish_reason=completion.finish_reason,
        truncated=parsed.truncated,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=len(completion.token_ids),
        latency_s=round(completion.latency_s, 4),
        effort=options.effort,
        model=session.label,
        analysis_tokens=parsed.analysis_tokens,
        first_token_s=(None if completion.first_token_s is None
                       else round(completion.first_token_s, 4)),
        malformed=parsed.malformed,
        recovered=parsed.recovered,
        reasoning_cut=reasoning_was_cut(sampling.reasoning_budget, parsed),
        confidence=confidence_of(completion),
        value=value,
        value_error=value_error,
        error=completion.error,
        notice=session.notice,
        prompt=prompt,
        token_ids=tuple(completion.token_ids),
        provenance=provenance,
    )
    if audit:
        audit_log.log_reply(reply)
    return reply


def reasoning_was_cut(budget: int | None, parsed: harmony.Parsed) -> bool:
    """True when a reasoning budget ran out: the engine then closed the analysis and
    opened the final channel."""
    return budget is not None and parsed.analysis_tokens >= budget


def confidence_of(completion: Any) -> float | None:
    """The model's probability of the completion's final answer, when the engine
    reported log-probabilities (``Sampling.logprobs``); else None."""
    import math

    if getattr(completion, "logprobs", None) is None:
        return None
    logprob = harmony.answer_logprob(completion.token_ids, completion.logprobs)
    return None if logprob is None else round(math.exp(logprob), 6)


def _request(effort: str | None, max_tokens: int | None, temperature: float | None,
             top_p: float | None, seed: int | str | None, instructions: str | None,
             reasoning_budget: int | str | None, confidence: bool,
             choices: Sequence[str] | None, regex: str | None, schema: Any
             ) -> tuple[Options, Constraint, Any]:
    """The resolved options, the constraint and the engine sampling of one request."""
    options = Options.resolve(effort, max_tokens, temperature, top_p, seed, instructions,
                              reasoning_budget)
    constraint = Constraint.make(choices, schema, regex)
    sampling = options.sampling(logprobs=True if confidence else None,
                                **constraint.sampling_args)
    return options, constraint, sampling


def complete(prompt: str, *, effort: str | None = None, max_tokens: int | None = None,
             temperature: float | None = None, top_p: float | None = None,
             seed: int | str | None = "default", instructions: str | None = None,
             history: Sequence[harmony.Turn] = (),
             reasoning_budget: int | str | None = "default",
             confidence: bool = False, choices: Sequence[str] | None = None,
             regex: str | None = None, schema: Any = None) -> Reply:
    """Prompt the loaded model once and return its parsed :class:`Reply`.

    Unset arguments come from :func:`gptoss_magics.settings`. ``history`` holds
    earlier turns of a chat (their reasoning is not sent again). ``reasoning_budget``
    caps the reasoning tokens: when it runs out the model is made to answer at once
    (``None``: no cap). ``confidence=True`` fills ``reply.confidence``, the model's
    probability of its answer. ``choices``, ``regex`` or ``schema`` (a pydantic model
    class or a JSON schema dict) constrain the final answer (the reasoning stays free);
    ``reply.value`` holds it read back (the pydantic object, for a model).
    """
    return complete_batch([prompt], effort=effort, max_tokens=max_tokens,
                          temperature=temperature, top_p=top_p, seed=seed,
                          instructions=instructions, history=history,
                          reasoning_budget=reasoning_budget, confidence=confidence,
                          choices=choices, regex=regex, schema=schema)[0]


def complete_batch(prompts: Sequence[str], *, effort: str | None = None,
                   max_tokens: int | None = None, temperature: float | None = None,
                   top_p: float | None = None, seed: int | str | None = "default",
                   instructions: str | None = None,
                   history: Sequence[harmony.Turn] = (),
                   reasoning_budget: int | str | None = "default",
                   confidence: bool = False, choices: Sequence[str] | None = None,
                   regex: str | None = None, schema: Any = None) -> list[Reply]:
    """Prompt the model with many prompts in one engine batch; one Reply per prompt,
    in order. Arguments as for :func:`complete`."""
    session = current()
    options, constraint, sampling = _request(
        effort, max_tokens, temperature, top_p, seed, instructions, reasoning_budget,
        confidence, choices, regex, schema)
    ids = [options.render(p, history) for p in prompts]
    completions = session.engine.generate(ids, sampling)
    replies = [make_reply(session, options, sampling, c, prompt_ids=p, prompt=text,
                          history=history, constraint=constraint)
               for c, p, text in zip(completions, ids, prompts, strict=True)]
    _record_speed(session, replies)
    return replies


def stream(prompt: str, *, effort: str | None = None, max_tokens: int | None = None,
           temperature: float | None = None, top_p: float | None = None,
           seed: int | str | None = "default", instructions: str | None = None,
           history: Sequence[harmony.Turn] = (),
           reasoning_budget: int | str | None = "default", confidence: bool = False,
           choices: Sequence[str] | None = None, regex: str | None = None,
           schema: Any = None) -> Iterator[tuple[str | None, str] | Reply]:
    """Stream one reply: yields ``(channel, text)`` deltas as they are generated,
    then the finished :class:`Reply`. Closing the iterator aborts the request and
    yields nothing more; see :class:`StreamHandle` for keeping the partial reply.
    Arguments as for :func:`complete`."""
    handle = StreamHandle(prompt, effort=effort, max_tokens=max_tokens,
                          temperature=temperature, top_p=top_p, seed=seed,
                          instructions=instructions, history=history,
                          reasoning_budget=reasoning_budget, confidence=confidence,
                          choices=choices, regex=regex, schema=schema)
    yield from handle.deltas()
    yield handle.reply()


class StreamHandle:
    """A streaming request whose partial Reply survives an interrupt.

    Iterate :meth:`deltas` for ``(channel, text)`` pieces; :meth:`reply` gives the
    Reply of what was generated, complete or not (``finish_reason='abort'`` when the
    stream was cut short).
    """

    def __init__(self, prompt: str, *, effort: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, seed: int | str | None = "default",
                 instructions: str | None = None,
                 history: Sequence[harmony.Turn] = (),
                 reasoning_budget: int | str | None = "default",
                 confidence: bool = False, choices: Sequence[str] | None = None,
                 regex: str | None = None, schema: Any = None) -> None:
        self.session = current()
        self.options, self.constraint, self.sampling = _request(
            effort, max_tokens, temperature, top_p, seed, instructions, reasoning_budget,
            confidence, choices, regex, schema)
        self.prompt = prompt
        self.history = tuple(history)
        self.prompt_ids = self.options.render(prompt, history)
        self.decoder = harmony.StreamDecoder()
        self.token_ids: list[int] = []
        self.completion: Any = None
        self.t0 = time.perf_counter()
        self.first_token_s: float | None = None
        self._reply: Reply | None = None
        self._events: Generator[Any, None, None] | None = None

    def close(self) -> None:
        """Abort the request if it is still running (idempotent)."""
        if self._events is not None:
            self._events.close()

    def deltas(self) -> Generator[tuple[str | None, str], None, None]:
        """Yield text deltas as tokens arrive."""
        self._events = self.session.engine.stream(self.prompt_ids, self.sampling)
        for event in self._events:
            if event.new_token_ids:
                if self.first_token_s is None:
                    self.first_token_s = time.perf_counter() - self.t0
                self.token_ids.extend(event.new_token_ids)
                yield from self.decoder.feed(event.new_token_ids)
            if event.done is not None:
                self.completion = event.done

    def reply(self) -> Reply:
        """The Reply for what has been generated (complete, or cut short)."""
        from .engine import Completion

        if self._reply is not None:
            return self._reply
        if self.completion is None:
            self.close()  # cut short: make sure the engine lets go of the request

        comp = self.completion or Completion(
            0, list(self.token_ids), "abort", len(self.prompt_ids),
            time.perf_counter() - self.t0, self.first_token_s)
        comp.token_ids = list(self.token_ids)
        parsed = self.decoder.finish(comp.finish_reason)
        reply = make_reply(self.session, self.options, self.sampling, comp, parsed,
                           self.prompt_ids, self.prompt, self.history,
                           constraint=self.constraint)
        self._reply = reply
        _record_speed(self.session, [reply])
        return reply


def _record_speed(session: Session, replies: Sequence[Reply]) -> None:
    if not replies:
        return
    tokens = sum(r.completion_tokens for r in replies)
    wall = max(r.latency_s for r in replies)
    if wall > 0:
        session.last_tokens_per_s = round(tokens / wall, 1)
    _notify()
