"""How far a load has got, read from outside vLLM: which weight shards this process (and
its children, in multiprocess mode) has open or mapped, and how much of each it has read.

vLLM reads a safetensors shard through a memory map (``safe_open``), one shard after
another; the resident part of that mapping (``/proc/PID/smaps``) is what has been read, and
a shard read with ``read()`` instead shows its offset in ``/proc/PID/fdinfo``. Nothing here
touches vLLM: where ``/proc`` is missing (not Linux), the progress is the elapsed time only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: weight file suffixes, in the order vLLM prefers them
_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass(frozen=True)
class LoadProgress:
    """Where a load stands (for a progress display)."""

    elapsed_s: float
    #: "starting" (vLLM imports and configures), "weights", "engine" (KV cache,
    #: warm-up), "ready"
    stage: str
    shards_done: int
    shards_total: int
    bytes_done: int
    bytes_total: int


def _natural(path: Path) -> list[object]:
    """Sort key: numbers by value (vLLM reads shards in this order)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def weight_files(folder: Path) -> list[Path]:
    """The weight shards vLLM reads from ``folder``, in reading order: those the
    safetensors index names, else every top-level file of the first suffix found
    (``original/`` and ``metal/`` subfolders are not read)."""
    index = folder / "model.safetensors.index.json"
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        names = set(json.loads(index.read_text())["weight_map"].values())
        files = [folder / n for n in names if (folder / n).is_file()]
        if files:
            return sorted(files, key=_natural)
    for suffix in _SUFFIXES:
        files = [p for p in folder.glob(f"*{suffix}") if p.is_file()]
        if files:
            return sorted(files, key=_natural)
    return []


def _path_of(line: str) -> str:
    """The file name of a ``/proc/PID/maps`` line (may hold spaces), or ``""``."""
    fields = line.rstrip("\n").split(maxsplit=5)
    return fields[5] if len(fields) == 6 else ""


def _pids() -> list[int]:
    pids = [os.getpid()]
    with contextlib.suppress(Exception):
        import psutil

        pids += [c.pid for c in psutil.Process().children(recursive=True)]
    return pids


def _mapped(pid: int, wanted: set[str]) -> dict[str, int]:
    """Resident bytes of each wanted file's memory maps in process ``pid``."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            if not any(_path_of(line) in wanted for line in fh):
                return found
        current = None
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
                    path = _path_of(line)
                    current = path if path in wanted else None
                    if current is not None:
                        found.setdefault(current, 0)
                elif current is not None and line.startswith("Rss:"):
                    found[current] += int(line.split()[1]) * 1024
    except OSError:
        pass
    return found


def _read_offsets(pid: int, wanted: set[str]) -> dict[str, int]:
    """Read offset of each wanted file that process ``pid`` has open."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError, ValueError):
                path = os.readlink(f"/proc/{pid}/fd/{fd}")
                if path in wanted:
                    with open(f"/proc/{pid}/fdinfo/{fd}", encoding="utf-8") as fh:
                        pos = int(fh.readline().split()[1])
                    found[path] = max(found.get(path, 0), pos)
    return found


class LoadWatch:
    """Polls how much of a model folder's weights the process has read."""

    def __init__(self, folder: str | Path) -> None:
        self.t0 = time.monotonic()
        files = weight_files(Path(folder)) if Path(folder).is_dir() else []
        self.sizes = {}
        for f in files:
            with contextlib.suppress(OSError):
                self.sizes[str(f.resolve())] = f.stat().st_size
        self._seen: set[str] = set()
        self._done: set[str] = set()
        self.enabled = bool(self.sizes) and os.path.isdir("/proc/self")

    def poll(self, ready: bool = False) -> LoadProgress:
        """The progress now (``ready``: the engine has finished starting)."""
        elapsed = time.monotonic() - self.t0
        total = sum(self.sizes.values())
        if ready:
            return LoadProgress(elapsed, "ready", len(self.sizes), len(self.sizes), total,
                                total)
        active: dict[str, int] = {}
        if self.enabled:
            wanted = set(self.sizes)
            for pid in _pids():
                for reader in (_mapped, _read_offsets):
                    for path, n in reader(pid, wanted).items():
                        active[path] = max(active.get(path, 0), n)
        order = list(self.sizes)
        if active:  # shards are read in order: those before the current one are done
            first = min(order.index(p) for p in active)
            self._seen |= set(order[:first])
        self._done |= self._seen - set(active)
        self._seen |= set(active)
        done = sum(self.sizes[p] for p in self._done)
        done += sum(min(n, self.sizes[p]) for p, n in active.items() if p not in self._done)
        if self._done and len(self._done) == len(self.sizes):
            stage = "engine"
        else:
            stage = "weights" if self._seen else "starting"
        return LoadProgress(elapsed, stage, len(self._done), len(self.sizes), done, total)


def report(on_progress: Callable[[LoadProgress], None], progress: LoadProgress) -> None:
    """Call a progress callback; a display that fails must not fail the load."""
    with contextlib.suppress(Exception):
        on_progress(progress)
