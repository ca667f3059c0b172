"""Memory probes: this process's resident memory, GPU memory, giving freed heap pages back
to the operating system, and pausing the garbage collector. Never imports torch."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


def process_rss() -> int:
    """Resident memory of this process, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def gpu_memory_used() -> int | None:
    """Bytes in use on GPU 0 (all processes), or None without CUDA.

    Only looks when torch is already imported, so it never loads torch itself.
    """
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


@contextlib.contextmanager
def automatic_gc_paused() -> Iterator[None]:
    """No automatic garbage collection inside the block (explicit ``gc.collect()`` calls
    still run); the previous setting comes back after it.

    Importing vLLM creates some 700,000 objects, and the collector, triggered by the
    allocations, walks the growing heap again and again: 1.2-1.5 s of the 6.7-7.1 s of CPU
    that ``import vllm.entrypoints.llm`` takes on the 2-core CI machine (5.2-5.8 s
    paused). Imports and engine start-up make almost no cyclic garbage; what they make is
    collected at the next collection after the block.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def release_heap() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
