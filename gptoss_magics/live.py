"""The live renderer: a reply streaming into a notebook cell, or into a terminal."""

from __future__ import annotations

import time
from typing import Any

from . import display
from .prompting import StreamHandle
from .reply import Reply
from .settings import settings

#: seconds between two updates of a live display
REFRESH_S = 0.1


def in_terminal() -> bool:
    """True in a plain IPython terminal, where text streams to stdout; everywhere else
    (kernels, embedded shells) the reply is a display updated in place."""
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "TerminalInteractiveShell"


class LiveDisplay:
    """A display that is updated in place while a reply streams."""

    def __init__(self, show_reasoning: bool | None, fmt: str) -> None:
        from IPython.display import display as show

        self.show_reasoning = show_reasoning
        self.fmt = fmt
        self.handle: Any = show({"text/plain": ""}, raw=True, display_id=True)
        self.last = 0.0

    def update(self, reply: Reply, final: bool = False) -> None:
        """Show ``reply`` (at most every REFRESH_S seconds unless ``final``)."""
        now = time.monotonic()
        if not final and now - self.last < REFRESH_S:
            return
        self.last = now
        if final:
            data, meta = display.reply_bundle(reply, show_reasoning=self.show_reasoning)
            if self.fmt in ("text", "code", "json"):
                data.pop("text/markdown", None)
                data["text/html"] = display.to_html(reply, self.show_reasoning,
                                                    markdown=False)
        else:
            data = {"text/plain": display.to_text(reply, self.show_reasoning),
                    "text/html": display.to_html(reply, self.show_reasoning, streaming=True)}
            meta = {}
        if self.handle is not None:
            self.handle.update(data, metadata=meta, raw=True)


def stream_into_cell(handle: StreamHandle, show_reasoning: bool | None, fmt: str) -> None:
    """Stream the reply: in a notebook as a live display, in a terminal as text."""
    if in_terminal():
        stream_to_terminal(handle, show_reasoning)
        return
    live = LiveDisplay(show_reasoning, fmt)
    analysis: list[str] = []
    final: list[str] = []
    try:
        for channel, text in handle.deltas():
            if channel != "tool":  # a tool call: the partial reply carries the trail
                (analysis if channel in ("analysis", "commentary") else final).append(text)
            live.update(handle.partial("".join(analysis), "".join(final)))
    finally:
        live.update(handle.reply(), final=True)


def stream_to_terminal(handle: StreamHandle, show_reasoning: bool | None) -> None:
    """Print the reply as it streams, then a warning (if any) and the footer."""
    show = settings().show_reasoning if show_reasoning is None else show_reasoning
    if handle.session.notice:
        print(f"[{handle.session.notice}]")
    channel_now: str | None = "start"
    try:
        for channel, text in handle.deltas():
            if channel in ("analysis", "commentary") and not show:
                continue
            if channel != channel_now:
                label = {"analysis": "--- reasoning ---", "final": "--- answer ---",
                         "tool": "--- tool calls ---"}.get(channel or "", "")
                if label and (show or channel == "tool"):
                    print(("\n" if channel_now != "start" else "") + label)
                channel_now = channel
            print(text, end="\n" if channel == "tool" else "", flush=True)
    finally:
        reply = handle.reply()
        print()
        if reply.warning:
            print(f"[warning: {reply.warning}]")
        print(f"-- {display.footer(reply)}")
