"""The scratch set-up every benchmark shares: vLLM quiet, and a fresh temporary folder for
vLLM's IPC sockets and for the package's result cache, so no run reads another's cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def scratch(prefix: str) -> str:
    """Point TMPDIR and (unless set) the result cache at a new folder, removed when the
    process exits; return it."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    tmp = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # gigabytes: a run leaves none
    os.environ["TMPDIR"] = tmp  # vLLM leaves IPC sockets in the temporary folder
    os.environ.setdefault("GPTOSS_MAGICS_CACHE", os.path.join(tmp, "cache"))
    tempfile.tempdir = None  # the next mkdtemp reads TMPDIR again
    return tmp
