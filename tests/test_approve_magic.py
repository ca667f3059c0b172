"""``%%gptoss --tools python --approve``: the code waits for a yes or no (here the
terminal/IPython fallback, ``input()``); a refusal goes back to the model."""

from __future__ import annotations

import builtins
import shutil

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from test_tools import results, tool_script

from gptoss_magics.engine import ScriptedEngine

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="the python tool's sandbox needs bubblewrap")


@pytest.mark.parametrize(("answer", "expected"), [("y", "42"), ("n", "refused")])
def test_approve_asks_before_code_runs(scripted: ScriptedEngine, ip: InteractiveShell,
                                       monkeypatch: pytest.MonkeyPatch, answer: str,
                                       expected: str) -> None:
    asked: list[str] = []

    def fake_input(prompt: str = "") -> str:
        asked.append(prompt)
        return answer

    monkeypatch.setattr(builtins, "input", fake_input)
    scripted.script = tool_script("print(6 * 7)", name="python")
    ip.run_cell_magic("gptoss", "--tools python --approve -o r", "What is 6 * 7?")
    reply = ip.user_ns["r"]
    assert asked, "the code ran without asking"
    assert len(reply.tool_calls) == 1 and reply.tool_calls[0].arguments == "print(6 * 7)"
    sent_back = results(scripted.requests[-1].prompt_ids)[-1]
    assert (expected in sent_back) if answer == "n" else sent_back.startswith(expected)


def test_approve_needs_the_python_tool(scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="--approve asks before the python tool"):
        ip.run_cell_magic("gptoss", "--approve", "Hello")
    assert scripted.requests == []
