"""harmony's built-in python tool: the model's code runs in a sandboxed interpreter, never
in the kernel.

    tool = PythonTool(files={"prices.csv": prices_df})
    reply = gm.complete("30-day volatility of AAPL from prices.csv?", tools=[tool])

One interpreter per conversation (variables persist from call to call within a reply),
started at the first call and stopped when the conversation closes. It sees nothing of the
kernel: only the files passed in ``files``, copied into its private working folder. What
the sandbox stops, and what it does not, is in :mod:`gptoss_magics.tools._sandbox` and the
README ("Tools").
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import GptOssWarning, InvalidOptionError, MissingDependencyError
from ..harmony import PYTHON_RECIPIENT, ToolSpec
from . import _sandbox
from ._sandbox import Limits, RunResult, Sandbox, SandboxError
from .base import ToolOutcome

#: asked before each piece of code runs: True runs it, False refuses it
Approver = Callable[[str], bool]
REFUSED_TEXT = "The user refused to run this code."
LOST_STATE_TEXT = ("The interpreter was restarted: variables from earlier calls are gone; "
                   "files in the working folder are kept.")
NO_OUTPUT_TEXT = "[no output: print() what you want to see, or end the code with an expression]"
_FRAME_SUFFIXES = (".csv", ".parquet", ".json")


class PythonTool:
    """The sandboxed python tool (``tools=["python"]`` makes one with the defaults).

    ``files`` maps names in the working folder to what is copied there when a
    conversation's interpreter starts: a path (file or folder), bytes, or a DataFrame
    (written as CSV, parquet or JSON after the name's suffix; a name without one becomes
    ``NAME.parquet`` when pyarrow is installed, ``NAME.csv`` otherwise). ``approve`` is
    called with each piece of code before it runs (``%%gptoss --approve`` passes a widget);
    when it returns False the model is told the user refused.

    The sandbox needs bubblewrap (``bwrap``). Without it the tool refuses to start unless
    ``allow_host_files=True`` (the code can then read whatever the kernel's user can);
    ``allow_network=True`` lets the code reach the network.
    """

    def __init__(self, files: Mapping[str, Any] | None = None, *,
                 approve: Approver | None = None, allow_network: bool = False,
                 allow_host_files: bool = False, memory_mb: int = 2048, cpu_s: float = 60.0,
                 max_processes: int = 64, max_output_chars: int = 10_000,
                 max_file_mb: int = 256) -> None:
        for name, value in (("memory_mb", memory_mb), ("cpu_s", cpu_s),
                            ("max_processes", max_processes),
                            ("max_output_chars", max_output_chars), ("max_file_mb", max_file_mb)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidOptionError(f"PythonTool({name}=...) takes a positive number, "
                                         f"not {value!r}")
        if approve is not None and not callable(approve):
            raise InvalidOptionError("PythonTool(approve=...) takes a function of the code "
                                     f"that returns True or False, not {approve!r}")
        self.files = _check_files(files or {})
        self.approve = approve
        self.allow_network = bool(allow_network)
        self.limits = Limits(int(memory_mb), float(cpu_s), int(max_processes),
                             int(max_file_mb), int(max_output_chars))
        self._bwrap, self._isolate_network = _choose_mode(self.allow_network,
                                                          bool(allow_host_files))
        _sweep_stale()

    @property
    def recipient(self) -> str:
        """``python``: whom the model addresses."""
        return PYTHON_RECIPIENT

    def declaration(self) -> ToolSpec | None:
        """None: the python tool is declared in the system message."""
        return None

    @property
    def file_names(self) -> list[str]:
        """The names the model finds in its working folder."""
        return sorted(self.files)

    @property
    def isolation(self) -> str:
        """How the code is isolated here, in a few words."""
        if self._bwrap:
            return "bubblewrap" + (" (network allowed)" if self.allow_network else "")
        return "none: files visible" + ("" if self._isolate_network else ", network allowed")

    def identity(self) -> dict[str, Any]:
        """The tool in cache keys and provenance: its name, its files' contents, network."""
        return {"name": PYTHON_RECIPIENT, "network": self.allow_network,
                "files": {name: _digest(src) for name, src in sorted(self.files.items())}}

    def open(self) -> PythonSession:
        """A session for one conversation (the interpreter starts at its first call)."""
        return PythonSession(self)

    def __repr__(self) -> str:
        return f"PythonTool(files={self.file_names}, isolation={self.isolation!r})"


class _Box:
    """What a session holds; kept apart from it so that a finalizer can release it."""

    def __init__(self) -> None:
        self.base: Path | None = None
        self.sandbox: Sandbox | None = None

    def release(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.kill()
        base, self.base = self.base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


class PythonSession:
    """One conversation's interpreter: ``call`` runs code, ``close`` stops the process and
    deletes the working folder (also done when the session is garbage-collected, and at
    exit)."""

    def __init__(self, tool: PythonTool) -> None:
        self.tool = tool
        self._box = _Box()
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, self._box.release)

    @property
    def folder(self) -> Path | None:
        """The working folder on the kernel's side (None before the first call)."""
        return None if self._box.base is None else self._box.base / "data"

    @property
    def pid(self) -> int | None:
        """The sandbox's process id on the kernel's side (None when none runs)."""
        sandbox = self._box.sandbox
        return sandbox.proc.pid if sandbox is not None and sandbox.proc is not None else None

    def call(self, text: str, timeout_s: float) -> ToolOutcome:
        """Run the model's code (after ``approve``, if any); never raises for a failing
        call: the outcome's text says what happened."""
        code = _strip_fences(text)
        if self.tool.approve is not None:
            try:
                approved = bool(self.tool.approve(code))
            except Exception as exc:
                return ToolOutcome(text=f"The code was not run: asking the user failed ({exc}).",
                                   error=f"approval failed: {exc}")
            if not approved:
                return ToolOutcome(text=REFUSED_TEXT, error="refused by the user")
        with self._lock:
            if self._closed:
                return ToolOutcome(text="The python session is closed.", error="closed")
            try:
                sandbox = self._sandbox()
            except (SandboxError, OSError) as exc:
                return ToolOutcome(text=f"The python sandbox did not start: {exc}",
                                   error=f"sandbox did not start: {exc}")
            result = sandbox.run(code, timeout_s)
            if result.lost_state:
                self._box.sandbox = None
        return _outcome(result, self.tool.limits.max_chars)

    def _sandbox(self) -> Sandbox:
        box, tool = self._box, self.tool
        if box.sandbox is not None and box.sandbox.alive():
            return box.sandbox
        if box.base is None:
            box.base = Path(tempfile.mkdtemp(prefix=f"gptoss-python-{os.getpid()}-"))
            (box.base / "tmp").mkdir()
            _stage(tool.files, box.base / "data")
        sandbox = Sandbox(box.base, tool.limits, network=tool.allow_network,
                          bwrap=tool._bwrap, isolate_network=tool._isolate_network)
        sandbox.start()
        box.sandbox = sandbox
        return sandbox

    def close(self) -> None:
        """Stop the interpreter and delete its working folder (idempotent)."""
        with self._lock:
            self._closed = True
            self._finalizer()


# ---------------------------------------------------------------------- results
def _clip(text: str, limit: int, keep: str = "both") -> tuple[str, bool]:
    """``text`` cut to about ``limit`` characters (keeping its head, tail or both)."""
    if len(text) <= limit:
        return text, False
    limit = max(limit, 40)
    note = f"\n[... {len(text) - limit} characters cut ...]\n"
    if keep == "tail":
        return note.lstrip("\n") + text[-limit:], True
    if keep == "head":
        return text[:limit] + note.rstrip("\n"), True
    return text[: limit // 2] + note + text[-(limit - limit // 2):], True


def _outcome(result: RunResult, limit: int) -> ToolOutcome:
    """What the model reads: output, the last expression's repr, the traceback."""
    error, cut_error = _clip((result.error or "").rstrip("\n"), limit // 2, "tail")
    value, cut_value = _clip(result.value or "", limit // 4, "head")
    room = max(limit - len(error) - len(value), limit // 4)
    output, cut_output = _clip(result.output.rstrip("\n"), room)
    parts = [p for p in (output, value if result.value is not None else "", error) if p]
    if result.lost_state:
        parts.append(LOST_STATE_TEXT)
    text = "\n".join(parts) or NO_OUTPUT_TEXT
    truncated = cut_error or cut_value or cut_output or "bytes of output cut ...]" in output
    last = error.strip().splitlines()[-1] if error.strip() else None
    if last and last.startswith("Note: "):
        last = error.strip().splitlines()[-2]
    return ToolOutcome(text=text, value=None, error=last, truncated=truncated)


def _strip_fences(text: str) -> str:
    """The code, without a Markdown fence around it (the model sometimes adds one)."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1: -3].rstrip() + "\n"
    return text


# ---------------------------------------------------------------------- sandbox choice
def _choose_mode(allow_network: bool, allow_host_files: bool) -> tuple[str | None, bool]:
    """(bubblewrap to use or None, isolate the network without it); raises when the code
    cannot be isolated as asked."""
    bwrap = _sandbox.bwrap_path()
    why = ("bubblewrap (bwrap) is not installed" if bwrap is None
           else _sandbox.probe(bwrap, allow_network, False))
    if why is None:
        return bwrap, False
    if not allow_host_files:
        raise MissingDependencyError(
            f"The python tool cannot isolate code here ({why}): install bubblewrap "
            "(sudo apt-get install bubblewrap), or pass PythonTool(allow_host_files=True) to "
            "run code that can read your files.")
    isolate = not allow_network
    if isolate and _sandbox.probe(None, False, True) is not None:
        raise MissingDependencyError(
            "The python tool cannot cut code off the network here (no network namespace): "
            "install bubblewrap, or pass PythonTool(allow_network=True, allow_host_files=True).")
    warnings.warn(GptOssWarning(
        f"The python tool runs without bubblewrap ({why}): the model's code can read your "
        "files" + ("." if isolate else " and reach the network.")), stacklevel=3)
    return None, isolate


@functools.lru_cache(maxsize=1)
def _sweep_stale() -> None:
    """Delete working folders left behind by kernels that died (once per process)."""
    for folder in Path(tempfile.gettempdir()).glob("gptoss-python-*-*"):
        try:
            pid = int(folder.name.split("-")[2])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


# ---------------------------------------------------------------------- files
def _check_files(files: Mapping[str, Any]) -> dict[str, Any]:
    """The files to pass in, by their final names; raises for a bad name or source."""
    if not isinstance(files, Mapping):
        raise InvalidOptionError("PythonTool(files=...) takes a dict of name -> path, bytes "
                                 f"or DataFrame, not {type(files).__name__}")
    checked: dict[str, Any] = {}
    for name, source in files.items():
        parts = Path(name).parts if isinstance(name, str) else ()
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise InvalidOptionError(f"PythonTool(files=...): {name!r} is not a name inside "
                                     "the working folder (use a relative name like 'data.csv')")
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).exists():
                raise InvalidOptionError(f"PythonTool(files=...): {name!r} -> {source!s} does "
                                         "not exist")
        elif hasattr(source, "to_csv"):
            name = _frame_name(name)
        elif not isinstance(source, bytes):
            raise InvalidOptionError(f"PythonTool(files=...): {name!r} takes a path, bytes or "
                                     f"a DataFrame, not {type(source).__name__}")
        checked[name] = source
    return checked


def _has_parquet() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("pyarrow", "fastparquet"))


def _frame_name(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix == ".parquet" and not _has_parquet():
        raise InvalidOptionError(f"PythonTool(files=...): writing {name!r} as parquet needs "
                                 "pyarrow (pip install pyarrow), or name it .csv")
    if suffix in _FRAME_SUFFIXES:
        return name
    return name + (".parquet" if _has_parquet() else ".csv")


def _stage(files: Mapping[str, Any], folder: Path) -> None:
    """Copy (or write) the files into the working folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            if Path(source).is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(source, target)
        else:
            _write_frame(source, target)


def _write_frame(frame: Any, target: Path) -> None:
    if not hasattr(frame, "columns"):  # a Series
        frame = frame.to_frame()
    index = type(frame.index).__name__ != "RangeIndex"  # keep an index that means something
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(target, index=index)
    elif suffix == ".json":
        frame.to_json(target, orient="columns" if index else "records")
    else:
        frame.to_csv(target, index=index)


def _digest(source: Any) -> str:
    """A short content hash of one file source (for cache keys)."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if item.is_file():
                digest.update(str(item.relative_to(path) if item != path else "").encode())
                digest.update(item.read_bytes())
    else:
        import pandas as pd

        digest.update(pd.util.hash_pandas_object(source, index=True).to_numpy().tobytes())
        digest.update(repr(list(getattr(source, "columns", [source.name]))).encode())
    return digest.hexdigest()[:16]
