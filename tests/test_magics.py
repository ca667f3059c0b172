"""The magics, in a real IPython shell, on the real tiny engine."""

from __future__ import annotations

import html
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics.magics import Chat
from gptoss_magics.options import Options
from gptoss_magics.session import current

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _real_engine(engine: dict) -> None:
    """Every test here runs on the real tiny engine (``ip`` is conftest's fresh shell)."""


def cell(ip: InteractiveShell, line: str, body: str) -> gm.Reply:
    ip.run_cell_magic("gptoss", line, body)
    reply = ip.user_ns["_"]
    assert isinstance(reply, gm.Reply)
    return reply


def last_display(ip: InteractiveShell) -> tuple[dict[str, Any], dict[str, Any]]:
    return ip.display_pub.last()  # type: ignore[attr-defined,no-any-return]


def test_template_resolves_names_attributes_keys_and_escapes(ip: InteractiveShell) -> None:
    class Filing:
        text = "Revenue fell 12%."

    ip.user_ns.update(filing=Filing(), meta={"ticker": "ACME"})
    reply = cell(ip, "--max-tokens 4 -o r",
                 "Summarise {filing.text} for {meta[ticker]} as {{json}}.")
    assert reply.prompt == "Summarise Revenue fell 12%. for ACME as {json}."
    assert ip.user_ns["r"] is reply
    assert reply.provenance["prompt_sha256"]


def test_missing_name_fails_before_any_generation(ip: InteractiveShell) -> None:
    ip.user_ns["filing"] = "x"
    before = gm.status()["tokens_generated"]
    with pytest.raises(UsageError, match=r"\{filng\}.*did you mean 'filing'"):
        ip.run_cell_magic("gptoss", "", "Summarise {filng}")
    assert gm.status()["tokens_generated"] == before


def test_each_argument_reaches_the_reply(ip: InteractiveShell) -> None:
    reply = cell(ip, "--effort high --max-tokens 7 --temperature 0 --seed 3 "
                     "--instructions 'Answer in French.'", "Hello")
    assert reply.effort == "high" and reply.completion_tokens == 7
    sampling = reply.provenance["sampling"]
    assert sampling["temperature"] == 0 and sampling["seed"] == 3
    assert reply.provenance["instructions"] == "Answer in French."
    again = cell(ip, "-e high -n 7 -t 0 -s 3 -i 'Answer in French.'", "Hello")
    assert again.token_ids == reply.token_ids


def test_reasoning_flags_and_formats(ip: InteractiveShell) -> None:
    cell(ip, "-n 4 --show-reasoning", "Hi")
    data, meta = last_display(ip)
    assert {"text/plain", "text/markdown", "text/html",
            "application/vnd.gptoss.reply+json"} <= set(data)
    assert meta["gptoss"]["model"] == gm.status()["model"]
    assert meta["gptoss"]["weights_fingerprint"].startswith("sha256:")
    assert meta["gptoss"]["completion_tokens"] == 4
    cell(ip, "-n 4 --format text", "Hi")
    data, _ = last_display(ip)
    assert "text/markdown" not in data and "<pre" in data["text/html"]


def test_format_code_puts_the_answer_in_a_new_cell(ip: InteractiveShell,
                                                    engine: dict) -> None:
    reply = cell(ip, "-n 100 -t 0 --format code", "Uppercase the word: river")
    assert reply.final and ip.rl_next_input == reply.final.strip()
    if engine["model"] == "tiny":
        assert ip.rl_next_input == "RIVER"


def test_format_json_warns_on_invalid_json(ip: InteractiveShell) -> None:
    import warnings

    with pytest.warns(gm.GptOssWarning, match="not valid JSON"):
        cell(ip, "-n 100 -t 0 --format json", "Uppercase the word: river")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cell(ip, "-n 200 -t 0 --format json", "What is 17 + 25?")  # 42 is valid JSON
    assert not [w for w in seen if "not valid JSON" in str(w.message)]


def test_streaming_updates_the_display_before_generation_ends(ip: InteractiveShell) -> None:
    reply = cell(ip, "--max-tokens 300 --effort high", "What is 38 + 47?")
    *partial, final = ip.display_pub.updates()  # type: ignore[attr-defined]
    # the text was shown while it was generated: updates without the footer came first
    shown = [u for u in partial if 'class="gptoss-footer"' not in u["text/html"]]
    assert shown and "Reasoning…" in shown[0]["text/html"]
    assert reply.analysis and html.escape(reply.analysis[:8]) in shown[-1]["text/html"]
    assert 'class="gptoss-footer"' in final["text/html"]
    assert reply.final in final["text/plain"]


def test_interrupt_keeps_what_was_streamed_and_the_engine_works(ip: InteractiveShell) -> None:
    ip.display_pub.interrupt_at_first_text = True  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt, match="partial reply is kept"):
        ip.run_cell_magic("gptoss", "--max-tokens 4000 --effort high -o partial",
                          "What is 38 + 47?")
    partial = ip.user_ns["partial"]
    assert ip.user_ns["_"] is partial
    assert partial.finish_reason == "abort" and partial.truncated
    assert partial.completion_tokens > 0  # stopped at the first text, not at 4000 tokens
    assert partial.final or partial.analysis  # the text streamed so far is kept
    assert current().engine.in_flight == 0  # the request was aborted
    final_display, _ = last_display(ip)
    assert "interrupted" in final_display["text/plain"]
    reply = cell(ip, "-n 5", "Still alive?")
    assert reply.completion_tokens == 5 and reply.finish_reason == "length"


def test_chat_keeps_history_without_old_reasoning(ip: InteractiveShell, engine: dict) -> None:
    first = cell(ip, "--chat conv -n 100 -t 0", "Uppercase the word: river")
    assert first.final and first.analysis
    second = cell(ip, "--chat conv -n 100 -t 0", "Convert to uppercase: garden")
    conv = ip.user_ns["conv"]
    assert isinstance(conv, Chat) and len(conv) == 2
    assert [t.user for t in conv.turns] == ["Uppercase the word: river",
                                            "Convert to uppercase: garden"]
    # the second prompt held the first turn: question and final answer, not the reasoning
    with_history = Options.resolve(temperature=0).render(
        "Convert to uppercase: garden", [gm.Turn("Uppercase the word: river", first.final)])
    assert second.prompt_tokens == len(with_history)
    if engine["model"] == "tiny":  # trained on chats: it answers the last question
        assert (first.final, second.final) == ("RIVER", "GARDEN")


def test_status_magic(ip: InteractiveShell) -> None:
    st = ip.run_line_magic("gptoss_status", "")
    assert st["model"] == gm.status()["model"] and st["model"] in repr(st)
    assert "<table" in st._repr_html_()


def test_load_errors_are_one_line(ip: InteractiveShell, tmp_path: Any) -> None:
    with pytest.raises(UsageError, match="already loaded"):
        ip.run_line_magic("gptoss_load", "tiny")
    with pytest.raises(UsageError, match="unexpected argument"):
        ip.run_line_magic("gptoss_load", "tiny stray")


def test_config_magic_changes_the_defaults(ip: InteractiveShell, fresh_settings: Any) -> None:
    ip.run_line_magic("config", "GptOssSettings.max_tokens = 6")
    assert cell(ip, "", "Hello").completion_tokens == 6


def test_terminal_streams_readable_text(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from gptoss_magics import live

    monkeypatch.setattr(live, "in_terminal", lambda: True)
    reply = cell(ip, "-n 12 --show-reasoning", "What is 2 + 3?")
    out = capsys.readouterr().out
    assert reply.final.strip() in out
    assert "tok/s" in out.splitlines()[-1]  # the footer
    assert not [e for e in ip.display_pub.events if e[3]]  # no rich display updates
