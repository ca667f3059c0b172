"""Reasoning-effort controls: sliders linked to the settings.

``effort_panel()`` shows an effort slider (low / medium / high), a temperature
slider, a max-tokens slider and a reasoning-budget slider with its on/off box. They
are linked to :func:`gptoss_magics.settings`, so what they show is what the next
``%%gptoss`` cell and ``df.gptoss.map`` use, and a ``%config`` change moves them.
``effort_panel(prompt="...")`` also re-runs that prompt whenever a control moves
(debounced; a run still in flight is cancelled) and shows the answer, the reasoning,
tokens and latency.
"""

from __future__ import annotations

import contextlib
import html
import threading
from typing import Any

import ipywidgets as w
from traitlets import link

from . import display
from .errors import GptOssError, InvalidOptionError
from .options import Options, check_names
from .prompting import StreamHandle
from .settings import EFFORTS, settings

#: The sliders' label column: wide enough for "temperature" at JupyterLab's default font
#: (ipywidgets' own 80 px cut it to "temperat…"), in em so that it follows the font size,
#: and one width for all, so that the sliders line up.
LABEL_STYLE = {"description_width": "7.5em"}


class EffortPanel(w.VBox):
    """The effort panel widget; see :func:`effort_panel`."""

    def __new__(cls, prompt: str | None = None, *, debounce_s: float = 0.4,
                **complete_kwargs: Any) -> EffortPanel:
        # checked before the widget exists: a half-made widget would fail in __del__
        _check_panel_options(prompt, complete_kwargs)
        return super().__new__(cls, prompt, debounce_s=debounce_s, **complete_kwargs)

    def __init__(self, prompt: str | None = None, *, debounce_s: float = 0.4,
                 **complete_kwargs: Any) -> None:
        s = settings()
        self.effort = w.SelectionSlider(options=list(EFFORTS), value=s.effort,
                                        description="effort", continuous_update=False,
                                        style=LABEL_STYLE)
        self.temperature = w.FloatSlider(value=s.temperature, min=0.0, max=2.0, step=0.05,
                                         description="temperature", continuous_update=False,
                                         readout_format=".2f", style=LABEL_STYLE)
        self.max_tokens = w.IntSlider(value=min(s.max_tokens, 8192), min=16, max=8192,
                                      step=16, description="max tokens",
                                      continuous_update=False, style=LABEL_STYLE)
        self._links = [link((self.effort, "value"), (s, "effort")),
                       link((self.temperature, "value"), (s, "temperature")),
                       link((self.max_tokens, "value"), (s, "max_tokens"))]
        # reasoning_budget may be None (no limit), which a slider cannot hold: a check
        # box says whether the slider's value applies, and both follow the setting
        self.budget_on = w.Checkbox(value=s.reasoning_budget is not None, indent=False,
                                    description="limit reasoning")
        self.budget = w.IntSlider(value=min(s.reasoning_budget or 256, 8192), min=0,
                                  max=8192, step=16, description="budget",
                                  continuous_update=False, style=LABEL_STYLE,
                                  disabled=s.reasoning_budget is None)
        self._syncing = False
        self.budget_on.observe(self._budget_to_settings, names="value")
        self.budget.observe(self._budget_to_settings, names="value")
        s.observe(self._budget_from_settings, names="reasoning_budget")
        children: list[Any] = [self.effort, self.temperature, self.max_tokens,
                               w.HBox([self.budget_on, self.budget])]
        self.prompt = prompt
        self.debounce_s = debounce_s
        # the panel's own sliders set effort, temperature, max_tokens, reasoning_budget;
        # any other option applies to every re-run, checked now (one line if bad)
        check_names(complete_kwargs)
        self.complete_kwargs = complete_kwargs
        self.result = w.HTML(value="")
        self.status = w.HTML(value="")
        self.reply: Any = None
        self.runs = 0
        self.cancelled = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._handle: StreamHandle | None = None
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        if prompt is not None:
            children += [self.status, self.result]
            for slider in (self.effort, self.temperature, self.max_tokens, self.budget,
                           self.budget_on):
                slider.observe(self._on_change, names="value")
        super().__init__(children=children)
        self._closed = False
        self.add_class("gptoss-effort-panel")
        if prompt is not None:
            self.rerun()

    @property
    def reasoning_budget(self) -> int | None:
        """The budget the panel shows: the slider's value, or None when unticked."""
        return int(self.budget.value) if self.budget_on.value else None

    def _budget_to_settings(self, _change: Any) -> None:
        self.budget.disabled = not self.budget_on.value
        if not self._syncing:
            self._syncing = True
            try:
                settings().reasoning_budget = self.reasoning_budget
            finally:
                self._syncing = False

    def _budget_from_settings(self, change: Any) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.budget_on.value = change["new"] is not None  # also (dis)ables the slider
            if change["new"] is not None:
                self.budget.value = min(int(change["new"]), self.budget.max)
        finally:
            self._syncing = False

    def close(self) -> None:
        """Close the widgets and stop following the settings (safe to call twice)."""
        if getattr(self, "_closed", True):  # closed, or never fully made
            return
        self._closed = True
        with contextlib.suppress(ValueError):
            settings().unobserve(self._budget_from_settings, names="reasoning_budget")
        for ln in self._links:
            with contextlib.suppress(ValueError):
                ln.unlink()
        super().close()

    # ------------------------------------------------------------------ re-running
    def _on_change(self, _change: Any) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce_s, self.rerun)
            self._timer.daemon = True
            self._timer.start()

    def rerun(self) -> None:
        """Run the bound prompt now with the sliders' values (cancelling a run in flight)."""
        if self.prompt is None:
            return
        self.cancel()
        self._cancel = cancel = threading.Event()
        worker = threading.Thread(target=self._run, args=(cancel,), daemon=True,
                                  name="gptoss-effort-panel")
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Stop the run in flight, if any, and wait for it to let go of the engine."""
        self._cancel.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=30)

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the current run has finished (for scripts and tests)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _run(self, cancel: threading.Event) -> None:
        try:
            self._generate(cancel)
        except GptOssError as exc:  # no model, an unloaded engine, bad options: say so
            self.status.value = f"<span style='color:#b35900'>{html.escape(str(exc))}</span>"

    def _generate(self, cancel: threading.Event) -> None:
        handle = StreamHandle(
            str(self.prompt), effort=self.effort.value,
            temperature=self.temperature.value, max_tokens=self.max_tokens.value,
            **{"reasoning_budget": self.reasoning_budget, **self.complete_kwargs})
        self.status.value = (f"<i>running at effort {handle.options.effort}, temperature "
                             f"{handle.options.temperature:g} …</i>")
        stream = handle.deltas()
        try:
            for _ in stream:
                if cancel.is_set():
                    break
        finally:
            stream.close()  # aborts the request when cancelled
        reply = handle.reply()
        if cancel.is_set():
            self.cancelled += 1
            return
        self.reply = reply
        self.runs += 1
        self.status.value = ""
        self.result.value = display.to_html(reply)


def _check_panel_options(prompt: Any, options: dict[str, Any]) -> None:
    """Refuse a bad prompt or option when the panel is made, not in its first run."""
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidOptionError(f"the panel's prompt must be a string, not "
                                 f"{type(prompt).__name__}")
    check_names(options)
    for name in ("effort", "temperature", "max_tokens"):
        if name in options:
            raise InvalidOptionError(f"{name} is the panel's slider: leave it out of "
                                     "effort_panel(...)")
    Options.resolve(**options)


def effort_panel(prompt: str | None = None, **complete_kwargs: Any) -> EffortPanel:
    """Sliders for reasoning effort, temperature, max tokens and the reasoning budget,
    linked to the settings.

    With ``prompt``, moving a slider re-runs the prompt (debounced; a run in flight is
    cancelled) and shows the answer, the reasoning, tokens and latency.
    """
    return EffortPanel(prompt, **complete_kwargs)
