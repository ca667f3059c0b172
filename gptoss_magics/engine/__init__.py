"""The engine layer: token ids in, token ids out. The only package that imports vLLM
or torch, and only when an engine starts (importing it imports neither).

* :class:`EngineProtocol` (:mod:`.types`): what the rest of the package needs from an
  engine, with :class:`Sampling`, :class:`Completion`, :class:`Event` and :class:`Job`;
* :class:`VllmEngine` (alias ``Engine``, :mod:`.vllm`): the in-process vLLM engine;
* :class:`ScriptedEngine` (:mod:`.scripted`): a deterministic engine for fast tests;
* :mod:`.memory`: memory probes; :mod:`._compat`: every vLLM internal relied on;
  :mod:`._plugin` and :mod:`._reasoning`: the vLLM plugin and reasoning parser.
"""

from __future__ import annotations

from ._compat import vllm_available
from .job import Job
from .memory import MemoryReport, gpu_memory_used, process_rss
from .scripted import ScriptedEngine, harmony_completion
from .types import Completion, EngineProtocol, Event, Sampling
from .vllm import Engine, VllmEngine

__all__ = [
    "Completion",
    "Engine",
    "EngineProtocol",
    "Event",
    "Job",
    "MemoryReport",
    "Sampling",
    "ScriptedEngine",
    "VllmEngine",
    "gpu_memory_used",
    "harmony_completion",
    "process_rss",
    "vllm_available",
]
