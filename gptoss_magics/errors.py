"""Exceptions raised by gptoss_magics.

Every error a user can cause carries one line that says what to do next.
All of them derive from one base class, so ``except GptOssError`` catches
everything this package raises on purpose::

    GptOssError
    ├── EngineNotLoadedError     generate/unload with no engine
    ├── EngineAlreadyLoadedError load while one is loaded
    ├── EngineLoadError          vLLM could not start (bad folder, out of memory, ...)
    │   └── UnsupportedHardwareError  no kernel here for the weights' format (MXFP4)
    ├── EngineDeadError          the engine stopped while running
    ├── ModelNotFoundError       no local weights for the requested model
    │   └── ModelFolderError     the weights folder is incomplete or damaged
    ├── MissingDependencyError   vLLM (or a feature of it) is not installed
    ├── CancelledError           a background map was cancelled (finished rows are kept)
    ├── InvalidOptionError       a bad option value (also a ValueError), naming the option
    ├── TemplateError            a prompt template names something that does not exist
    ├── RequestError             one request failed in the engine (the engine lives on)
    ├── StorageError             the audit log or the result cache cannot be written
    └── RowError                 a DataFrame row failed, with map(..., on_error="raise")

Rows cut off by max_tokens, or that failed under on_error="mark", are reported with one
:class:`GptOssWarning` per map instead. Magics turn a ``GptOssError`` into a one-line
``UsageError``; any other exception is a bug and keeps its traceback.
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


class UnsupportedHardwareError(EngineLoadError):
    """Raised by ``load()`` before vLLM starts when this machine has no kernel for the
    checkpoint's format (MXFP4 experts without a GPU or an AMX CPU); the message names the
    command that converts it to bf16 (``python -m gptoss_magics dequantize SRC DST``),
    which vLLM runs on any CPU."""


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


class InvalidOptionError(GptOssError, ValueError):
    """Raised for a bad option value; the message names the option and what it accepts."""


class RequestError(GptOssError):
    """Raised when one request failed in the engine; the engine and other requests live on."""


class StorageError(GptOssError):
    """Raised when the audit log (or another file the package must write) cannot be
    written; checked before anything is generated."""


class RowError(GptOssError):
    """Raised with ``map(..., on_error='raise')`` when a row fails; names the row."""


class GptOssWarning(UserWarning):
    """Rows that hit max_tokens, missed a final answer or failed; a cache that cannot be
    written; a constrained answer that does not fit."""
