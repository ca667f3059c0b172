"""Exceptions raised by gptoss_magics.

Every error a user can cause carries one line that says what to do next.
All of them derive from one base class, so ``except GptOssError`` catches
everything this package raises on purpose::

    GptOssError
    ├── EngineNotLoadedError     generate/unload with no engine
    ├── EngineAlreadyLoadedError load while one is loaded
    ├── EngineLoadError          vLLM could not start (bad folder, out of memory, ...)
    ├── EngineDeadError          the engine stopped while running
    ├── ModelNotFoundError       no local weights for the requested model
    │   └── ModelFolderError     the weights folder is incomplete or damaged
    ├── MissingDependencyError   vLLM (or a feature of it) is not installed
    ├── CancelledError           a background map was cancelled (finished rows are kept)
    ├── TemplateError            a prompt template names something that does not exist
    └── frame.RowError           a DataFrame row failed, with map(..., on_error="raise")

Rows cut off by max_tokens, or that failed under on_error="mark", are reported with one
``frame.GptOssWarning`` per map instead.
"""

from __future__ import annotations


class GptOssError(Exception):
    """Base class of every error raised on purpose by gptoss_magics."""


class EngineNotLoadedError(GptOssError):
    """Raised when generating or unloading with no engine loaded."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "No model is loaded: run gptoss_magics.load('tiny') or %gptoss_load MODEL first."
        )


class EngineAlreadyLoadedError(GptOssError):
    """Raised by ``load()`` while another engine still holds the memory."""


class EngineLoadError(GptOssError):
    """Raised when vLLM fails to start the engine."""


class EngineDeadError(GptOssError):
    """Raised when the engine stopped working while serving a request."""


class ModelNotFoundError(GptOssError):
    """Raised when the requested weights are not on this machine."""


class ModelFolderError(ModelNotFoundError):
    """Raised when a weights folder is incomplete or damaged (see ``check_model``)."""


class MissingDependencyError(GptOssError):
    """Raised when an optional dependency such as vLLM is not installed."""


class CancelledError(GptOssError):
    """Raised when a background job was cancelled (finished rows are kept)."""


class TemplateError(GptOssError, KeyError):
    """Raised when a prompt template refers to a name that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
