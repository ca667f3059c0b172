"""The load progress line: shards and bytes read, and the elapsed time, while vLLM loads.

Shown only where someone watches: in a Jupyter kernel (one display, updated in place) or on
a terminal (one ``\\r`` line on stderr). Scripts, pipes and test runs get nothing. The line
appears once a load has taken :data:`SHOW_AFTER_S` (a warm reload of the tiny model never
shows it) and is cleared when the load ends, success or not: the status that follows says
the rest. ``GPTOSS_MAGICS_PROGRESS=0`` turns it off, ``=1`` forces it on.
"""

from __future__ import annotations

import html
import os
import sys
from typing import Any

from .engine.load_watch import LoadProgress

#: Seconds a load runs before the line appears.
SHOW_AFTER_S = 1.0
PROGRESS_ENV = "GPTOSS_MAGICS_PROGRESS"
_STAGES = {"starting": "starting vLLM", "weights": "reading weights",
           "engine": "preparing the engine (KV cache, warm-up)", "ready": "ready"}


def interactive() -> bool:
    """True in a Jupyter kernel or on a terminal (``GPTOSS_MAGICS_PROGRESS`` overrides)."""
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    shell = _shell()
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _shell() -> Any:
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _clock(s: float) -> str:
    m, sec = divmod(int(s), 60)
    return f"{m}:{sec:02d}" if m else f"{s:.0f} s"


def describe(label: str, p: LoadProgress) -> str:
    """One line, e.g. ``Loading gpt-oss-20b: reading weights, shard 2/3, 8.1 GiB of
    12.8 GiB (63%), 0:41``."""
    parts = [_STAGES.get(p.stage, p.stage)]
    if p.stage == "weights" and p.shards_total:
        parts.append(f"shard {min(p.shards_done + 1, p.shards_total)}/{p.shards_total}")
        if p.bytes_total:
            parts.append(f"{_size(p.bytes_done)} of {_size(p.bytes_total)} "
                         f"({100 * p.bytes_done / p.bytes_total:.0f}%)")
    elif p.shards_total and p.stage != "starting":
        parts.append(f"{p.shards_total} shard{'s' if p.shards_total > 1 else ''}, "
                     f"{_size(p.bytes_total)} read")
    return f"Loading {label}: {', '.join(parts)}, {_clock(p.elapsed_s)}"


class LoadDisplay:
    """Receives :class:`LoadProgress` reports and keeps one line up to date."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = interactive() if enabled is None else enabled
        self.lines: list[str] = []  # every line shown (for tests and logs)
        self._handle: Any = None
        self._tty = False

    def __call__(self, progress: LoadProgress) -> None:
        if not self.enabled or progress.elapsed_s < SHOW_AFTER_S \
                or progress.stage == "ready":
            return
        line = describe(self.label, progress)
        self.lines.append(line)
        self._show(line)

    def _show(self, line: str) -> None:
        if self._handle is None and not self._tty:
            shell = _shell()
            if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
                from IPython.display import display

                self._handle = display(self._bundle(line), raw=True, display_id=True)
                return
            self._tty = True
        if self._handle is not None:
            self._handle.update(self._bundle(line), raw=True)
        else:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()

    @staticmethod
    def _bundle(line: str) -> dict[str, str]:
        if not line:
            return {"text/plain": "", "text/html": ""}
        return {"text/plain": line,
                "text/html": f"<span style='color:#666'>{html.escape(line)}</span>"}

    def close(self) -> None:
        """Clear the line (the load is over)."""
        if self._handle is not None:
            self._handle.update(self._bundle(""), raw=True)
        elif self._tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self._handle, self._tty = None, False
