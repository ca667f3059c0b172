"""Asking the user before the python tool runs the model's code (``%%gptoss --approve``).

    tool = PythonTool(approve=WidgetApprover())

Each piece of code is shown with Run and Refuse buttons and the tool waits for a click.
The cell is still running while it waits, so the kernel is busy: ipykernel (7 and later)
would handle the click only after the cell ends. The buttons' messages are therefore
routed to a kernel *subshell* (a thread of the kernel with its own event loop), where the
click is handled at once. Where that is not possible (an older ipykernel, a terminal
IPython, plain Python) the approver asks with ``input()`` instead, which every front end
answers while a cell runs.
"""

from __future__ import annotations

import concurrent.futures
import html
import threading
import time
from collections.abc import Callable
from typing import Any

_STYLE = ("max-height:24em;overflow:auto;margin:0;padding:6px 8px;font-size:12px;"
          "background:var(--jp-layout-color2,#f5f5f5);border-radius:4px;white-space:pre")


class ApprovalPanel:
    """The code with Run / Refuse buttons; the first click decides."""

    def __init__(self, code: str) -> None:
        import ipywidgets as widgets

        self.code = code
        self.decision: bool | None = None
        self._decided = threading.Event()
        self.run_button = widgets.Button(description="Run", button_style="success",
                                         icon="play", tooltip="Run this code in the sandbox")
        self.refuse_button = widgets.Button(description="Refuse", button_style="danger",
                                            icon="times", tooltip="Tell the model you refused")
        self.run_button.on_click(lambda _button: self.decide(True))
        self.refuse_button.on_click(lambda _button: self.decide(False))
        self.status = widgets.HTML("Waiting for your click.")
        self.widget = widgets.VBox([
            widgets.HTML("<b>gpt-oss wants to run this code in the python sandbox:</b>"),
            widgets.HTML(f"<pre style='{_STYLE}'>{html.escape(code)}</pre>"),
            widgets.HBox([self.run_button, self.refuse_button, self.status]),
        ])

    @property
    def buttons(self) -> tuple[Any, Any]:
        """The Run and Refuse buttons."""
        return self.run_button, self.refuse_button

    def decide(self, run: bool, why: str = "") -> None:
        """Record the decision (later clicks change nothing) and show it."""
        if self.decision is not None:
            return
        self.decision = run
        for button in self.buttons:
            button.disabled = True
        self.status.value = why or ("Approved: running." if run else "Refused.")
        self._decided.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a click (or ``timeout_s``, which refuses); True means run."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._decided.wait(0.05):  # short waits keep the kernel interruptible
            if deadline is not None and time.monotonic() >= deadline:
                self.decide(False, f"No click within {timeout_s:g} s: refused.")
        return bool(self.decision)


class WidgetApprover:
    """An ``approve`` hook for :class:`~gptoss_magics.tools.python.PythonTool` that shows
    each piece of code with Run / Refuse buttons and waits for a click.

    ``timeout_s`` refuses when nobody clicks in time (None waits for ever; interrupting
    the kernel stops the wait). ``display`` shows the panel's widget (IPython's
    ``display`` by default).
    """

    def __init__(self, timeout_s: float | None = None,
                 display: Callable[[Any], Any] | None = None) -> None:
        self.timeout_s = timeout_s
        self._display = display
        self.last_panel: ApprovalPanel | None = None

    def __call__(self, code: str) -> bool:
        kernel = _kernel()
        route = _subshell_route(kernel)
        if self._display is None and route is None and (
                kernel is None or threading.current_thread() is threading.main_thread()):
            return ask_with_input(code)  # no way to receive a click while we wait
        panel = self.last_panel = ApprovalPanel(code)
        if route is not None:
            for button in panel.buttons:
                if getattr(button, "comm", None) is not None:
                    button.comm._reply_subshell_for = route
        if self._display is not None:
            self._display(panel.widget)
        else:
            from IPython.display import display

            display(panel.widget)
        return panel.wait(self.timeout_s)


def ask_with_input(code: str, ask: Callable[[str], str] | None = None) -> bool:
    """Print the code and ask ``Run this code? [y/N]`` (the stdin channel in a kernel);
    no answer (no stdin) is a refusal."""
    import builtins

    print("gpt-oss wants to run this code in the python sandbox:\n" + code.rstrip())
    try:
        answer = (ask or builtins.input)("Run this code? [y/N] ")
    except (EOFError, OSError):
        return False
    return answer.strip().lower() in ("y", "yes")


def _kernel() -> Any:
    """The running ipykernel, or None (terminal IPython, plain Python)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover (IPython is a dependency)
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


_SUBSHELLS: dict[int, str] = {}
_SUBSHELL_LOCK = threading.Lock()


def _subshell_route(kernel: Any) -> Callable[[Any, Any], str] | None:
    """A comm router that sends the buttons' messages to a subshell of ``kernel`` (made
    once per kernel), or None when this kernel cannot route comm messages."""
    from importlib import import_module

    try:
        base = import_module("ipykernel.comm.comm").BaseComm
    except ImportError:
        return None
    thread = getattr(kernel, "shell_channel_thread", None)
    if (thread is None or not getattr(kernel, "_supports_kernel_subshells", False)
            or not hasattr(base, "_reply_subshell_for")):
        return None
    try:
        with _SUBSHELL_LOCK:
            subshell = _SUBSHELLS.get(id(kernel))
            if subshell is None or subshell not in thread.manager.list_subshell():
                subshell = _SUBSHELLS[id(kernel)] = _create_subshell(thread)
    except Exception:  # a kernel whose internals differ: ask with input() instead
        return None
    return lambda _data, _default: subshell


def _create_subshell(thread: Any) -> str:
    """A new subshell, made on the shell channel thread as a frontend's request would."""
    made: concurrent.futures.Future[str] = concurrent.futures.Future()

    def create() -> None:
        try:
            made.set_result(thread.manager._create_subshell())
        except BaseException as exc:  # handed to the waiting thread
            made.set_exception(exc)

    thread.io_loop.add_callback(create)
    return made.result(timeout=30)
