"""Tools end to end on the real vLLM engine with the trained tiny model.

The tiny model learnt one thing about tools: asked for a product of two numbers of 2 or 3
digits with the ``multiply`` function tool (or the python tool) declared, it calls the tool
and answers with its result (tools/train_tiny.py; the issue's target is at least 90% of
held-out products right, greedy). The prompts here are asked exactly as it was trained:
held-out products, the fixed date, the tool declared as ``multiply(a: int, b: int)``.

Two kinds of assertion, kept apart:

* the loop's mechanics are checked exactly: what the tool received is what the model sent,
  what the model read back is what the tool returned (or the error text), the reply ends,
  the trail, flags, replay and cache behave as documented;
* the model's own quality (does it answer with the product?) only by majorities, in
  :func:`test_complete_calls_the_function_tool_and_answers_with_its_result` and
  :func:`test_the_python_tool_computes_in_the_sandbox`. Every test needs the model to make
  a call, which it was trained to do for every product.
"""

from __future__ import annotations

import builtins
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from pydantic import AfterValidator

import gptoss_magics as gm
from gptoss_magics import display
from gptoss_magics import harmony as H
from gptoss_magics.options import Options
from gptoss_magics.session import current
from gptoss_magics.settings import GptOssSettings
from gptoss_magics.tiny import read_artifact_meta
from gptoss_magics.tiny import tasks as T
from gptoss_magics.tools import (
    LIMIT_TEXT,
    Conversation,
    FunctionTool,
    ToolCall,
    describe_call,
    function_tool,
    run_conversations,
)

pytestmark = pytest.mark.engine

#: greedy, and room for the longest (high effort) chain
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 200}
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="the python tool's sandbox needs bubblewrap")


@pytest.fixture
def trained(engine: dict, fresh_settings: GptOssSettings) -> Iterator[None]:
    """The trained tiny model, asked as it was trained (a fixed date)."""
    if engine["model"] != "tiny":
        pytest.skip(f"the shared engine runs {engine['model']}, not the trained tiny model")
    if "multiply" not in read_artifact_meta()["tasks"]:
        pytest.skip("this tiny model was not trained to call tools (tools/train_tiny.py)")
    fresh_settings.current_date = "2026-03-29"
    yield


def examples(tools: str, seed: int, per_effort: int = 1) -> list[T.Example]:
    """Held-out products (``per_effort`` at each effort) with ``tools`` declared."""
    return T.held_out(per_effort, seed=seed, tasks=("multiply",), tools=tools)


def counted() -> tuple[Callable[..., int], list[tuple[int, int]]]:
    """``multiply`` as the model was trained to see it, and the list of its calls."""
    calls: list[tuple[int, int]] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    return multiply, calls


def operands(text: str) -> tuple[int, int]:
    a, b = (int(n) for n in re.findall(r"\d+", text)[:2])
    return a, b


def assert_ran(call: ToolCall, calls: list[tuple[int, int]]) -> None:
    """``call`` is a successful call of multiply whose result the model read back."""
    assert call.name == "functions.multiply" and call.error is None
    a, b = call.arguments["a"], call.arguments["b"]
    assert (a, b) in calls and call.result == a * b and call.output == str(a * b)


def assert_ended(reply: gm.Reply) -> None:
    """The conversation came to an end by itself: no exception, no interrupt."""
    assert reply.error is None and reply.finish_reason in ("stop", "length")
    assert reply.tool_calls, "the model made no tool call"


def sent_back(reply: gm.Reply, index: int = 0) -> bool:
    """True when the ``index``-th call's output went back to the model, as the tool's
    message, in the conversation the reply records."""
    call = reply.tool_calls[index]
    ids = list(reply.token_ids)
    result = H.tool_result_ids(call.name, call.output)
    return any(ids[i:i + len(result)] == result for i in range(len(ids)))


def _one_digit(value: int) -> int:
    if value > 9:
        raise ValueError("a must be a single digit")
    return value


#: an int that validates only below 10; its JSON schema is a plain integer's (type hints
#: are resolved in the module's namespace, so the alias lives here, not in the test)
OneDigit = Annotated[int, AfterValidator(_one_digit)]


# ---------------------------------------------------------------------- function tools
def test_complete_calls_the_function_tool_and_answers_with_its_result(trained: None) -> None:
    multiply, calls = counted()
    replies = [(ex, gm.complete(ex.user, tools=[multiply], effort=ex.effort, **GREEDY))
               for ex in examples("function", seed=71)]
    for _ex, reply in replies:
        assert_ended(reply)
        assert_ran(reply.tool_calls[0], calls)
        assert sent_back(reply)
        assert reply.provenance["tools"][0]["name"] == "multiply"
        assert reply.provenance["tool_calls"][0]["arguments"] == reply.tool_calls[0].arguments
        assert "1 tool call" in display.footer(reply)
    assert len(calls) == sum(len(r.tool_calls) for _, r in replies)
    # model quality: it asks for the product it was asked for, and answers with it
    asked = sum(tuple(r.tool_calls[0].arguments.values()) == operands(ex.user)
                for ex, r in replies)
    right = sum(T.is_correct(ex, r.final) for ex, r in replies)
    assert asked >= 2 and right >= 2, [(ex.user, r.final, r.tool_calls) for ex, r in replies]


def test_stream_shows_the_call_between_the_rounds(trained: None) -> None:
    multiply, calls = counted()
    ex = examples("function", seed=72)[1]
    pieces = list(gm.stream(ex.user, tools=[multiply], effort=ex.effort, **GREEDY))
    reply = pieces.pop()
    assert isinstance(reply, gm.Reply)
    assert_ended(reply)
    assert_ran(reply.tool_calls[0], calls)
    channels = [c for c, _ in pieces]
    tool = channels.index("tool")
    assert pieces[tool][1] == describe_call(reply.tool_calls[0]) + "\n"
    assert pieces[tool][1].startswith("multiply({") and \
        f"→ {reply.tool_calls[0].result}" in pieces[tool][1]
    assert "analysis" in channels[:tool]  # the round before the call streamed
    assert channels.count("tool") == len(reply.tool_calls)
    assert "".join(t for c, t in pieces if c == "final") == reply.final


def test_the_cell_magic_calls_a_notebook_function(trained: None, ip: InteractiveShell) -> None:
    multiply, calls = counted()
    ex = examples("function", seed=73)[2]
    ip.user_ns.update(multiply=multiply, question=ex.user)
    ip.run_cell_magic("gptoss", f"--tools multiply -o r --effort {ex.effort} -t 0 -n 200",
                      "{question}")
    reply = ip.user_ns["r"]
    assert reply.prompt == ex.user
    assert_ended(reply)
    assert_ran(reply.tool_calls[0], calls)
    data, _ = ip.display_pub.last()
    assert data[display.MIME]["tool_trail"] == display.trail(reply)
    assert "Tool call (1)" in data["text/html"] and "multiply(" in data["text/html"]
    assert ip.user_ns["_"] is reply


# ---------------------------------------------------------------------- the python tool
@needs_bwrap
def test_the_python_tool_computes_in_the_sandbox(trained: None) -> None:
    from gptoss_magics.tools import PythonTool

    replies = [(ex, gm.complete(ex.user, tools=[PythonTool()], effort=ex.effort, **GREEDY))
               for ex in examples("python", seed=74)]
    for _ex, reply in replies:
        assert_ended(reply)
        call = reply.tool_calls[0]
        assert call.name == "python" and call.error is None and sent_back(reply)
        product = re.fullmatch(r"print\((\d+) \* (\d+)\)", call.arguments.strip())
        if product:  # the code the model was trained to write: what the sandbox printed
            assert call.output == f"{int(product[1]) * int(product[2])}\n"  # as printed
    right = sum(T.is_correct(ex, r.final) for ex, r in replies)
    assert right >= 2, [(ex.user, r.final, r.tool_calls) for ex, r in replies]


@needs_bwrap
@pytest.mark.parametrize("answer", ["y", "n"])
def test_approve_asks_before_the_code_runs(trained: None, ip: InteractiveShell,
                                           monkeypatch: pytest.MonkeyPatch,
                                           answer: str) -> None:
    from gptoss_magics.tools.python import REFUSED_TEXT

    asked: list[str] = []

    def fake_input(prompt: str = "") -> str:  # the approver's fallback outside a kernel
        asked.append(prompt)
        return answer

    monkeypatch.setattr(builtins, "input", fake_input)
    ex = examples("python", seed=75)[1]
    ip.run_cell_magic("gptoss", f"--tools python --approve -o r --effort {ex.effort} "
                                "-t 0 -n 200", ex.user)
    reply = ip.user_ns["r"]
    assert_ended(reply)
    assert len(asked) == len(reply.tool_calls)  # asked once per piece of code
    call = reply.tool_calls[0]
    assert call.name == "python" and sent_back(reply)
    if answer == "n":
        assert call.error == "refused by the user" and call.output == REFUSED_TEXT
    else:
        assert call.error is None and call.output != REFUSED_TEXT


# ---------------------------------------------------------------------- failures
def test_arguments_that_fail_validation_go_back_to_the_model(trained: None) -> None:
    """The declaration is the trained one, but the function accepts only a <= 9: the
    model's arguments fail validation, the function never runs, the model reads why."""
    ran: list[int] = []

    def multiply(a: OneDigit, b: int) -> int:
        """Multiply two integers."""
        ran.append(a)
        return a * b

    strict = FunctionTool(multiply)
    assert strict.declaration() == FunctionTool(counted()[0]).declaration()
    ex = examples("function", seed=76)[1]
    reply = gm.complete(ex.user, tools=[strict], effort=ex.effort, **GREEDY)
    assert_ended(reply)
    assert ran == []
    for i, call in enumerate(reply.tool_calls):
        if call.name != "functions.multiply":
            continue
        assert call.error is not None and call.result is None
        assert call.error.startswith("invalid arguments for multiply: a: ")
        assert "single digit" in call.error and call.output == f"Error: {call.error}"
        assert sent_back(reply, i)
    assert reply.provenance["tool_calls"][0]["error"] == reply.tool_calls[0].error


def test_a_raising_tool_is_reported_to_the_model(trained: None) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        raise ConnectionError("the pricing service is down")

    ex = examples("function", seed=77)[0]
    reply = gm.complete(ex.user, tools=[multiply], effort=ex.effort, **GREEDY)
    assert_ended(reply)
    call = reply.tool_calls[0]
    assert call.error == "multiply raised ConnectionError: the pricing service is down"
    assert call.output == f"Error: {call.error}" and call.result is None
    assert sent_back(reply)
    assert reply.provenance["tool_calls"][0]["error"] == call.error
    assert reply.to_dict()["tool_calls"][0]["error"] == call.error
    assert "✗ multiply raised ConnectionError" in display.trail(reply)[0]


def test_a_call_to_an_unregistered_name_gets_an_error(trained: None) -> None:
    """The prompt declares ``multiply`` (the model calls it), but the conversation holds
    only ``product``: the call is refused with the list of the tools there are."""
    product, calls = counted()
    ex = examples("function", seed=78)[1]
    options = Options.resolve(effort=ex.effort, **GREEDY)
    ids = Options.resolve(tools=[counted()[0]], effort=ex.effort).render(ex.user,
                                                                          run_tools=True)
    conv = Conversation(ids, [function_tool(product, name="product")])
    run_conversations(current().engine, [conv], options.sampling())
    assert conv.done and not conv.aborted and conv.calls
    unknown = [c for c in conv.calls if c.name != "functions.product"]
    assert unknown, "the model called only the registered tool"
    for call in unknown:
        assert call.error == (f"there is no tool named {call.name!r}; the tools are: "
                              "functions.product")
        assert call.output == f"Error: {call.error}"
    assert calls == [(c.arguments["a"], c.arguments["b"]) for c in conv.calls
                     if c.name == "functions.product"]
    assert conv.rounds[-1].completion.finish_reason in ("stop", "length")


def test_the_round_limit_flags_the_reply(trained: None) -> None:
    """With ``max_tool_rounds=0`` the model's first call is already one too many: it is
    not run, the model is told to answer now, and the reply is flagged."""
    multiply, calls = counted()
    ex = examples("function", seed=79)[0]
    reply = gm.complete(ex.user, tools=[multiply], effort=ex.effort, max_tool_rounds=0,
                        **GREEDY)
    assert calls == []
    assert reply.tool_limit_hit and not reply.ok
    first = reply.tool_calls[0]
    assert first.error == LIMIT_TEXT.format(n=0) and sent_back(reply)
    assert reply.warning is not None and "max_tool_rounds" in reply.warning
    assert len(reply.tool_calls) <= 2  # a second call ends the conversation
    assert reply.error is None and reply.finish_reason in ("stop", "length")


# ---------------------------------------------------------------------- replay
def test_reproduce_replays_the_recorded_results(trained: None) -> None:
    multiply, calls = counted()
    ex = examples("function", seed=80)[1]
    reply = gm.complete(ex.user, tools=[multiply], effort=ex.effort, **GREEDY)
    assert_ended(reply)
    made = len(calls)
    check = gm.reproduce(reply)
    assert len(calls) == made  # nothing was called again
    assert check.same_calls and check.identical and check.same_weights and check.same_prompt
    assert check.again.final == reply.final
    assert [c.output for c in check.again.tool_calls] == [c.output for c in reply.tool_calls]
    # the recorded output is what the model reads on replay, not a fresh call's result
    saved = reply.to_dict()
    saved["tool_calls"][0]["output"] = "123456"
    altered = gm.reproduce(saved)
    assert len(calls) == made
    assert altered.again.tool_calls[0].output == "123456" and altered.same_calls
    assert not altered.identical or altered.again.final == reply.final


def test_a_cached_map_replays_without_calling_tools(trained: None) -> None:
    multiply, calls = counted()
    rows = pd.DataFrame({"question": [ex.user for ex in examples("function", seed=81)]})
    first = rows.gptoss.map("{question}", tools=[multiply], tool_calls=True, progress=False,
                            **GREEDY)
    s = first.attrs["gptoss"]["summary"]
    assert s["generated"] == len(rows) and s["cached"] == 0
    assert len(calls) == sum(len(t) for t in first["tool_calls"]) > 0
    kept = int(first["error"].isna().sum())  # a row that failed is not cached
    made = len(calls)
    again = rows.gptoss.map("{question}", tools=[multiply], tool_calls=True, progress=False,
                            **GREEDY)
    s = again.attrs["gptoss"]["summary"]
    assert s["cached"] == kept and s["generated"] == len(rows) - kept
    redone = again["tool_calls"][first["error"].notna()]
    assert len(calls) - made == sum(len(t) for t in redone)
    ok = first["error"].isna()
    assert list(again["answer"][ok]) == list(first["answer"][ok])
    assert list(again["tool_calls"][ok]) == list(first["tool_calls"][ok])
    # the cache key covers the tools' schemas: another description is generated again
    other = rows.gptoss.map("{question}", tools=[function_tool(
        multiply, description="Multiply two whole numbers.")], progress=False, **GREEDY)
    assert other.attrs["gptoss"]["summary"]["cached"] == 0
