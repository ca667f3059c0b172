"""Engine status for the JupyterLab extension, over a Jupyter comm.

The kernel side of the status-bar item. Protocol (comm target ``gptoss-magics``):

* ``%load_ext gptoss_magics`` in a kernel opens a comm to the frontend and sends
  the current status; the frontend may also open a comm to the kernel (after a
  page reload), which answers with the status.
* Every change (load started, loaded, unloaded, a run finished, a default changed)
  sends one message to every open comm::

      {"type": "status", "engine": "none" | "loading" | "ready" | "dead",
       "model": str | None, "tiny": bool, "device": str | None,
       "last_tokens_per_s": float | None, "effort": "low" | "medium" | "high",
       "max_tokens": int, "temperature": float, "reasoning_budget": int | None,
       "rss_bytes": int, "gpu_used_bytes": int | None,
       "background": [{"kind": "map", "rows": int, "rows_done": int,
                       "tokens_per_s": float}, ...]}

  Background maps (``df.gptoss.submit``) send their progress about once a second.

(The engine state is not called ``state``: nbclient takes any comm message with a
``state`` key for an ipywidgets state update and fails on it.)
"""

from __future__ import annotations

import contextlib
from typing import Any

from . import session
from .settings import settings

TARGET = "gptoss-magics"

_comms: list[Any] = []
_hooked = False


def message(status: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status message sent to the frontend."""
    st = status if status is not None else session.status()
    s = settings()
    return {
        "type": "status",
        "engine": st.get("state"),
        "model": st.get("model"),
        "tiny": bool(st.get("tiny")),
        "device": st.get("device"),
        "last_tokens_per_s": st.get("last_tokens_per_s"),
        "effort": s.effort,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "rss_bytes": st.get("rss_bytes"),
        "gpu_used_bytes": st.get("gpu_used_bytes"),
        "reasoning_budget": s.reasoning_budget,
        "background": st.get("background") or [],
    }


def _broadcast(status: dict[str, Any] | None = None) -> None:
    msg = message(status)
    for comm in list(_comms):
        try:
            comm.send(msg)
        except Exception:  # a closed or broken comm: forget it
            _comms.remove(comm)


def _track(comm: Any) -> None:
    _comms.append(comm)

    def closed(_msg: Any) -> None:
        with contextlib.suppress(ValueError):
            _comms.remove(comm)

    comm.on_close(closed)


def attach(shell: Any) -> None:
    """Start talking to the frontend, when ``shell`` is a kernel (no-op elsewhere)."""
    global _hooked
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return
    try:
        from comm import create_comm, get_comm_manager
    except ImportError:  # pragma: no cover - ipykernel always brings comm
        return
    if not _hooked:
        _hooked = True
        session.on_change(_broadcast)
        settings().observe(lambda _change: _broadcast(),
                           names=["effort", "max_tokens", "temperature", "reasoning_budget"])

        def on_open(comm: Any, _msg: Any) -> None:
            _track(comm)
            comm.send(message())

        with contextlib.suppress(Exception):
            get_comm_manager().register_target(TARGET, on_open)
    with contextlib.suppress(Exception):
        comm = create_comm(target_name=TARGET, data=message())
        _track(comm)
