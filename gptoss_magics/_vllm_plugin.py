"""vLLM general plugin, run by vLLM in every engine process (entry point
``vllm.general_plugins``).

On CPUs with AMX (Sapphire Rapids and newer), vLLM's bf16 CPU attention kernel
executes AMX instructions, and Linux kills a process that uses AMX without first
asking for the permission (``arch_prctl(ARCH_REQ_XCOMP_PERM)``): a SIGILL that
takes the kernel down. oneDNN asks for it only on some code paths, so a small
first request can crash. Asking here, before any kernel runs, prevents it.
"""

from __future__ import annotations


def register() -> None:
    """Request AMX tile permission when the CPU has AMX; otherwise do nothing."""
    try:
        import torch
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return
    cpu = getattr(torch, "cpu", None)
    is_supported = getattr(cpu, "_is_amx_tile_supported", None)
    init_amx = getattr(getattr(torch._C, "_cpu", None), "_init_amx", None)
    if is_supported is not None and init_amx is not None and is_supported():
        init_amx()
