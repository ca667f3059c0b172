"""The example notebooks, executed top to bottom by a real kernel (nbclient)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import nbformat

pytestmark = pytest.mark.engine

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def run(name: str) -> nbformat.NotebookNode:
    import nbformat  # slow to import (its JSON-schema validator): only when used
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(nb, ARTIFACTS / f"{name}.executed.ipynb")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", (cell.source, out)
    return nb


def outputs(nb: nbformat.NotebookNode, needle: str, exact: bool = False
            ) -> list[dict[str, Any]]:
    """Outputs of the first code cell whose source contains (or is) ``needle``."""
    for cell in nb.cells:
        found = cell.source.strip() == needle if exact else needle in cell.source
        if cell.cell_type == "code" and found:
            return list(cell.outputs)
    raise AssertionError(f"no cell with {needle!r}")


def text_of(outs: list[dict[str, Any]]) -> str:
    parts = []
    for out in outs:
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_quickstart() -> None:
    nb = run("quickstart")
    assert "tiny" in text_of(outputs(nb, "%gptoss_status"))
    reply_out = outputs(nb, "What is {a} + {b}?")
    bundle = [o for o in reply_out if "data" in o][-1]
    assert "application/vnd.gptoss.reply+json" in bundle["data"]
    reply = bundle["data"]["application/vnd.gptoss.reply+json"]
    if isinstance(reply, str):
        reply = json.loads(reply)
    assert reply["final"].strip() == "42" and reply["analysis"]
    prov = bundle["metadata"]["gptoss"]
    assert prov["effort"] == "high" and prov["weights_fingerprint"].startswith("sha256:")
    assert "'42'" in text_of(outputs(nb, "print(repr(reply.final)"))
    assert "RIVER" in text_of(outputs(nb, "Uppercase the word: river"))
    chat = text_of(outputs(nb, "conv", exact=True))
    assert "2 turn(s)" in chat and "'RIVER'" in chat and "'GARDEN'" in chat
    labels = text_of(outputs(nb, "%gptoss_map reviews"))
    for word in ("positive", "negative", "neutral"):
        assert word in labels
    assert "Unloaded" in text_of(outputs(nb, "%gptoss_unload"))


def test_dataframe_notebook() -> None:
    nb = run("dataframe")
    labels = text_of(outputs(nb, "df['label'] = "))
    assert "positive" in labels and "negative" in labels
    dtypes = text_of(outputs(nb, "reviews.dtypes"))
    assert "category" in dtypes and "Int64" in dtypes
    assert "True" in text_of(outputs(nb, "short = "))  # truncated rows are flagged
    summary = text_of(outputs(nb, "again = "))
    assert "'generated': 0" in summary


def test_effort_notebook() -> None:
    nb = run("effort")
    assert "high" in text_of(outputs(nb, "panel.wait()")) or \
        "medium" in text_of(outputs(nb, "panel.wait()"))
    table = text_of(outputs(nb, "sweep.table["))
    assert "accuracy" in table
    assert "reasoning grows with effort: True" in text_of(outputs(nb, "reasoning grows"))
    budget = text_of(outputs(nb, "print('answered:'"))
    assert "answered: 8 of 8" in budget and "reasoning cut: 8" in budget
    assert "correct: 8" in budget or "correct: 7" in budget


def test_evaluate_notebook() -> None:
    nb = run("evaluate")
    shown = [o for o in outputs(nb, "result = gm.evaluate(") if "data" in o]
    assert shown and "application/vnd.vegalite.v5+json" in shown[-1]["data"]
    assert "<svg" in shown[-1]["data"]["text/html"]  # the static fallback
    table = text_of(outputs(nb, "result.table["))
    assert "accuracy" in table and "high, budget 4" in table
    assert "high, no budget" in text_of(outputs(nb, "result.rows", exact=True))
    assert "Evaluation reproduction: MATCHES" in text_of(outputs(nb, "gm.reproduce(path)"))
    assert "reasoning tokens per row" in text_of(outputs(nb, "new_rows.gptoss.plan("))
    cascade = text_of(outputs(nb, "out = new_rows.gptoss.map("))
    assert "rows_per_level" in cascade and "accuracy: 1.0" in cascade


def test_tools_notebook() -> None:
    from gptoss_magics.tiny import read_artifact_meta

    if "multiply" not in read_artifact_meta()["tasks"]:
        pytest.skip("this tiny model was not trained to call tools (tools/train_tiny.py)")
    if shutil.which("bwrap") is None:
        pytest.skip("the notebook's python tool needs bubblewrap (make setup installs it)")
    nb = run("tools")
    bundle = [o for o in outputs(nb, "reply = gm.complete(") if "data" in o][-1]
    reply = bundle["data"]["application/vnd.gptoss.reply+json"]
    if isinstance(reply, str):
        reply = json.loads(reply)
    [trail] = reply["tool_trail"]  # one call, shown in the reply
    assert trail.startswith("multiply({") and " → " in trail
    assert reply["tool_calls"][0]["name"] == "functions.multiply"
    args = reply["tool_calls"][0]["arguments"]
    assert reply["tool_calls"][0]["result"] == args["a"] * args["b"]
    assert bundle["metadata"]["gptoss"]["tools"][0]["name"] == "multiply"
    assert "ToolCall(name='functions.multiply'" in text_of(outputs(nb, "reply.tool_calls",
                                                                   exact=True))
    cell = [o for o in outputs(nb, "%%gptoss --tools multiply") if "data" in o][-1]
    assert cell["data"]["application/vnd.gptoss.reply+json"]["tool_trail"]
    assert "functions.multiply {'a': " in text_of(outputs(nb, "for call in cell_reply"))
    python = text_of(outputs(nb, "tools=[PythonTool()]"))
    assert "code: print(" in python and "printed: " in python
    # the model's quality: some row is right; no row failed, so all four are cached
    table = text_of(outputs(nb, "orders.assign("))
    assert "total" in table and "right" in table and "True" in table
    assert "'cached': 4" in text_of(outputs(nb, "again = orders.gptoss.map("))
    refused = text_of(outputs(nb, "WidgetApprover(timeout_s=10)"))
    assert "error: refused by the user" in refused
    check = text_of(outputs(nb, "check = gm.reproduce(reply)"))
    assert "Reproduction: identical" in check and "same calls: True" in check
