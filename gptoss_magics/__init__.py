"""gptoss-magics: OpenAI's gpt-oss in-process with vLLM, from Jupyter.

    %load_ext gptoss_magics
    %gptoss_load tiny                      # or a local weights folder

or from Python::

    import gptoss_magics as gm
    gm.load("/models/gpt-oss-20b")
    print(gm.complete("Summarise ...", effort="low"))
    gm.unload()

Importing this package imports neither vLLM nor torch: the engine starts on
``load()``.
"""

from __future__ import annotations

from typing import Any

from .cluster import RayBackend
from .errors import (
    CancelledError,
    EngineAlreadyLoadedError,
    EngineDeadError,
    EngineLoadError,
    EngineNotLoadedError,
    GptOssError,
    GptOssWarning,
    InvalidOptionError,
    MissingDependencyError,
    ModelFolderError,
    ModelNotFoundError,
    RequestError,
    RowError,
    StorageError,
    TemplateError,
    UnsupportedHardwareError,
)
from .evaluation import Cascade, EvaluationResult, evaluate, reproduce
from .fit import FitPlan, plan_fit
from .frame import MapJob, MapPlan, last_result  # registers df.gptoss and series.gptoss
from .harmony import Turn
from .manifest import ManifestCheck, check_manifest, write_manifest
from .model_check import ModelCheck, check_model
from .options import UNSET
from .prompting import Reproduction, complete, complete_batch, stream
from .reply import Reply
from .session import is_loaded, load, status, unload
from .settings import GptOssSettings, settings
from .tools import FunctionTool, PythonTool, ToolCall, function_tool

try:
    from importlib.metadata import version as _version

    __version__ = _version("gptoss-magics")
except Exception:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "UNSET",
    "CancelledError",
    "Cascade",
    "EngineAlreadyLoadedError",
    "EngineDeadError",
    "EngineLoadError",
    "EngineNotLoadedError",
    "EvaluationResult",
    "FitPlan",
    "FunctionTool",
    "GptOssError",
    "GptOssSettings",
    "GptOssWarning",
    "InvalidOptionError",
    "ManifestCheck",
    "MapJob",
    "MapPlan",
    "MissingDependencyError",
    "ModelCheck",
    "ModelFolderError",
    "ModelNotFoundError",
    "PythonTool",
    "RayBackend",
    "Reply",
    "Reproduction",
    "RequestError",
    "RowError",
    "StorageError",
    "TemplateError",
    "ToolCall",
    "Turn",
    "UnsupportedHardwareError",
    "__version__",
    "check_manifest",
    "check_model",
    "compare_efforts",
    "complete",
    "complete_batch",
    "effort_panel",
    "evaluate",
    "function_tool",
    "is_loaded",
    "last_result",
    "load",
    "plan_fit",
    "reproduce",
    "settings",
    "status",
    "stream",
    "unload",
    "write_manifest",
]


def compare_efforts(source: Any, template: str | None = None, **kwargs: Any) -> Any:
    """Run a prompt (or a sample of DataFrame rows) at low, medium and high effort and
    compare latency, reasoning tokens, answer tokens and accuracy. See
    :func:`gptoss_magics.sweep.compare_efforts`."""
    from .sweep import compare_efforts as run

    return run(source, template, **kwargs)


def effort_panel(prompt: str | None = None, **kwargs: Any) -> Any:
    """Sliders for reasoning effort, temperature, max tokens and the reasoning budget,
    linked to the settings; with ``prompt``, each move re-runs it. See
    :mod:`gptoss_magics.widgets`."""
    from .widgets import effort_panel as make

    return make(prompt, **kwargs)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gptoss_magics``: register the magics (vLLM is not imported)."""
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext gptoss_magics``: unload the model, if one is loaded."""
    if is_loaded():
        unload()


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "gptoss-magics"}]
