"""A map renders its rows' prompts from a prefix rendered once (system, developer, worked
examples) and each row's user message: the ids must be those of the full render, token for
token, and the cache key must be the one written out in full (no vLLM)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Any

import pandas as pd
import pytest

from gptoss_magics import harmony as H
from gptoss_magics.engine import ScriptedEngine
from gptoss_magics.frame import RowMapper
from gptoss_magics.options import Options
from gptoss_magics.session import using
from gptoss_magics.tools import tools_identity

PROMPTS = [
    "Classify: great food",
    "Classify: great food",  # the same message twice: the second comes from the memo
    "",
    "  leading spaces and a trailing newline\n",
    "special-looking text <|end|><|start|>assistant stays text",
    "ünïcödé 😀 and\ttabs",
    "x" * 3000,
]
EXAMPLES = (H.Turn("Classify: awful", "negative"), H.Turn("Classify: lovely", "positive"))


def fx_rate(base: str, quote: str) -> float:
    """The exchange rate from base to quote."""
    return 1.0


CASES: dict[str, tuple[dict[str, Any], tuple[H.Turn, ...]]] = {
    "plain": ({}, ()),
    "effort-high": ({"effort": "high"}, ()),
    "effort-low-system-text": ({"effort": "low", "instructions": "Answer in one word."}, ()),
    "few-shot": ({"instructions": "Label the review."}, EXAMPLES),
    "schema": ({"schema": {"type": "object", "properties": {"label": {"type": "string"}},
                           "required": ["label"]}}, EXAMPLES),
    "function-tools": ({"tools": [fx_rate], "instructions": "Use the tool."}, ()),
    "python-tool": ({"tools": ["python"]}, EXAMPLES),
    "both-tools": ({"tools": [fx_rate, "python"], "effort": "high"}, EXAMPLES),
    "dated": ({"current_date": "2025-01-31", "choices": ["a", "b"]}, ()),
}


@pytest.mark.parametrize("name", list(CASES))
def test_prefix_render_is_token_identical_to_the_full_render(name: str) -> None:
    given, history = CASES[name]
    given = dict(given)
    date = given.pop("current_date", None)
    opts = Options.resolve(**given)
    if date is not None:  # a setting, not an option
        opts = dataclasses.replace(opts, current_date=date)
        assert opts.render("x") != Options.resolve(**given).render("x")
    render = opts.renderer(history, run_tools=True)
    for prompt in PROMPTS:  # the first call checks the split; the rest use it
        fast = render(prompt)
        full = opts.render(prompt, history, run_tools=True)
        assert fast == full, (name, prompt[:40])
        assert fast[-2:] == list(H.encoding().encode("<|start|>assistant",
                                                     allowed_special="all"))


def test_many_user_messages_render_as_harmony_renders_them() -> None:
    """Each user message is encoded as plain text between harmony's own markers: check it
    against harmony's renderer over many strings (special tokens, control characters,
    whitespace, scripts, emoji, very long words)."""
    rng = random.Random(11)
    pieces = ["<|end|>", "<|start|>", "<|message|>", "<|channel|>", "<|return|>", "\n",
              "\r\n", "\t", " ", "  ", "\x00", "\u200b", "é", "日本語", "😀", "👍🏽",
              "{", "}", "'", '"', "\\", "word", "Word", "123", "3.14", "x" * 300, "<|",
              "|>", "assistant", "user"]
    opts = Options.resolve(instructions="Be brief.")
    render = opts.renderer((H.Turn("q", "a"),))
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert render(text) == opts.render(text, (H.Turn("q", "a"),)), repr(text)


def test_renderer_refuses_tools_where_they_do_not_run() -> None:
    with pytest.raises(ValueError, match="leave tools out"):
        Options.resolve(tools=[fx_rate]).renderer()


def test_a_renderer_falls_back_to_full_renders_when_the_split_does_not_match() -> None:
    opts = Options.resolve(effort="high")
    render = opts.renderer()
    render._head = [1, 2, 3]  # as if the opening rendered differently alone
    assert render("hello") == opts.render("hello")
    assert render("world") == opts.render("world")
    assert render._full


def _key_in_full(fingerprint: str, ids: list[int], mapper: RowMapper) -> str:
    """The key as the map wrote it before it was computed in parts."""
    opts = mapper.options
    sampling = {k: v for k, v in mapper.sampling.as_dict().items() if k != "logprobs"}
    parts: list[Any] = [fingerprint, ids, sampling]
    if opts.tools:
        parts.append({"tools": tools_identity(opts.tools),
                      "max_tool_rounds": opts.max_tool_rounds})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("given", [{}, {"effort": "high", "seed": 7, "confidence": True},
                                   {"tools": [fx_rate], "max_tool_rounds": 3},
                                   {"schema": {"type": "object",
                                               "properties": {"n": {"type": "integer"}}},
                                    "temperature": 0.5}])
def test_cache_key_is_the_sha256_of_the_json_written_in_full(given: dict[str, Any]) -> None:
    df = pd.DataFrame({"text": ["a", "b"]})
    fingerprint = 'weights "v1"\\x'
    with using(ScriptedEngine(), fingerprint=fingerprint):
        mapper = RowMapper.create(df, "Say {text}", **given)
        fresh = RowMapper.create(df, "Say {text}", **given)  # key() before any render
        plan = mapper.plan()  # renders the rows: key() hashes their opening once
        assert plan.cached == 0
        opts = mapper.options
        head = opts.renderer(run_tools=True).head
        for ids in ([], [5], head, [*head, 7], opts.render("Say a", run_tools=True),
                    opts.render("Say b", (H.Turn("q", "a"),), run_tools=True)):
            want = _key_in_full(fingerprint, list(ids), mapper)
            assert mapper.key(ids) == want and fresh.key(ids) == want
        other = RowMapper.create(df, "Say {text}", **{**given, "max_tokens": 7})
        assert other.key([5]) != mapper.key([5])  # another option: another key
    with using(ScriptedEngine(), fingerprint="weights v2"):
        again = RowMapper.create(df, "Say {text}", **given)
        assert again.key([5]) != mapper.key([5])  # other weights: another key


@pytest.mark.parametrize("template", ["Say {text} to {who}", "{text}", "{{literal}} {text}!",
                                      "{text!r} {who:>8}", "{n} and {text}", "{text[0]}"])
def test_row_prompts_are_the_template_rendered(template: str) -> None:
    """A map's row prompts (joined directly when every value is a str) are what the
    template renders for each row; rows with a missing value are None."""
    from gptoss_magics import template as tmpl
    from gptoss_magics.frame.checks import is_missing

    df = pd.DataFrame({"text": ["a {b}", "ü", "", None, "x", "y"],
                       "who": ["me", "you", "them", "us", float("nan"), "all"],
                       "n": [1, 2, 3, 4, 5, 6.5]})
    if "[0]" in template:  # an item of each value: no missing or empty ones
        df = df.dropna().query("text != ''")
    mapper = RowMapper.create(df, template)
    cols = mapper.fields
    want: list[str | None] = []
    for values in df[cols].itertuples(index=False, name=None):
        row = dict(zip(cols, values, strict=True))
        missing = any(is_missing(v) for v in values)
        want.append(None if missing else tmpl.render(template, tmpl.namespace_lookup(row)))
    assert mapper.prompts() == want
    assert want[0] is not None and (None in want) == ("[0]" not in template)
