"""Small key/value tables that show as text and as HTML (status, map plans)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def text_table(rows: Sequence[tuple[str, str]]) -> str:
    """``key  value`` lines, keys padded to one width."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def html_table(rows: Sequence[tuple[str, str]], css_class: str) -> str:
    """An HTML table of escaped keys and values."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='{css_class}'>{body}</table>"


class StatusView(dict[str, Any]):
    """The engine status (``%gptoss_status``); shows as a table, and is a plain dict."""

    def _rows(self) -> list[tuple[str, str]]:
        def mb(v: Any) -> str:
            return "-" if v is None else f"{v / 2**20:,.0f} MiB"

        rows = [("state", str(self.get("state"))), ("model", str(self.get("model") or "-"))]
        if self.get("model"):
            rows += [
                ("device", f"{self.get('device')} ({self.get('dtype')})"),
                ("vllm", str(self.get("vllm"))),
                ("weights", f"{str(self.get('weights_fingerprint'))[:23]} "
                            f"({self.get('fingerprint_kind')})"),
                ("max_model_len", str(self.get("max_model_len"))),
                ("engine", "child process" if self.get("multiprocess") else "in this process"),
                ("gpu memory used", mb(self.get("gpu_used_bytes"))),
                ("tokens generated", f"{self.get('tokens_generated', 0):,}"),
                ("last run", f"{self.get('last_tokens_per_s') or '-'} tok/s"),
            ]
        for job in self.get("background") or []:
            rows.append(("background", f"{job.get('kind', 'job')} {job.get('rows_done', 0):,}"
                                       f"/{job.get('rows', 0):,} rows"))
        rows.append(("process memory (RSS)", mb(self.get("rss_bytes"))))
        d = self.get("defaults", {})
        rows.append(("defaults", ", ".join(f"{k}={v}" for k, v in d.items())))
        if self.get("notice"):
            rows.append(("note", str(self["notice"])))
        return rows

    def __repr__(self) -> str:
        return text_table(self._rows())

    def _repr_html_(self) -> str:
        return html_table(self._rows(), "gptoss-status")
