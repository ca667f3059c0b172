"""The JupyterLab extension in a real browser: activation, %%gptoss highlighting, the
engine status in the status bar, the reply renderer (and its sanitising), and the
effort slider reaching the next %%gptoss cell.

The tests share one notebook and run in file order; the tiny model is loaded once
(``loaded_model``), which takes 20-40 s on a CPU.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow]

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
LOAD_TIMEOUT_MS = 180_000
CELL_TIMEOUT_MS = 120_000
PLUGINS = ("gptoss-magics:highlight", "gptoss-magics:status", "gptoss-magics:reply-renderer")
STATUS = "#gptoss-status"

_tags = itertools.count(1)


class Notebook:
    """The active notebook of the page, driven through ``window.jupyterapp``."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def wait_idle(self, timeout: int = 60_000) -> None:
        self.page.wait_for_function(
            """() => {
                const panel = window.jupyterapp.shell.currentWidget;
                const k = panel && panel.sessionContext && panel.sessionContext.session
                    && panel.sessionContext.session.kernel;
                return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
            }""", timeout=timeout)

    def add_cell(self, source: str) -> str:
        """Append a code cell holding ``source``; returns its tag (``data-pw``)."""
        tag = f"c{next(_tags)}"
        self.page.evaluate(
            """async ([source, tag]) => {
                const app = window.jupyterapp;
                const nb = app.shell.currentWidget.content;
                nb.activeCellIndex = nb.widgets.length - 1;
                await app.commands.execute('notebook:insert-cell-below');
                const cell = nb.activeCell;
                cell.model.sharedModel.setSource(source);
                cell.node.dataset.pw = tag;
            }""", [source, tag])
        return tag

    def cell(self, tag: str) -> Any:
        return self.page.locator(f'.jp-Cell[data-pw="{tag}"]')

    def start(self, tag: str) -> None:
        """Run the cell without waiting for it."""
        self.page.evaluate(
            """(tag) => {
                const app = window.jupyterapp;
                const nb = app.shell.currentWidget.content;
                nb.activeCellIndex = nb.widgets.findIndex(c => c.node.dataset.pw === tag);
                // the command's promise settles when the cell has run: do not wait here
                void app.commands.execute('notebook:run-cell');
            }""", tag)

    def wait_done(self, tag: str, timeout: int = CELL_TIMEOUT_MS) -> None:
        self.page.wait_for_function(
            """(tag) => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                const cell = nb.widgets.find(c => c.node.dataset.pw === tag);
                return !!cell && cell.model.executionCount !== null;
            }""", arg=tag, timeout=timeout)

    def run(self, source: str, timeout: int = CELL_TIMEOUT_MS) -> Any:
        """Run ``source`` in a new cell; returns the cell's output area locator."""
        tag = self.add_cell(source)
        self.start(tag)
        self.wait_done(tag, timeout)
        errors = self.page.evaluate(
            """(tag) => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                const cell = nb.widgets.find(c => c.node.dataset.pw === tag);
                return cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
                    .map(o => `${o.ename}: ${o.evalue}`);
            }""", tag)
        if errors:
            pytest.fail(f"cell failed:\n{source}\n" + "\n".join(errors))
        return self.cell(tag).locator(".jp-OutputArea")

    def text_of(self, source: str) -> str:
        """The printed output of running ``source``."""
        out = self.run(source)
        return "".join(out.locator(".jp-OutputArea-output").all_inner_texts()).strip()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="module")
def page(browser_context: Any, lab_server: Any) -> Iterator[Any]:
    """Lab open in the browser, console messages collected on ``page.console``."""
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.console = console
    page.on("dialog", lambda d: d.accept())
    page.goto(lab_server.lab_url())
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started !== undefined")
    page.wait_for_function(
        "async () => { await window.jupyterapp.started; await window.jupyterapp.restored;"
        " return true; }", timeout=60_000)
    yield page
    shot(page, "lab-final")


@pytest.fixture(scope="module")
def nb(page: Any) -> Notebook:
    """A new notebook on this virtualenv's python3 kernel."""
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    notebook = Notebook(page)
    notebook.wait_idle()
    assert notebook.text_of("import sys; print(sys.executable)") == sys.executable
    return notebook


_state: dict[str, Any] = {}


@pytest.fixture
def loaded_model(nb: Notebook) -> str:
    """gptoss_magics loaded in the kernel, with the tiny model; returns the model name.

    The first call also checks the status bar: none, then loading, then the model.
    """
    if "model" in _state:
        return str(_state["model"])
    page = nb.page
    nb.run("%load_ext gptoss_magics")
    expect(page.locator(STATUS)).to_have_text("gpt-oss: none", timeout=30_000)
    # record every text the status item shows while the model loads
    page.evaluate("""() => {
        const node = document.querySelector('#gptoss-status');
        window.__gptossStatusSeen = [node.textContent];
        new MutationObserver(() => window.__gptossStatusSeen.push(node.textContent))
            .observe(node, {childList: true, characterData: true, subtree: true});
    }""")
    tag = nb.add_cell("%gptoss_load tiny")
    nb.start(tag)
    nb.wait_done(tag, timeout=LOAD_TIMEOUT_MS)
    seen = page.evaluate("() => window.__gptossStatusSeen")
    assert "gpt-oss: loading…" in seen, seen
    model = nb.text_of("import gptoss_magics; print(gptoss_magics.status()['model'])")
    assert model and model != "None", nb.cell(tag).inner_text()
    expect(page.locator(STATUS)).to_have_text(re.compile(
        rf"^gpt-oss: {re.escape(model)} · effort \w+"), timeout=30_000)
    _state["model"] = model
    return model


# ---------------------------------------------------------------------------- tests
def test_extension_activates(page: Any, nb: Notebook) -> None:
    for plugin in PLUGINS:
        assert page.evaluate("(id) => window.jupyterapp.isPluginActivated(id)", plugin), plugin
    assert any("gptoss-magics: engine status is activated" in c for c in page.console)
    # the status item follows the notebook; this kernel has not loaded gptoss_magics
    expect(page.locator(STATUS)).to_have_text("gpt-oss: none")
    # the lab serves the build of this tree, not a stale copy
    built = REPO / "gptoss_magics" / "labextension" / "package.json"
    if built.is_file():
        want = json.loads(built.read_text())["jupyterlab"]["_build"]["load"]
        served = page.evaluate(
            """() => JSON.parse(document.getElementById('jupyter-config-data').textContent)
                .federated_extensions.filter(e => e.name === 'gptoss-magics')
                .map(e => e.load)""")
        assert served == [want], (
            f"the lab serves {served}, this tree built {want}: reinstall "
            "(pip install -e .) or link it (jupyter labextension develop --overwrite .)")


def test_gptoss_cell_is_highlighted(page: Any, nb: Notebook) -> None:
    tag = nb.add_cell("")
    editor = nb.cell(tag).locator(".cm-content")
    editor.click()
    page.keyboard.type("%%gptoss --max-tokens 8 -e low\n"
                       "{topic}: write a poem about it and {row['name']} for me,\n"
                       "with {{literal}} braces in it")
    cell = nb.cell(tag)
    expect(cell.locator(".cm-line.cm-gptoss-magic-line")).to_have_count(1)
    expect(cell.locator(".cm-gptoss-magic")).to_have_text("%%gptoss")
    expect(cell.locator(".cm-gptoss-option")).to_have_text(["--max-tokens", "-e"])
    expect(cell.locator(".cm-gptoss-body")).to_have_count(2)
    expect(cell.locator(".cm-gptoss-var")).to_have_text(["{topic}", "{row['name']}"])
    expect(cell.locator(".cm-gptoss-escape")).to_have_text(["{{", "}}"])
    page.wait_for_timeout(1500)  # the kernel's language_info arrives late: still ours?

    styles = page.evaluate(
        """(tag) => {
            const cell = document.querySelector(`.jp-Cell[data-pw="${tag}"]`);
            const out = {};
            for (const s of cell.querySelectorAll('.cm-gptoss-body span')) {
                out[s.textContent] = getComputedStyle(s).fontWeight;
            }
            const esc = cell.querySelector('.cm-gptoss-escape');
            const v = cell.querySelector('.cm-gptoss-var');
            out.__escape = getComputedStyle(esc).color;
            out.__var = getComputedStyle(v).color;
            return out;
        }""", tag)
    # Python would make `for`, `in` and `with` bold keywords: the prompt is not Python
    for word in ("for", "with", "in"):
        assert styles.get(word, "400") == "400", styles
    assert styles["__escape"] != styles["__var"], styles  # {{ }} do not look like {vars}
    shot(page, "lab-highlighting")
    # leave it un-run: delete the cell
    page.evaluate("""(tag) => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = nb.widgets.findIndex(c => c.node.dataset.pw === tag);
        return window.jupyterapp.commands.execute('notebook:delete-cell');
    }""", tag)


def test_injected_html_does_not_run(page: Any, nb: Notebook) -> None:
    out = nb.run(
        "from gptoss_magics import Reply\n"
        "Reply(final='<img src=x onerror=\"window.__pwned=1\"> "
        "<script>window.__pwned=2</script> **bold** <a href=\"javascript:window.__pwned=4\""
        " id=\"pwlink\">link</a>',\n"
        "      analysis='<script>window.__pwned=3</script>', finish_reason='stop',\n"
        "      truncated=False, prompt_tokens=1, completion_tokens=1, latency_s=0.1,\n"
        "      effort='low', model='test', analysis_tokens=5)")
    reply = out.locator(".gptoss-Reply")
    expect(reply).to_have_count(1)
    expect(reply.locator(".gptoss-Reply-final strong")).to_have_text("bold")
    expect(reply.locator(".gptoss-Reply-footer")).to_contain_text("effort low")
    # the reasoning is text, collapsed (show_reasoning is off by default)
    analysis = reply.locator(".gptoss-Reply-reasoning .gptoss-Reply-analysis")
    expect(analysis).to_have_text("<script>window.__pwned=3</script>")
    assert reply.locator("details.gptoss-Reply-reasoning").get_attribute("open") is None
    # nothing ran, nothing that could run is left
    page.wait_for_timeout(1000)
    assert page.evaluate("() => window.__pwned") is None
    assert out.locator("script").count() == 0
    for attr in ("onerror", "onload"):
        assert out.locator(f"[{attr}]").count() == 0
    href = reply.locator("a").first.get_attribute("href") if reply.locator("a").count() else ""
    assert not (href or "").startswith("javascript:")
    # our renderer won over the text/html of the bundle (which has .gptoss-reply)
    assert out.locator(".gptoss-reply").count() == 0
    assert out.locator(".jp-OutputArea-output.gptoss-Reply").count() == 1
    shot(page, "lab-injected-html")


def test_remote_images_in_answers_load_nothing(page: Any, nb: Notebook) -> None:
    """A prompt-injected answer cannot make the browser fetch a URL (a data leak)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    hits: list[str] = []

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        out = nb.run(
            "from gptoss_magics import Reply\n"
            f"Reply(final='![chart]({url}/md.png?d=secret) <img src=\"{url}/raw.png\">',\n"
            "      analysis='', finish_reason='stop', truncated=False, prompt_tokens=1,\n"
            "      completion_tokens=1, latency_s=0.1, effort='low', model='test')")
        reply = out.locator(".gptoss-Reply")
        expect(reply).to_have_count(1)
        expect(reply.locator(".gptoss-Reply-final")).to_contain_text("image: chart")
        page.wait_for_timeout(1500)
        assert out.locator("img").count() == 0
        assert hits == []
    finally:
        server.shutdown()


def test_load_model_status_and_reply(page: Any, nb: Notebook, loaded_model: str) -> None:
    out = nb.run("%%gptoss --max-tokens 8\nSay hello to {{the reader}}, then stop.",
                 timeout=LOAD_TIMEOUT_MS)
    reply = out.locator(".gptoss-Reply")
    expect(reply).to_have_count(1)
    expect(reply.locator(".gptoss-Reply-footer")).to_contain_text(loaded_model)
    expect(reply.locator(".gptoss-Reply-notice")).to_contain_text("not a language model")
    assert out.locator(".gptoss-reply").count() == 0  # not the text/html fallback
    facts = json.loads(nb.text_of(
        "import json; print(json.dumps({'warning': _.warning, 'effort': _.effort,"
        " 'tps': _.tokens_per_s, 'prompt': _.prompt}))"))
    assert "{the reader}" in facts["prompt"]
    if facts["warning"]:
        expect(reply.locator(".gptoss-Reply-warning")).to_contain_text(facts["warning"])
    else:
        expect(reply.locator(".gptoss-Reply-warning")).to_have_count(0)
    expect(page.locator(STATUS)).to_have_text(re.compile(
        rf"^gpt-oss: {re.escape(loaded_model)} · effort {facts['effort']} · \d+ tok/s$"))
    shot(page, "lab-reply")


def test_effort_slider_changes_next_cell(page: Any, nb: Notebook, loaded_model: str) -> None:
    before = nb.text_of("import gptoss_magics; print(gptoss_magics.settings().effort)")
    target = "low" if before != "low" else "high"
    out = nb.run("gptoss_magics.effort_panel()")
    slider = out.locator(".gptoss-effort-panel .widget-hslider").first
    expect(slider).to_be_visible(timeout=30_000)
    expect(slider.locator(".widget-readout")).to_have_text(before)
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("Home" if target == "low" else "End")
    expect(slider.locator(".widget-readout")).to_have_text(target)
    expect(page.locator(STATUS)).to_contain_text(f"effort {target}", timeout=30_000)

    reply_out = nb.run("%%gptoss --max-tokens 8\nOne word, please.", timeout=LOAD_TIMEOUT_MS)
    expect(reply_out.locator(".gptoss-Reply-footer")).to_contain_text(f"effort {target}")
    assert nb.text_of("print(_.effort)") == target
    # and back with the arrow key, one step
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight" if target == "low" else "ArrowLeft")
    expect(slider.locator(".widget-readout")).to_have_text("medium")
    page.wait_for_timeout(300)
    assert nb.text_of("print(gptoss_magics.settings().effort)") == "medium"
    shot(page, "lab-effort")


def test_background_map_progress_in_the_status_bar(page: Any, nb: Notebook,
                                                   loaded_model: str) -> None:
    nb.run("import pandas as pd\n"
           "rows = pd.DataFrame({'q': [f'What is {i % 100} + {i // 100}?' for i in range(1000)]})\n"
           "job = rows.gptoss.submit('{q}', effort='high', max_tokens=48, cache=False)")
    expect(page.locator(STATUS)).to_contain_text(
        re.compile(r"background map [\d,]+/1,000 rows \(\d+%\)"), timeout=60_000)
    # and it moves while the job runs (the kernel reports about once a second)
    expect(page.locator(STATUS)).to_contain_text(
        re.compile(r"background map [1-9][\d,]*/1,000 rows \(\d+%\)"), timeout=60_000)
    shot(page, "lab-background-map")
    nb.run("job.cancel()")
    expect(page.locator(STATUS)).not_to_contain_text("background", timeout=30_000)
    assert nb.text_of("print(job)").startswith("MapJob cancelled")


def test_status_after_page_reload(page: Any, nb: Notebook, loaded_model: str,
                                  lab_server: Any) -> None:
    """After a reload the frontend opens the comm itself (the kernel has the extension)."""
    # (the command's promise would wait for any dialog: do not await it in the page)
    page.evaluate("() => { void window.jupyterapp.commands.execute('docmanager:save'); }")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
                           timeout=30_000)
    page.goto(lab_server.lab_url(reset=False))
    page.wait_for_function(
        "async () => { if (!window.jupyterapp) return false; await window.jupyterapp.restored;"
        " const w = window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.sessionContext && w.sessionContext.session); }", timeout=60_000)
    expect(page.locator(STATUS)).to_have_text(
        re.compile(rf"^gpt-oss: {re.escape(loaded_model)} · effort "), timeout=30_000)
    shot(page, "lab-reloaded")


def test_status_after_kernel_restart(page: Any, nb: Notebook, loaded_model: str) -> None:
    nb.wait_idle()
    page.evaluate("() => { void window.jupyterapp.shell.currentWidget.sessionContext.session"
                  ".kernel.restart(); }")
    expect(page.locator(STATUS)).to_have_text("gpt-oss: none", timeout=60_000)
    nb.wait_idle()
    _state.clear()
    errors = [c for c in page.console if c.startswith(("error", "pageerror"))
              and "gptoss" in c.lower()]
    assert not errors, errors


def test_artifacts_written() -> None:
    assert any(Path(ARTIFACTS).glob("lab-*.png"))
