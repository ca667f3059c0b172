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

import copy
import functools
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
from ._files import check_files, digest, stage
from ._sandbox import Limits, RunResult, Sandbox
from .base import ToolOutcome

#: asked before each piece of code runs: True runs it, False refuses it
Approver = Callable[[str], bool]
REFUSED_TEXT = "The user refused to run this code."
LOST_STATE_TEXT = ("The interpreter was restarted: variables from earlier calls are gone; "
                   "files in the working folder are kept.")
NO_OUTPUT_TEXT = "[no output: print() what you want to see, or end the code with an expression]"


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
        self.files = check_files(files or {})
        self.approve = approve
        self.allow_network = bool(allow_network)
        self.allow_host_files = bool(allow_host_files)
        self.limits = Limits(int(memory_mb), float(cpu_s), int(max_processes),
                             int(max_file_mb), int(max_output_chars))
        self._bwrap, self._isolate_network = _choose_mode(self.allow_network,
                                                          bool(allow_host_files))
        _sweep_stale()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled on another machine (a Ray replica): isolate the code as that
        machine allows, or refuse there as :meth:`__init__` would."""
        self.__dict__.update(state)
        self._bwrap, self._isolate_network = _choose_mode(self.allow_network,
                                                          self.allow_host_files)

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
                "files": {name: digest(src) for name, src in sorted(self.files.items())}}

    def with_approver(self, approve: Approver | None) -> PythonTool:
        """A copy of this tool that asks ``approve`` before each run (``--approve``)."""
        if approve is not None and not callable(approve):
            raise InvalidOptionError("with_approver takes a function of the code that "
                                     f"returns True or False, not {approve!r}")
        tool = copy.copy(self)
        tool.approve = approve
        return tool

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
        self.lost = False  # the interpreter died between calls (its state is gone)

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
            except Exception as exc:  # bubblewrap failed, a file could not be copied, ...
                return ToolOutcome(text=f"The python sandbox did not start: {exc}",
                                   error=f"sandbox did not start: {exc}")
            result = sandbox.run(code, timeout_s)
            if self._closed:  # closed while the code ran: the process was killed
                self._finalizer()
                return ToolOutcome(text="The python session was closed while the code ran.",
                                   error="closed")
            if self._box.lost and not result.lost_state:
                note = LOST_STATE_TEXT.replace("was restarted", "had died and was restarted")
                result.output = note + "\n" + result.output
            self._box.lost = False
            if result.lost_state:
                self._box.sandbox = None
        return _outcome(result, self.tool.limits.max_chars)

    def _sandbox(self) -> Sandbox:
        box, tool = self._box, self.tool
        if box.sandbox is not None:
            if box.sandbox.alive():
                return box.sandbox
            box.sandbox.kill()  # it died between calls: release its pipes, tell the model
            box.sandbox, box.lost = None, True
        if box.base is None:
            base = Path(tempfile.mkdtemp(prefix=f"gptoss-python-{os.getpid()}-"))
            try:
                (base / "tmp").mkdir()
                stage(tool.files, base / "data")
            except BaseException:
                shutil.rmtree(base, ignore_errors=True)
                raise
            box.base = base
        sandbox = Sandbox(box.base, tool.limits, network=tool.allow_network,
                          bwrap=tool._bwrap, isolate_network=tool._isolate_network)
        sandbox.start()
        box.sandbox = sandbox
        return sandbox

    def close(self) -> None:
        """Stop the interpreter and delete its working folder (idempotent). A call in
        progress in another thread is cut short; that thread then cleans up."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._finalizer()
            finally:
                self._lock.release()
        elif self._box.sandbox is not None:
            self._box.sandbox.terminate()


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
    body = result.output.rstrip("\n")
    output, cut_output = _clip(body, room)
    if not cut_output:  # what was printed, as printed: its final newline(s) too
        output += result.output[len(body):]
    parts = [p for p in (output, value if result.value is not None else "", error) if p]
    if result.lost_state:
        parts.append(LOST_STATE_TEXT)
    text = ""
    for part in parts:  # one part per line
        text += ("\n" if text and not text.endswith("\n") else "") + part
    text = text or NO_OUTPUT_TEXT
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
