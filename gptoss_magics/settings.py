"""One object holding every default of gptoss_magics.

The settings are a traitlets ``SingletonConfigurable``: set them in
``ipython_config.py``::

    c.GptOssSettings.model = "/models/gpt-oss-20b"
    c.GptOssSettings.effort = "low"
    c.GptOssSettings.engine_args = {"gpu_memory_utilization": 0.85}

or live, with ``%config GptOssSettings.max_tokens = 512``, or from Python with
``gptoss_magics.settings().temperature = 0.0``. The widgets are linked to the
same object, so a slider moved in the effort panel changes what the next
``%%gptoss`` cell and ``df.gptoss.map`` use. An argument given to a call always
wins over the settings.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, TraitError, Unicode, validate
from traitlets.config import SingletonConfigurable

EFFORTS = ("low", "medium", "high")


def _default_cache_dir() -> str:
    env = os.environ.get("GPTOSS_MAGICS_CACHE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gptoss-magics")


class GptOssSettings(SingletonConfigurable):
    """Defaults for loading gpt-oss and prompting it."""

    model = Unicode(
        "openai/gpt-oss-20b",
        help="""Model that `%gptoss_load` loads when given none: a local weights folder,
        a Hugging Face id already in the local cache (nothing is downloaded), or 'tiny'
        (the embedded CPU test model).""",
    ).tag(config=True)

    effort = CaselessStrEnum(
        EFFORTS,
        default_value="medium",
        help="Reasoning effort written into the system message: low, medium or high.",
    ).tag(config=True)

    max_tokens = Int(
        1024,
        min=1,
        help="""Most tokens generated per reply, reasoning (analysis) included. A reply that
        hits it is flagged `truncated`.""",
    ).tag(config=True)

    reasoning_budget = Int(
        None,
        allow_none=True,
        min=0,
        help="""Most reasoning (analysis) tokens per reply. When the model reaches it, the
        engine closes the reasoning and opens the final channel, so the model answers at
        once instead of running into max_tokens with no answer; the reply is flagged
        `reasoning_cut`. None: no limit (only max_tokens applies).""",
    ).tag(config=True)

    temperature = Float(
        1.0, min=0.0, help="Sampling temperature (gpt-oss is tuned for 1.0; 0 is greedy)."
    ).tag(config=True)

    top_p = Float(1.0, min=0.0, max=1.0, help="Nucleus sampling threshold.").tag(config=True)

    seed = Int(
        0,
        allow_none=True,
        min=0,
        max=2**63 - 1,
        help="""Per-request sampling seed, so that the same prompt, model and settings give the
        same answer. None draws a fresh seed for every request.""",
    ).tag(config=True)

    instructions = Unicode(
        "",
        help="Developer instructions sent with every prompt (the harmony developer message).",
    ).tag(config=True)

    knowledge_cutoff = Unicode(
        "2024-06", help="Knowledge cutoff written into the system message."
    ).tag(config=True)

    current_date = Unicode(
        "today",
        help="""Current date written into the system message: 'today' (the date at each call),
        a fixed 'YYYY-MM-DD' (prompts then stay byte-identical across days, which keeps
        caches and audits stable), or '' to leave the line out.""",
    ).tag(config=True)

    show_reasoning = Bool(
        False,
        help="Show the reasoning (analysis channel) expanded instead of collapsed.",
    ).tag(config=True)

    engine_args = Dict(
        {},
        help="""Extra keyword arguments for vLLM's engine (e.g. gpu_memory_utilization,
        max_model_len, tensor_parallel_size). Arguments given to load() win.""",
    ).tag(config=True)

    cache_dir = Unicode(
        _default_cache_dir(),
        help="""Folder for the built tiny model and the result cache. Defaults to
        $GPTOSS_MAGICS_CACHE, else $XDG_CACHE_HOME/gptoss-magics, else ~/.cache/gptoss-magics.""",
    ).tag(config=True)

    audit_log = Unicode(
        "",
        help="""Path of an append-only JSON-lines audit log: every reply and every generated
        DataFrame row with its prompt, answer, reasoning and provenance. Empty: off.""",
    ).tag(config=True)

    offline = Bool(
        True,
        help="""Keep Hugging Face libraries offline (HF_HUB_OFFLINE=1) so that nothing is
        downloaded at run time. Weights must already be on disk.""",
    ).tag(config=True)

    @validate("current_date")
    def _check_date(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value in ("", "today"):
            return value
        try:
            _dt.date.fromisoformat(value)
        except ValueError as exc:
            raise TraitError(
                f"current_date must be 'today', '' or YYYY-MM-DD, not {value!r}"
            ) from exc
        return value

    def resolved_date(self) -> str | None:
        """The date to write into the system message, or None to leave it out."""
        if self.current_date == "today":
            return _dt.date.today().isoformat()
        return self.current_date or None

    def cache_path(self, *parts: str) -> Path:
        """A path inside the cache folder (the folder is created, readable by the user only)."""
        root = Path(self.cache_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = root.joinpath(*parts)
        return path


def settings() -> GptOssSettings:
    """The process-wide settings object (created on first use)."""
    return GptOssSettings.instance()
