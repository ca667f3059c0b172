"""The python tool's interpreter, as it runs inside the sandbox (one per conversation).

Started by :mod:`gptoss_magics.tools._sandbox` as ``python -I -c <this file> CONFIG``: it
imports nothing from gptoss_magics. It sets its own limits, then reads one JSON command per
line from one pipe, runs the code in a namespace that lives as long as the process, and
writes one JSON result per line to another pipe. What the code prints goes to fds 1 and 2,
a file the parent reads after each call.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import errno
import json
import linecache
import math
import os
import resource
import signal
import socket
import sys
import time
import traceback
from types import FrameType, TracebackType
from typing import Any

_MB = 1 << 20
_NO_NETWORK = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EADDRNOTAVAIL}


class _Timeout(BaseException):
    """Raised in the code when the call's wall-clock time is up."""


class _CpuLimit(BaseException):
    """Raised in the code when the call's CPU time is used up."""


class _Stop:
    """Whether the limit signals may interrupt (only while the model's code runs)."""

    armed = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _Stop.armed:
        raise _Timeout


def _on_cpu(signum: int, frame: FrameType | None) -> None:
    if _Stop.armed:
        raise _CpuLimit


def isolate_network() -> None:
    """A new, empty network namespace for this process (used without bubblewrap)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newuser, clone_newnet = 0x10000000, 0x40000000
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(clone_newnet if uid == 0 else clone_newuser | clone_newnet) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    if uid != 0:  # map ourselves, or files we create would have no owner
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)


def _set_limits(cfg: dict[str, Any]) -> None:
    if cfg.get("uid") is not None:  # started as root: become a user of our own
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    for limit, value in ((resource.RLIMIT_AS, cfg["memory_mb"] * _MB),
                         (resource.RLIMIT_FSIZE, cfg["file_mb"] * _MB),
                         (resource.RLIMIT_NPROC, cfg["processes"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    total = int(cfg["cpu_total_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (total, total + 2))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGXCPU, _on_cpu)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG


def _arm(timeout_s: float, cpu_s: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    used = usage.ru_utime + usage.ru_stime
    soft = max(math.floor(used) + 1, round(used + cpu_s))  # whole seconds, about cpu_s more
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard), hard))
    _Stop.armed = True
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.001))


def _disarm() -> None:
    _Stop.armed = False
    signal.setitimer(signal.ITIMER_REAL, 0)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def _note(exc: BaseException, cfg: dict[str, Any]) -> str | None:
    """One line telling the model which sandbox limit it ran into, when it did."""
    for err in _chain(exc):
        if isinstance(err, MemoryError):
            return f"the sandbox's memory limit is {cfg['memory_mb']} MB."
        if isinstance(err, socket.gaierror) or (
                isinstance(err, OSError) and err.errno in _NO_NETWORK):
            return None if cfg["network"] else "the sandbox has no network access."
        if isinstance(err, OSError) and err.errno == errno.EFBIG:
            return f"files and output are limited to {cfg['file_mb']} MB each."
        if (isinstance(err, OSError) and err.errno == errno.EAGAIN) or (
                isinstance(err, RuntimeError) and "thread" in str(err)):
            return (f"the sandbox allows {cfg['processes']} processes and threads; "
                    "processes the code starts are stopped when each call ends.")
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)) or (
                isinstance(err, OSError) and err.errno == errno.EROFS):
            path = str(getattr(err, "filename", "") or "")
            if path.startswith("/") and not path.startswith(cfg["workdir"] + "/"):
                return (f"the sandbox sees only its working folder ({cfg['workdir']}), a "
                        "private /tmp and the Python installation (read-only).")
    return None


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<python-"):
        tb = tb.tb_next
    return tb


def _describe(exc: BaseException, cfg: dict[str, Any], timeout_s: float, cpu_s: float) -> str:
    """The traceback text the model sees (this server's own frames left out)."""
    tb = _user_frames(exc.__traceback__)
    if isinstance(exc, (_Timeout, _CpuLimit, KeyboardInterrupt)):
        if isinstance(exc, _Timeout):
            last = (f"TimeoutError: the code ran longer than {timeout_s:g} s and was stopped; "
                    "variables from earlier lines are kept.")
        elif isinstance(exc, _CpuLimit):
            last = f"TimeoutError: the code used more than {cpu_s:g} s of CPU time and was stopped."
        else:
            last = "KeyboardInterrupt: the code was interrupted."
        frames = [f for f in traceback.extract_tb(tb) if f.filename != "<string>"]
        return ("Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
                + last + "\n")
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    note = _note(exc, cfg)
    return text + (f"Note: {note}\n" if note else "")


def _stop_strays(cfg: dict[str, Any]) -> None:
    """Stop every process the code started (the sandbox's pid namespace has only us and
    its init besides them), and wait until they are gone (up to 5 s)."""
    if not cfg["pidns"]:
        return
    me = os.getpid()
    for attempt in range(500):
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not others:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # all but ourselves and pid 1 (which reaps them)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if attempt:
            time.sleep(0.01)


def _split(code: str, name: str) -> tuple[ast.Module, ast.Expression | None]:
    tree = ast.parse(code, name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        tree.body.pop()
    return tree, last


def run(code: str, ns: dict[str, Any], name: str, req: dict[str, Any],
        cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one piece of code; the last expression's repr comes back, like a notebook cell."""
    server = os.getpid()
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    result: dict[str, Any] = {}
    try:
        tree, last = _split(code, name)
        _arm(req["timeout_s"], req["cpu_s"])
        exec(compile(tree, name, "exec"), ns)
        value = None if last is None else eval(compile(last, name, "eval"), ns)
        if value is not None:
            ns["_"] = value
            result["repr"] = repr(value)[: cfg["max_chars"] + 1]
    except SystemExit as exc:
        result["error"] = f"SystemExit: {exc.code}\n(the interpreter keeps running)\n"
    except BaseException as exc:
        _disarm()
        result["error"] = _describe(exc, cfg, req["timeout_s"], req["cpu_s"])[-cfg["max_chars"]:]
        result["kind"] = type(exc).__name__.strip("_")
    finally:
        _disarm()
        if os.getpid() != server:  # a fork of this server finished the code: leave quietly
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    _stop_strays(cfg)
    return result


def serve(cfg: dict[str, Any]) -> None:
    """Answer commands until the parent closes the command pipe."""
    commands = os.fdopen(cfg["cmd_fd"], "rb")
    results = os.fdopen(cfg["res_fd"], "wb", buffering=0)
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    results.write(json.dumps({"ready": True}).encode() + b"\n")
    for count, line in enumerate(commands, 1):
        req = json.loads(line)
        try:
            result = run(req["code"], ns, f"<python-{count}>", req, cfg)
        except (_Timeout, _CpuLimit):  # the signal came just as the code ended
            result = {"error": "TimeoutError: the code was stopped at its time limit.\n",
                      "kind": "Timeout"}
        results.write(json.dumps(result).encode() + b"\n")


def main() -> None:
    """Set up (network, user, limits, folder), then serve."""
    cfg = json.loads(sys.argv[1])
    if cfg["die_with_parent"]:  # plain mode; bubblewrap does this itself
        import ctypes

        with contextlib.suppress(AttributeError, OSError):  # Linux only
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if cfg["isolate_network"]:
        isolate_network()
    # when memory runs out, the OS kills us (and what we start) first
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as handle:
        handle.write("1000")
    _set_limits(cfg)
    os.chdir(cfg["workdir"])
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.path.insert(0, cfg["workdir"])
    serve(cfg)


if __name__ == "__main__":
    main()
