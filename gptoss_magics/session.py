"""The process-wide model session: load a model, report its status, unload it.

    import gptoss_magics as gm
    gm.load("tiny")                        # or a local weights folder
    gm.load("/models/gpt-oss-20b", manifest="weights.sha256")   # verified first
    gm.status()
    gm.unload()                            # frees the memory, verified

Prompting the loaded model lives in :mod:`gptoss_magics.prompting`. Listeners
(:func:`on_change`, e.g. the JupyterLab status bar) hear about loads, unloads, runs and
background work (:func:`report_activity`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .engine import Engine, MemoryReport, process_rss
from .errors import (
    EngineAlreadyLoadedError,
    EngineNotLoadedError,
    ModelFolderError,
)
from .load_progress import LoadDisplay, interactive
from .manifest import verify_manifest
from .model_check import check_model
from .models import check_runnable, resolve_model, start_fingerprint
from .settings import settings
from .tiny import TINY_ENGINE_ARGS, notice_for, tiny_info

if TYPE_CHECKING:
    from .engine import EngineProtocol


@dataclass
class Session:
    """A loaded model: its engine and what is known about it."""

    engine: EngineProtocol
    label: str
    path: Path
    tiny: bool
    fingerprint: str
    memory_before: MemoryReport
    memory_loaded: MemoryReport
    fingerprint_kind: str = "full-sha256"
    loaded_at: float = field(default_factory=time.time)
    last_tokens_per_s: float | None = None
    notice: str | None = None
    #: the digest of the manifest the weights were verified against at load, or None
    manifest: str | None = None

    def provenance(self, options: Any, sampling: dict[str, Any]) -> dict[str, Any]:
        """How an answer from this session was made, under ``options`` (resolved)."""
        info = self.engine.info
        return {
            "model": self.label,
            "model_path": str(self.path),
            "weights_fingerprint": self.fingerprint,
            "fingerprint_kind": self.fingerprint_kind,
            "weights_manifest": self.manifest,
            "vllm": info.get("vllm"),
            "device": info.get("device"),
            "dtype": info.get("dtype"),
            "gptoss_magics": package_version(),
            **options.describe(),
            "sampling": sampling,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # where the rows were generated, when not here (a RayBackend: replicas, hosts)
            **({"backend": dict(info["backend"])} if info.get("backend") else {}),
        }


class _State:
    """The module's state, in one place."""

    lock: ClassVar[threading.RLock] = threading.RLock()
    session: ClassVar[Session | None] = None
    loading: ClassVar[threading.Event] = threading.Event()  # set while load() waits for vLLM
    listeners: ClassVar[list[Callable[[dict[str, Any]], None]]] = []
    activity: ClassVar[dict[str, dict[str, Any]]] = {}  # background work in progress, by key


def package_version() -> str:
    """This package's version."""
    try:
        return metadata.version("gptoss-magics")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "dev"


# ---------------------------------------------------------------------- listeners
def on_change(callback: Callable[[dict[str, Any]], None]) -> None:
    """Call ``callback(status())`` whenever a model is loaded, unloaded or has run."""
    _State.listeners.append(callback)


def report_activity(key: str, info: dict[str, Any] | None) -> None:
    """Record the progress of background work under ``key`` (None: it ended) and tell
    the listeners; ``status()["background"]`` lists what is running."""
    if info is None:
        _State.activity.pop(key, None)
    else:
        _State.activity[key] = dict(info)
    notify()


def notify() -> None:
    """Tell the listeners the current status."""
    if not _State.listeners:
        return
    info = status()
    for callback in list(_State.listeners):
        with contextlib.suppress(Exception):  # a broken listener must not break generation
            callback(info)


def record_speed(session: Session, tokens: int, wall_s: float) -> None:
    """Remember the last run's speed (shown by status and the lab status bar)."""
    if wall_s > 0:
        session.last_tokens_per_s = round(tokens / wall_s, 1)
    notify()


# ---------------------------------------------------------------------- lifecycle
def current() -> Session:
    """The loaded session; raises :class:`EngineNotLoadedError` when none is."""
    session = _State.session
    if session is None:
        raise EngineNotLoadedError()
    return session


def is_loaded() -> bool:
    """True when a model is loaded."""
    return _State.session is not None


def _checked_folder(name: str) -> tuple[Path, bool]:
    path, tiny = resolve_model(name)
    check = check_model(path)
    if not check.ok:
        more = len(check.problems) - 1
        raise ModelFolderError(
            f"{path} cannot be loaded: {check.problems[0]}" + (
                f" (and {more} more problem{'s' if more > 1 else ''}: "
                f"gptoss_magics.check_model({str(path)!r}) lists them)" if more else ""))
    return path, tiny


def _verified_folder(name: str, manifest: str | os.PathLike[str] | None,
                     progress: bool | None) -> tuple[Path, bool, str | None]:
    """The folder, whether it is a tiny model, and the manifest's digest (None without
    one), once the folder is complete, this machine can run it, and it matches the
    manifest; all before vLLM is imported. A second manifest check is quick: the hashes
    of unchanged files are remembered."""
    path, tiny = _checked_folder(name)
    check_runnable(path, name)
    digest = None if manifest is None else verify_manifest(
        path, manifest, interactive() if progress is None else progress)
    return path, tiny, digest


def _refuse_second() -> None:
    if _State.session is not None:
        raise EngineAlreadyLoadedError(
            f"{_State.session.label} is already loaded: run gptoss_magics.unload() "
            "(%gptoss_unload) first, then load again.")


def load(model: str | None = None, *, progress: bool | None = None,
         manifest: str | os.PathLike[str] | None = None,
         **engine_args: Any) -> dict[str, Any]:
    """Start a vLLM engine for ``model`` in this process and return its status.

    ``model`` is a local weights folder, a Hugging Face id already in the local
    cache, or ``"tiny"`` (the embedded CPU test model); it defaults to
    ``settings().model``. Keyword arguments go to vLLM's engine (``dtype``,
    ``max_model_len``, ``gpu_memory_utilization``, ``tensor_parallel_size``...), over
    ``settings().engine_args``. ``multiprocess=True`` runs vLLM's engine core in a
    child process instead of this one. ``background_reserve=N``: engine slots that
    background maps (``df.gptoss.submit``) leave free for interactive requests (default
    1/64 of vLLM's ``max_num_seqs``, at least 4). Nothing is ever downloaded. The weights'
    full SHA-256 fingerprint is computed while vLLM loads (remembered afterwards).
    ``progress``: show a progress line (shards and bytes read, elapsed time) while it
    loads; by default only in a Jupyter kernel or on a terminal.

    ``manifest``: a weights manifest (``python -m gptoss_magics manifest``); every file
    is verified against it before vLLM starts, as ``check --manifest`` does (with a
    progress bar; the SHA-256 of a file this machine hashed and that has not changed since
    is remembered), a folder that differs is refused (:class:`ModelFolderError` naming
    the file), and every answer's provenance then names the manifest's digest
    (``weights_manifest``).
    A checkpoint this machine has no kernel for (MXFP4 experts, as published, without a
    GPU or an AMX CPU) is refused at once with :class:`UnsupportedHardwareError`.
    """
    with _State.lock:
        s = settings()
        name = model or s.model
        # the folder first: a broken copy is worth knowing about before unloading anything
        path, tiny, digest = _verified_folder(name, manifest, progress)
        _refuse_second()
        args: dict[str, Any] = dict(TINY_ENGINE_ARGS, use_tqdm_on_load=False) if tiny else {}
        args.update(s.engine_args)
        args.update(engine_args)
        multiprocess = bool(args.pop("multiprocess", False))
        fingerprint = start_fingerprint(path)
        before = MemoryReport.now()
        label = (tiny_info(path) or {}).get("kind", "tiny") if tiny else name
        display = LoadDisplay(label, progress)
        _State.loading.set()
        notify()
        try:
            engine = Engine.start(str(path), multiprocess=multiprocess, offline=s.offline,
                                  on_progress=display, **args)
        finally:
            _State.loading.clear()
            display.close()
        try:
            fp = fingerprint.result()
        except BaseException:
            engine.close()
            raise
        _State.session = Session(engine, label, path, tiny, fp.value, before,
                                 MemoryReport.now(), fp.kind,
                                 notice=notice_for(label) if tiny else None,
                                 manifest=digest)
    notify()
    return status()


def attach(engine: EngineProtocol, label: str, *, path: str | Path = ".",
           fingerprint: str = "none", notice: str | None = None,
           manifest: str | None = None) -> dict[str, Any]:
    """Serve an engine that is already running (for example a
    :class:`~gptoss_magics.engine.ScriptedEngine` in tests) as the session's model;
    ``manifest`` is the digest its provenance records as ``weights_manifest``."""
    with _State.lock:
        _refuse_second()
        now = MemoryReport.now()
        _State.session = Session(engine, label, Path(path), False, fingerprint, now, now,
                                 "given", notice=notice, manifest=manifest)
    notify()
    return status()


@contextlib.contextmanager
def using(engine: EngineProtocol, label: str = "scripted", *, fingerprint: str = "none",
          notice: str | None = None, manifest: str | None = None) -> Iterator[Session]:
    """Serve ``engine`` as the session's model inside the ``with`` block, then put back
    whatever was loaded before (the other engine keeps running meanwhile). For tests of
    the surfaces on a :class:`~gptoss_magics.engine.ScriptedEngine`."""
    with _State.lock:
        saved = _State.session
        _State.session = None
        attach(engine, label, fingerprint=fingerprint, notice=notice, manifest=manifest)
        session = _State.session
    assert session is not None
    try:
        yield session
    finally:
        with _State.lock:
            _State.session = saved
        notify()


def unload() -> dict[str, Any]:
    """Shut the engine down and free its memory; returns the memory figures.

    ``rss_*`` and ``gpu_*``: this process's resident memory and GPU 0's memory in use
    before the load, loaded and after the unload. The first load in a process also
    imports vLLM and torch, whose code and data stay (Python does not unload modules):
    ``rss_after_import`` is the RSS once they were imported, before the engine was built,
    and ``engine_rss_bytes`` what the engine itself took (loaded minus that).
    ``returned_share`` is the part of it the unload gave back (1.0: all of it).
    Raises :class:`EngineNotLoadedError` when nothing is loaded.
    """
    with _State.lock:
        session = current()
        _State.session = None
        t0 = time.perf_counter()
        session.engine.close()
        unload_s = time.perf_counter() - t0
        after = MemoryReport.now()
    notify()
    return _memory_report(session, after, unload_s)


def _memory_report(session: Session, after: MemoryReport, unload_s: float
                   ) -> dict[str, Any]:
    before, loaded = session.memory_before, session.memory_loaded
    base = max(before.rss_bytes, int(session.engine.info.get("rss_after_import") or 0))
    engine_rss = loaded.rss_bytes - base
    return {
        "model": session.label,
        "rss_before_load": before.rss_bytes,
        "rss_after_import": base,
        "rss_loaded": loaded.rss_bytes,
        "rss_after_unload": after.rss_bytes,
        "engine_rss_bytes": engine_rss,
        "returned_share": round((loaded.rss_bytes - after.rss_bytes) / engine_rss, 4)
        if engine_rss > 0 else None,
        "gpu_before_load": before.gpu_used_bytes,
        "gpu_loaded": loaded.gpu_used_bytes,
        "gpu_after_unload": after.gpu_used_bytes,
        "unload_s": round(unload_s, 2),
    }


def status() -> dict[str, Any]:
    """Model, device, memory in use and current defaults, as a dict."""
    s = settings()
    defaults = {"effort": s.effort, "max_tokens": s.max_tokens,
                "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed,
                "reasoning_budget": s.reasoning_budget}
    background = [dict(v) for v in list(_State.activity.values())]
    session = _State.session
    if session is None:
        state = "loading" if _State.loading.is_set() else "none"
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
        "fingerprint_kind": session.fingerprint_kind,
        "weights_manifest": session.manifest,
        "device": info.get("device"),
        "dtype": info.get("dtype"),
        "max_model_len": info.get("max_model_len"),
        "vllm": info.get("vllm"),
        "multiprocess": info.get("multiprocess"),
        "load_s": info.get("load_s"),
        "rss_bytes": mem.rss_bytes,
        "gpu_used_bytes": mem.gpu_used_bytes,
        "tokens_generated": session.engine.tokens_generated,
        "scheduling": session.engine.scheduling(),
        "last_tokens_per_s": session.last_tokens_per_s,
        "defaults": defaults,
        "background": background,
    }
