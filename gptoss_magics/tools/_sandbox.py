"""The sandboxed process behind the python tool: how it is started, talked to and stopped.

With bubblewrap (``bwrap``), the interpreter runs in new user/pid/network/ipc/uts
namespaces and a new mount namespace that shows only the Python installation and system
libraries (read-only), the private working folder (``/mnt/data``) and a private ``/tmp``.
When the kernel runs as root, bubblewrap sets up the namespaces as root and the interpreter
then drops to an unprivileged user id of its own (so that the process limit applies).
Without bubblewrap ("plain" mode, only on the user's explicit request) the interpreter is
an ordinary child process with resource limits and, where the OS allows, a network
namespace of its own.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: where the working folder appears inside the bubblewrap sandbox
WORKDIR = "/mnt/data"
_CHILD = Path(__file__).with_name("_sandbox_child.py")
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
        "/etc/alternatives")
_UIDS = itertools.count((os.getpid() % 10_000) * 100_000)


@dataclass(frozen=True)
class Limits:
    """What one sandboxed interpreter may use."""

    memory_mb: int = 2048
    cpu_s: float = 60.0  # per call; the whole conversation gets ten times as much
    processes: int = 64  # processes and threads
    file_mb: int = 256  # each file it writes, and its printed output
    max_chars: int = 10_000  # text returned to the model per call


@dataclass
class RunResult:
    """What one call produced, before it is written up for the model."""

    output: str = ""
    output_size: int = 0  # bytes printed in all (output may hold only part of them)
    value: str | None = None  # repr of the last expression
    error: str | None = None  # traceback text
    kind: str | None = None  # exception name, "Timeout", "Killed", ...
    lost_state: bool = False  # the process had to be stopped


class SandboxError(Exception):
    """The sandbox could not be started (internal; the tool turns it into text)."""


def bwrap_path() -> str | None:
    """The bubblewrap executable, if installed."""
    return shutil.which("bwrap")


def _python_roots() -> list[str]:
    """Folders that make up the kernel's Python (the sandbox runs the same interpreter)."""
    exe = Path(os.path.realpath(sys.executable)).parent.parent
    found: list[str] = []
    for root in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                        str(exe)}, key=len):
        real = os.path.realpath(root)
        for path in {root, real}:
            if path != "/" and not any(path == r or path.startswith(r + "/")
                                       for r in ["/usr", *found]):
                found.append(path)
    return found


def _parents(path: str, made: set[str]) -> list[str]:
    """``--dir`` arguments (world-readable) for the folders above ``path``."""
    args: list[str] = []
    parts = Path(path).parts[1:-1]
    for i in range(len(parts)):
        folder = "/" + "/".join(parts[: i + 1])
        if folder not in made:
            made.add(folder)
            args += ["--perms", "0755", "--dir", folder]
    return args


def _bwrap_argv(bwrap: str, base: Path, network: bool, as_root: bool) -> list[str]:
    argv = [bwrap, "--die-with-parent", "--new-session"]
    if as_root:  # no user namespace: the child drops to its own uid itself
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
                 "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        argv += [] if network else ["--unshare-net"]
    else:
        argv += ["--unshare-all"] + (["--share-net"] if network else [])
    argv += ["--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + top
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    # the private /tmp first: a Python installed under /tmp (a venv in a clone there) is
    # then bound on top of it instead of being hidden by it
    argv += ["--proc", "/proc", "--dev", "/dev", "--bind", str(base / "tmp"), "/tmp"]
    made: set[str] = {"/tmp"}
    for root in _python_roots():
        argv += [*_parents(root, made), "--ro-bind", root, root]
    argv += _parents("/etc/x", made)
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    argv += ["--perms", "0755", "--dir", "/mnt", "--bind", str(base / "data"), WORKDIR,
             "--chdir", WORKDIR, "--clearenv"]
    for key, value in _environment(WORKDIR).items():
        argv += ["--setenv", key, value]
    return argv


def _environment(workdir: str) -> dict[str, str]:
    threads = str(min(4, os.cpu_count() or 1))
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp" if workdir == WORKDIR else workdir, "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
            "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp" if workdir == WORKDIR else workdir,
            "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads}


class _Spawner:
    """Starts sandboxes from one long-lived daemon thread.

    ``--die-with-parent`` (and ``PR_SET_PDEATHSIG`` in plain mode) fires when the *thread*
    that started the process ends, so no sandbox is started from a short-lived worker
    thread: this one lives as long as the kernel, and its death with the kernel's kills
    every sandbox.
    """

    _jobs: queue.Queue[tuple[dict[str, Any], queue.Queue[Any]]] = queue.Queue()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def popen(cls, **kwargs: Any) -> subprocess.Popen[bytes]:
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._serve, name="gptoss-sandbox-spawner",
                                               daemon=True)
                cls._thread.start()
        reply: queue.Queue[Any] = queue.Queue()
        cls._jobs.put((kwargs, reply))
        answer = reply.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @classmethod
    def _serve(cls) -> None:
        while True:
            kwargs, reply = cls._jobs.get()
            try:
                reply.put(subprocess.Popen(**kwargs))
            except BaseException as exc:  # handed back to the caller
                reply.put(exc)


class Sandbox:
    """One interpreter in its sandbox. Not thread-safe: one conversation uses it."""

    def __init__(self, base: Path, limits: Limits, *, network: bool, bwrap: str | None,
                 isolate_network: bool = False) -> None:
        self.base, self.limits, self.network = base, limits, network
        self.bwrap, self.isolate_network = bwrap, isolate_network
        self.as_root = bwrap is not None and os.geteuid() == 0
        self.uid = 1_900_000_000 + next(_UIDS) % 200_000_000 if self.as_root else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._cmd = self._res = -1
        self._pending = b""
        self._timed_out = False

    @property
    def workdir(self) -> str:
        return WORKDIR if self.bwrap else str(self.base / "data")

    @property
    def spool(self) -> Path:
        return self.base / "output.log"

    def _config(self, cmd_fd: int, res_fd: int) -> dict[str, Any]:
        lim = self.limits
        return {"cmd_fd": cmd_fd, "res_fd": res_fd, "uid": self.uid, "workdir": self.workdir,
                "memory_mb": lim.memory_mb, "file_mb": lim.file_mb,
                "processes": lim.processes, "cpu_total_s": lim.cpu_s * 10,
                "max_chars": lim.max_chars, "network": self.network,
                "pidns": self.bwrap is not None, "isolate_network": self.isolate_network,
                "die_with_parent": self.bwrap is None}

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the interpreter and wait until it is ready (raises SandboxError)."""
        if self.as_root and self.uid is not None:
            for sub in ("data", "tmp"):
                for folder, _, names in os.walk(self.base / sub):
                    for name in [".", *names]:
                        os.chown(os.path.join(folder, name), self.uid, self.uid)
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        config = json.dumps(self._config(cmd_r, res_w))
        python = [sys.executable, "-I", "-c", _CHILD.read_text(), config]
        spool = open(self.spool, "ab")  # noqa: SIM115 (the child keeps it)
        try:
            if self.bwrap:
                argv = _bwrap_argv(self.bwrap, self.base, self.network, self.as_root) + python
                self.proc = _Spawner.popen(args=argv, stdin=subprocess.DEVNULL, stdout=spool,
                                           stderr=subprocess.STDOUT, pass_fds=(cmd_r, res_w))
            else:
                self.proc = _Spawner.popen(args=python, stdin=subprocess.DEVNULL, stdout=spool,
                                           stderr=subprocess.STDOUT, pass_fds=(cmd_r, res_w),
                                           cwd=self.workdir, env=_environment(self.workdir),
                                           start_new_session=True)
        finally:
            spool.close()
            os.close(cmd_r)
            os.close(res_w)
        self._cmd, self._res = cmd_w, res_r
        if self._read(time.monotonic() + timeout_s) is None:
            detail = self.read_output(2000)[0].strip().splitlines()
            self.kill()
            raise SandboxError(detail[0] if detail else "the sandbox process exited")

    def run(self, code: str, timeout_s: float) -> RunResult:
        """Run ``code``; stop the process if it outlives ``timeout_s`` by more than 2 s."""
        os.truncate(self.spool, 0)
        # the CPU limit sits a second past the wall-clock one, so that a single busy
        # thread is stopped by the clock (its variables kept); more threads or processes
        # burning CPU meet the CPU limit first
        request = {"code": code, "timeout_s": timeout_s,
                   "cpu_s": min(self.limits.cpu_s, max(timeout_s, 1.0) + 1.0)}
        with contextlib.suppress(OSError):  # when the process is gone, _read says so
            os.write(self._cmd, json.dumps(request).encode() + b"\n")
        answer = self._read(time.monotonic() + timeout_s + 2.0)
        output, size = self.read_output(self.limits.max_chars)
        if answer is not None:
            return RunResult(output, size, answer.get("repr"), answer.get("error"),
                             answer.get("kind"))
        status = None
        if self.proc is not None and not self._timed_out:
            with contextlib.suppress(subprocess.TimeoutExpired):  # it closed its pipe: ending
                status = self.proc.wait(timeout=5)
        alive = self._timed_out
        self.kill()
        if alive:
            why = (f"TimeoutError: the code ran longer than {timeout_s:g} s and did not stop "
                   "when interrupted, so the Python process was stopped.")
        else:
            why = _death(status)
        return RunResult(output, size, None, why + "\n", "Killed", lost_state=True)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the child, or None (it died, or the deadline passed)."""
        self._timed_out = False
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not select.select([self._res], [], [], left)[0]:
                    self._timed_out = True
                    return None
                chunk = os.read(self._res, 1 << 16)
            except (OSError, ValueError):  # the pipe was closed under us
                return None
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def read_output(self, max_chars: int) -> tuple[str, int]:
        """What the code printed (its head and tail when it is long) and its size in bytes."""
        try:
            size = self.spool.stat().st_size
            with open(self.spool, "rb") as handle:
                if size <= max_chars * 4:
                    return handle.read().decode("utf-8", "replace"), size
                head = handle.read(max_chars * 2).decode("utf-8", "replace")
                handle.seek(size - max_chars * 2)
                tail = handle.read().decode("utf-8", "replace")
        except OSError:
            return "", 0
        return f"{head}\n[... {size - 4 * max_chars} bytes of output cut ...]\n{tail}", size

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Kill the interpreter and everything it started, without waiting (any thread
        may call this; a call in progress then ends at once)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.bwrap:
                proc.kill()  # --die-with-parent takes the whole pid namespace down with it
            else:
                os.killpg(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Stop the interpreter, wait for it and release its pipes (idempotent)."""
        self.terminate()
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.wait()
        for fd in (self._cmd, self._res):
            if fd >= 0:
                os.close(fd)
        self._cmd = self._res = -1


def _death(status: int | None) -> str:
    """Why the interpreter ended, from its (or bubblewrap's) exit status."""
    signum = -status if status is not None and status < 0 else (
        status - 128 if status is not None and status > 128 else None)
    if signum in (signal.SIGKILL, signal.SIGXCPU):
        return ("The Python process was killed: it ran past its CPU-time limit, or the "
                "system ran out of memory.")
    if signum:
        return f"The Python process died from signal {signum}."
    if status is None:
        return "The Python process stopped answering, so it was stopped."
    return f"The Python process exited (status {status}): the code ended it."


@functools.lru_cache(maxsize=8)
def probe(bwrap: str | None, network: bool, isolate_network: bool) -> str | None:
    """Why a sandbox of this kind cannot start here (None: it can). Cached per process."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix=f"gptoss-python-{os.getpid()}-probe-"))
    try:
        (base / "data").mkdir()
        (base / "tmp").mkdir()
        box = Sandbox(base, Limits(), network=network, bwrap=bwrap,
                      isolate_network=isolate_network)
        box.start(timeout_s=30)
        box.kill()
        return None
    except (SandboxError, OSError) as exc:
        return str(exc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
