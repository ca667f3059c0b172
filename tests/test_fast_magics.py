"""The magics' own logic on the scripted engine: argument parsing, templates, formats,
chats, interrupts, displays, %gptoss_map and %gptoss_status (no vLLM)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from pydantic import BaseModel

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import ScriptedEngine
from gptoss_magics.engine.scripted import ScriptedRequest, harmony_completion, user_message
from gptoss_magics.frame import MapJob, MapPlan
from gptoss_magics.magics import Chat
from gptoss_magics.options import OPTION_DOCS, PROMPT_OPTIONS
from gptoss_magics.views import StatusView

MIME = "application/vnd.gptoss.reply+json"


class Review(BaseModel):
    sentiment: str
    stars: int


def text(request: ScriptedRequest) -> str:
    """The prompt a request carried, as text."""
    return H.decode(request.prompt_ids)


def cell(ip: InteractiveShell, line: str, body: str = "Hello") -> gm.Reply:
    ip.run_cell_magic("gptoss", line, body)
    reply = ip.user_ns["_"]
    assert isinstance(reply, gm.Reply)
    return reply


# ---------------------------------------------------------------------- every option flag
#: option -> (value on the magic's line, what the engine must have received)
FLAG_CASES: dict[str, tuple[str, Callable[[ScriptedRequest], bool]]] = {
    "effort": ("high", lambda r: "Reasoning: high" in text(r)),
    "max_tokens": ("7", lambda r: r.sampling.max_tokens == 7),
    "temperature": ("0.25", lambda r: r.sampling.temperature == 0.25),
    "top_p": ("0.5", lambda r: r.sampling.top_p == 0.5),
    "seed": ("3", lambda r: r.sampling.seed == 3),
    "instructions": ("'Answer in French.'",
                     lambda r: "<|start|>developer<|message|># Instructions\n\nAnswer in French."
                               in text(r)),
    "reasoning_budget": ("5", lambda r: r.sampling.reasoning_budget == 5),
    "confidence": ("", lambda r: r.sampling.logprobs is True),
    "choices": ("yes,no", lambda r: r.sampling.choice == ("yes", "no")),
    "regex": ("'[0-9]+'", lambda r: r.sampling.regex == "[0-9]+"),
    "schema": ("Review", lambda r: json.loads(r.sampling.json_schema or "{}").get("title")
               == "Review"),
    "tools": ("lookup", lambda r: "type lookup = (_: {" in text(r)),
}
FLAGS = [(name, flag) for name in PROMPT_OPTIONS for flag in OPTION_DOCS[name].flags]


def lookup(key: str) -> str:
    """Look a key up in the desk's table."""
    return key


def test_every_prompt_option_with_a_flag_has_a_case() -> None:
    assert set(FLAG_CASES) == {name for name, _ in FLAGS}


def _default_request(scripted: ScriptedEngine, ip: InteractiveShell) -> ScriptedRequest:
    cell(ip, "")
    return scripted.requests.pop()


@pytest.mark.parametrize(("name", "flag"), FLAGS, ids=[f for _, f in FLAGS])
def test_each_cell_flag_reaches_the_engine(scripted: ScriptedEngine, ip: InteractiveShell,
                                           name: str, flag: str) -> None:
    value, received = FLAG_CASES[name]
    ip.user_ns.update(Review=Review, lookup=lookup)
    assert not received(_default_request(scripted, ip))  # the default differs
    cell(ip, f"{flag} {value}")
    [request] = scripted.requests
    assert received(request), request


@pytest.mark.filterwarnings("ignore::gptoss_magics.GptOssWarning")  # rows cut or unfit
@pytest.mark.parametrize(("name", "flag"), FLAGS, ids=[f for _, f in FLAGS])
def test_each_map_flag_reaches_the_engine(scripted: ScriptedEngine, ip: InteractiveShell,
                                          name: str, flag: str) -> None:
    value, received = FLAG_CASES[name]
    ip.user_ns.update(Review=Review, lookup=lookup, df=pd.DataFrame({"w": ["river", "stone"]}))
    ip.run_line_magic("gptoss_map", f'df "Say {{w}}" -o out --no-cache {flag} {value}')
    assert len(scripted.requests) >= 2  # one per row (twice with a schema the script fails)
    assert all(received(r) for r in scripted.requests), scripted.requests


def test_unset_options_come_from_the_settings(scripted: ScriptedEngine, ip: InteractiveShell,
                                              fresh_settings: Any) -> None:
    fresh_settings.effort = "low"
    fresh_settings.temperature = 0.3
    fresh_settings.reasoning_budget = 9
    ip.run_line_magic("config", "GptOssSettings.max_tokens = 6")  # as %config does it
    reply = cell(ip, "")
    [request] = scripted.requests
    assert "Reasoning: low" in text(request) and reply.effort == "low"
    assert (request.sampling.max_tokens, request.sampling.temperature,
            request.sampling.reasoning_budget) == (6, 0.3, 9)
    cell(ip, "-b none --seed none -n 8")  # 'none' turns a setting off for one cell
    assert (scripted.requests[-1].sampling.reasoning_budget,
            scripted.requests[-1].sampling.seed,
            scripted.requests[-1].sampling.max_tokens) == (None, None, 8)
    assert fresh_settings.max_tokens == 6 and fresh_settings.reasoning_budget == 9


# ---------------------------------------------------------------------- bad flags
@pytest.mark.parametrize(("line", "message"), [
    ("--effort extreme", r"argument --effort/-e: invalid choice: 'extreme'"),
    ("-e", "expected one argument"),
    ("--max-tokens lots", "invalid int value: 'lots'"),
    ("--max-tokens 0", "max_tokens must be a whole number from 1, not 0"),
    ("--temperature -1", "temperature must be a number, 0 or more"),
    ("--top-p 1.5", r"top_p must be a number in \(0, 1\]"),
    ("--seed -1", r"seed must be a whole number from 0 to 2\*\*63-1"),
    ("--seed abc", "invalid seed value: 'abc'"),
    ("--reasoning-budget -3", "invalid token count value: '-3'"),
    ("--reasoning-budget lots", "invalid token count value: 'lots'"),
    ("--choices ,", "invalid label list value"),
    ("--choices a,a", "choices must be distinct"),
    ("--regex '('", "regex does not compile"),
    ("--schema Nope", "--schema Nope: no such variable in the notebook"),
    ("--choices a,b --regex x", "give at most one of choices, schema and regex"),
    ("-o 1x", "-o needs a variable name, not '1x'"),
    ("--chat 'not a name'", "--chat needs a variable name"),
    ("--bogus", "unrecognized arguments: --bogus"),
    ("--format yaml", "invalid choice: 'yaml'"),
    ("'unbalanced", "cannot parse the options"),
])
def test_bad_flags_are_one_line_usage_errors(scripted: ScriptedEngine, ip: InteractiveShell,
                                             line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        ip.run_cell_magic("gptoss", line, "Hello")
    assert len(str(info.value).splitlines()) == 1
    assert scripted.requests == []  # refused before anything was generated


def test_an_empty_cell_is_refused(scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="The cell is empty"):
        ip.run_cell_magic("gptoss", "", "  \n ")
    assert scripted.requests == []


def test_help_shows_every_flag(ip: InteractiveShell) -> None:
    from gptoss_magics.magics import _MAP_OPTIONS

    cell_doc = ip.find_cell_magic("gptoss").__doc__
    map_doc = ip.find_line_magic("gptoss_map").__doc__
    for name in PROMPT_OPTIONS:
        for flag in OPTION_DOCS[name].flags:
            assert flag in cell_doc, flag
    for name in _MAP_OPTIONS:
        for flag in OPTION_DOCS[name].flags:
            assert flag in map_doc, flag
    for flag in ("--show-reasoning", "--hide-reasoning", "--chat", "--format", "--output",
                 "--no-template"):
        assert flag in cell_doc, flag
    for flag in ("--out", "--no-cache", "--background", "--dry-run"):
        assert flag in map_doc, flag
    assert "--tensor-parallel-size" in ip.find_line_magic("gptoss_load").__doc__


# ---------------------------------------------------------------------- templates
def test_the_template_resolves_names_attributes_keys_and_escapes(
        scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    class Filing:
        text = "Revenue fell 12%."

    ip.user_ns.update(filing=Filing(), meta={"ticker": "ACME"}, n=3)
    reply = cell(ip, "-o r", "Summarise {filing.text} for {meta[ticker]} in {n} lines as "
                             "{{json}}.")
    sent = "Summarise Revenue fell 12%. for ACME in 3 lines as {json}."
    assert user_message(scripted.requests[0].prompt_ids) == sent
    assert reply.prompt == sent and reply.final == f"echo: {sent}"
    assert ip.user_ns["r"] is reply


def test_no_template_sends_the_cell_as_it_is(scripted: ScriptedEngine,
                                             ip: InteractiveShell) -> None:
    cell(ip, "--no-template", "  Keep {undefined} and {{this}}  ")
    assert user_message(scripted.requests[0].prompt_ids) == "Keep {undefined} and {{this}}"


def test_a_missing_name_fails_before_any_generation(scripted: ScriptedEngine,
                                                    ip: InteractiveShell) -> None:
    ip.user_ns["filing"] = "x"
    with pytest.raises(UsageError, match=r"\{filng\}.*did you mean 'filing'"):
        ip.run_cell_magic("gptoss", "", "Summarise {filng}")
    assert scripted.requests == []


# ---------------------------------------------------------------------- outputs
def test_the_reply_goes_to_underscore_and_to_o(scripted: ScriptedEngine,
                                               ip: InteractiveShell) -> None:
    reply = cell(ip, "-o answer", "What is 2 + 2?")
    assert ip.user_ns["answer"] is reply
    assert reply.final == "echo: What is 2 + 2?" and reply.analysis == "scripted reasoning"
    assert reply.model == "scripted" and reply.ok


def test_format_code_puts_the_answer_in_the_next_cell(scripted: ScriptedEngine,
                                                      ip: InteractiveShell) -> None:
    scripted.enqueue("Here it is:\n```python\nprint(1)\n```\nDone.")
    cell(ip, "--format code", "Write code")
    assert ip.rl_next_input == "print(1)"
    scripted.enqueue("x = 2")
    cell(ip, "-f code", "Write code")
    assert ip.rl_next_input == "x = 2"


def test_format_json_warns_only_on_invalid_json(scripted: ScriptedEngine,
                                                ip: InteractiveShell) -> None:
    scripted.enqueue("this is not json")
    with pytest.warns(gm.GptOssWarning, match="not valid JSON.*kept as text"):
        cell(ip, "--format json")
    scripted.enqueue('```json\n{"a": 1}\n```')
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        reply = cell(ip, "--format json")
    assert not [w for w in seen if "not valid JSON" in str(w.message)]
    assert reply.json() == {"a": 1}


def test_the_final_display_is_the_full_bundle(scripted: ScriptedEngine,
                                              ip: InteractiveShell) -> None:
    reply = cell(ip, "--show-reasoning", "Hi")
    data, meta = ip.display_pub.last()  # type: ignore[attr-defined]
    assert {"text/plain", "text/markdown", "text/html", MIME} <= set(data)
    assert "--- reasoning ---\nscripted reasoning\n--- answer ---\necho: Hi" in \
        data["text/plain"]
    assert "<details open>" in data["text/markdown"]
    assert data[MIME]["final"] == "echo: Hi" and data[MIME]["analysis"] == "scripted reasoning"
    assert meta["gptoss"]["model"] == "scripted"
    assert meta["gptoss"]["weights_fingerprint"] == "none"
    assert meta["gptoss"]["completion_tokens"] == reply.completion_tokens
    cell(ip, "--hide-reasoning", "Hi")
    data, _ = ip.display_pub.last()  # type: ignore[attr-defined]
    assert "[reasoning: " in data["text/plain"] and "scripted reasoning" not in \
        data["text/plain"]
    cell(ip, "--format text", "Hi")
    data, _ = ip.display_pub.last()  # type: ignore[attr-defined]
    assert "text/markdown" not in data and "<pre" in data["text/html"]


@pytest.mark.scripted(tokens_per_step=1)
def test_the_answer_streams_into_the_display(scripted: ScriptedEngine,
                                             ip: InteractiveShell) -> None:
    reply = cell(ip, "", "Stream me")
    updates = ip.display_pub.updates()  # type: ignore[attr-defined]
    *partial, final = updates
    assert partial, "nothing was shown before the reply ended"
    assert all('class="gptoss-footer"' not in u["text/html"] for u in partial)
    assert "Reasoning…" in partial[0]["text/html"]  # the reasoning streams first
    assert 'class="gptoss-footer"' in final["text/html"] and final[MIME]["final"] == reply.final


@pytest.mark.scripted(tokens_per_step=1, step_s=0.005)
def test_an_interrupt_keeps_the_partial_reply_and_the_engine_works(
        scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    scripted.enqueue(("thinking " * 200, "never reached"))
    ip.display_pub.interrupt_at_first_text = True  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt, match="partial reply is kept in _ and partial"):
        ip.run_cell_magic("gptoss", "-o partial --chat conv", "Think long")
    partial = ip.user_ns["partial"]
    assert ip.user_ns["_"] is partial
    assert partial.finish_reason == "abort" and partial.truncated
    assert partial.analysis.startswith("thinking") and partial.final == ""
    assert 0 < partial.completion_tokens < 200
    assert scripted.in_flight == 0  # the request was aborted
    assert len(ip.user_ns["conv"]) == 0  # an interrupted turn is not part of the chat
    data, _ = ip.display_pub.last()  # type: ignore[attr-defined]
    assert "interrupted" in data["text/plain"]
    assert cell(ip, "", "Still alive?").final == "echo: Still alive?"


def test_a_chat_keeps_its_history_without_old_reasoning(scripted: ScriptedEngine,
                                                        ip: InteractiveShell) -> None:
    first = cell(ip, "--chat conv", "Uppercase the word: river")
    cell(ip, "--chat conv", "And garden?")
    conv = ip.user_ns["conv"]
    assert isinstance(conv, Chat) and len(conv) == 2
    assert [t.user for t in conv.turns] == ["Uppercase the word: river", "And garden?"]
    one, two = (text(r) for r in scripted.requests)
    assert one.count("<|start|>user") == 1  # the first turn had no history
    turn = ("<|start|>user<|message|>Uppercase the word: river<|end|><|start|>assistant"
            f"<|channel|>final<|message|>{first.final}<|end|>")
    assert turn in two and "scripted reasoning" not in two
    assert two.endswith("<|start|>user<|message|>And garden?<|end|><|start|>assistant")
    ip.user_ns["taken"] = 3
    with pytest.raises(UsageError, match="taken holds a int, not a chat"):
        ip.run_cell_magic("gptoss", "--chat taken", "hi")


def test_the_terminal_gets_readable_text(scripted: ScriptedEngine,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from gptoss_magics.live import stream_to_terminal
    from gptoss_magics.prompting import StreamHandle

    stream_to_terminal(StreamHandle("What is 2 + 3?"), True)
    out = capsys.readouterr().out
    assert "--- reasoning ---\nscripted reasoning\n--- answer ---\necho: What is 2 + 3?" in out
    assert out.splitlines()[-1].startswith("-- scripted · effort")
    stream_to_terminal(StreamHandle("Hidden?", max_tokens=12), False)
    out = capsys.readouterr().out
    assert "scripted reasoning" not in out and "[warning: hit max_tokens" in out


# ---------------------------------------------------------------------- status, load, panel
def test_the_status_magic(scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    cell(ip, "", "count my tokens")
    st = ip.run_line_magic("gptoss_status", "")
    assert isinstance(st, StatusView) and st["model"] == "scripted" and st["state"] == "ready"
    assert st["tokens_generated"] == scripted.tokens_generated > 0
    shown = repr(st)
    assert "model" in shown and "scripted" in shown and "in this process" in shown
    assert f"{scripted.tokens_generated:,}" in shown
    assert "<table class='gptoss-status'>" in st._repr_html_()
    with pytest.raises(UsageError, match="takes no arguments"):
        ip.run_line_magic("gptoss_status", "now")
    with pytest.raises(UsageError, match="takes no arguments"):
        ip.run_line_magic("gptoss_unload", "now")


def test_a_status_view_without_a_model_and_with_background_work() -> None:
    view = StatusView({"state": "none", "model": None, "rss_bytes": 3 * 2**20,
                       "defaults": {"effort": "low"},
                       "background": [{"kind": "map", "rows": 1000, "rows_done": 12}]})
    lines = repr(view).splitlines()
    assert lines[0].split() == ["state", "none"] and lines[1].split() == ["model", "-"]
    assert any(line.split() == ["background", "map", "12/1,000", "rows"] for line in lines)
    assert any(line.split()[-2:] == ["3", "MiB"] for line in lines)
    assert "effort=low" in repr(view) and "device" not in repr(view)


def test_load_errors_are_one_line(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="unexpected argument 'stray'"):
        ip.run_line_magic("gptoss_load", "tiny stray")
    with pytest.raises(UsageError, match="No model folder") as info:
        ip.run_line_magic("gptoss_load", "/no/such/folder")
    assert len(str(info.value).splitlines()) == 1


def test_the_panel_magic_runs_its_template(scripted: ScriptedEngine, ip: InteractiveShell,
                                           fresh_settings: Any) -> None:
    from gptoss_magics.widgets import EffortPanel

    ip.user_ns["a"] = 17
    panel = ip.run_line_magic("gptoss_panel", "What is {a} + 25?")
    try:
        assert isinstance(panel, EffortPanel) and panel.prompt == "What is 17 + 25?"
        panel.wait()
        assert panel.reply is not None and panel.reply.final == "echo: What is 17 + 25?"
    finally:
        panel.cancel()
        panel.close()
    bare = ip.run_line_magic("gptoss_panel", "")
    assert bare.prompt is None
    bare.close()


# ---------------------------------------------------------------------- %gptoss_map
WORDS = pd.DataFrame({"w": ["river", "stone", "river"]}, index=["a", "b", "c"])


def test_the_map_magic_writes_the_column(scripted: ScriptedEngine, ip: InteractiveShell,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["df"] = WORDS.copy()
    assert ip.run_line_magic("gptoss_map", 'df "Say {w}" -o said') is None
    df = ip.user_ns["df"]
    assert list(df["said"]) == ["echo: Say river", "echo: Say stone", "echo: Say river"]
    assert len(scripted.requests) == 2
    out = capsys.readouterr().out
    assert out.startswith("said: 3 rows, 2 generated, 0 from the cache, 0 missing, "
                          "0 truncated, 0 failed (")
    ip.run_line_magic("gptoss_map", 'df "Say {w}" -o again')
    assert len(scripted.requests) == 2  # from the cache
    assert "again: 3 rows, 0 generated, 2 from the cache" in capsys.readouterr().out
    ip.run_line_magic("gptoss_map", 'df "Say {w}" -o fresh --no-cache')
    assert len(scripted.requests) == 4


def test_map_magic_columns_for_schema_reasoning_usage_confidence(
        scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    scripted.script = lambda ids, s: harmony_completion('{"sentiment": "good", "stars": 4}')
    ip.user_ns.update(df=WORDS.copy(), Review=Review)
    ip.run_line_magic("gptoss_map", 'df "Rate {w}" -o r --schema Review --reasoning --usage '
                                    "--confidence")
    df = ip.user_ns["df"]
    assert [c for c in df.columns if c.startswith("r_")] == [
        "r_sentiment", "r_stars", "r_prompt_tokens", "r_reasoning_tokens",
        "r_completion_tokens", "r_confidence", "r_reasoning", "r_truncated", "r_error"]
    assert list(df["r_stars"]) == [4, 4, 4] and str(df["r_stars"].dtype) == "Int64"
    assert (df["r_reasoning"] == "scripted reasoning").all()
    assert df["r_error"].isna().all() and df["r_confidence"].between(0, 1).all()


def test_map_magic_examples_come_from_a_variable(scripted: ScriptedEngine,
                                                 ip: InteractiveShell) -> None:
    shots = pd.DataFrame({"w": ["tiger"], "answer": ["TIGER"]})
    ip.user_ns.update(df=WORDS.copy(), shots=shots)
    ip.run_line_magic("gptoss_map", 'df "Upper {w}" -o up --examples shots')
    turn = ("<|start|>user<|message|>Upper tiger<|end|><|start|>assistant<|channel|>final"
            "<|message|>TIGER<|end|>")
    assert all(turn in text(r) for r in scripted.requests)
    with pytest.raises(UsageError, match="--examples nothing: no such variable"):
        ip.run_line_magic("gptoss_map", 'df "{w}" -o x --examples nothing')


def test_map_magic_dry_run_generates_nothing(scripted: ScriptedEngine,
                                             ip: InteractiveShell) -> None:
    ip.user_ns["df"] = WORDS.copy()
    plan = ip.run_line_magic("gptoss_map", 'df "Say {w}" -o said -n 8 --dry-run')
    assert isinstance(plan, MapPlan)
    assert (plan.rows, plan.distinct_prompts, plan.cached, plan.to_generate) == (3, 2, 0, 2)
    assert plan.most_tokens == 16
    assert scripted.requests == [] and "said" not in ip.user_ns["df"].columns


def test_map_magic_in_the_background(scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    ip.user_ns["df"] = WORDS.copy()
    job = ip.run_line_magic("gptoss_map", 'df "Say {w}" -o said --background')
    assert isinstance(job, MapJob)
    result = job.result(timeout=60)
    assert list(result) == ["echo: Say river", "echo: Say stone", "echo: Say river"]
    assert "said" not in ip.user_ns["df"].columns  # assigning it is the caller's move
    assert {r.priority for r in scripted.requests} == {MapJob.PRIORITY}


def test_map_magic_on_a_series(scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    ip.user_ns["s"] = pd.Series(["x", None], index=[4, 5])
    with pytest.warns(gm.GptOssWarning, match="1 of 2 rows had missing values"):
        ip.run_line_magic("gptoss_map", 's "Say {}" -o said')
    said = ip.user_ns["said"]
    assert said[4] == "echo: Say x" and pd.isna(said[5])


@pytest.mark.parametrize(("line", "message"), [
    ('nope "{w}" -o x', "'nope' is not a DataFrame or Series in this notebook"),
    ('number "{w}" -o x', "'number' is not a DataFrame or Series"),
    ('df "{w}"', "the following arguments are required: --out/-o"),
    ('df "{word}" -o x', "no column 'word' is defined. The columns are: 'w'"),
    ('df "{w}" -o x --schema Missing', "--schema Missing: no such variable"),
    ('df "{w}" -o x --effort extreme', "invalid choice: 'extreme'"),
    ('df "{w}" -o x --choices a --regex b', "give at most one of"),
])
def test_map_magic_bad_arguments(scripted: ScriptedEngine, ip: InteractiveShell, line: str,
                                 message: str) -> None:
    ip.user_ns.update(df=WORDS.copy(), number=3)
    with pytest.raises(UsageError, match=message) as info:
        ip.run_line_magic("gptoss_map", line)
    assert len(str(info.value).splitlines()) == 1
    assert scripted.requests == []


def test_an_engine_without_reasoning_budgets_says_so(scripted: ScriptedEngine,
                                                     ip: InteractiveShell) -> None:
    scripted.info["reasoning_budget"] = False  # as a vLLM without thinking_token_budget
    with pytest.raises(gm.MissingDependencyError, match=r"no reasoning budgets.*upgrade vllm"):
        gm.complete("hi", reasoning_budget=4)
    assert scripted.requests == []
    assert gm.complete("hi", reasoning_budget=None).final == "echo: hi"


def test_an_engine_refusal_in_a_cell_is_a_usage_error(scripted: ScriptedEngine,
                                                      ip: InteractiveShell) -> None:
    scripted.info["reasoning_budget"] = False
    with pytest.raises(UsageError, match=r"no reasoning budgets.*upgrade vllm"):
        ip.run_cell_magic("gptoss", "-b 4", "hi")
    scripted.info["reasoning_budget"] = True
    scripted.close()
    with pytest.raises(UsageError, match="unloaded"):
        ip.run_cell_magic("gptoss", "", "hi")
