"""Holding under bad input, bad disks and failures mid-run, on the scripted engine (no vLLM).

* every surface refuses a bad option value with one line naming the option, before any
  request reaches the engine, and the engine answers correctly afterwards;
* a row the engine refused or failed is never served from the result cache;
* an audit log that cannot be written fails before generating, and one that breaks
  mid-run costs a warning, never an answer;
* a result cache that fills up, is read-only or breaks mid-map never loses a row, and
  any exception mid-map aborts what is still running;
* the note of an interrupted map counts what is on disk.

The same questions on the real vLLM engine are in ``test_robustness.py``.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError

import gptoss_magics as gm
from gptoss_magics import audit
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion
from gptoss_magics.errors import GptOssError, GptOssWarning, StorageError
from gptoss_magics.frame import ResultCache, RowMapper, RowResult
from gptoss_magics.session import using
from gptoss_magics.settings import settings

QUESTION = "What is 17 + 25?"
ECHO = f"echo: {QUESTION}"  # what the scripted engine answers
BIG = 2**64  # past the engine's 64-bit signed seed


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path) -> Iterator[Path]:
    """A fresh cache folder and no audit log for each test; the settings are put back."""
    s = settings()
    saved = {n: getattr(s, n) for n in s.trait_names() if s.trait_metadata(n, "config")}
    s.cache_dir = str(tmp_path / "cache")
    s.audit_log = ""
    yield tmp_path / "cache"
    for name, value in saved.items():
        setattr(s, name, value)


@contextlib.contextmanager
def serving(engine: ScriptedEngine) -> Iterator[ScriptedEngine]:
    """Serve ``engine`` as the session's model, then close it."""
    try:
        with using(engine):
            yield engine
    finally:
        engine.close()


@pytest.fixture
def eng() -> Iterator[ScriptedEngine]:
    with serving(ScriptedEngine()) as engine:
        yield engine


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """An IPython shell with the magics, and a few notebook variables."""
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("gptoss_magics")
    names = {"df": frame(), "dup": pd.DataFrame([["a", "b"]], columns=["q", "q"]),
             "ser": pd.Series(["a", "b"]), "five": 5,
             "mi": pd.DataFrame([["a", "b"]],
                                columns=pd.MultiIndex.from_tuples([("q", "x"), ("q", "y")]))}
    ip.user_ns.update(names)
    yield ip
    for name in (*names, "_", "a"):
        ip.user_ns.pop(name, None)


def frame(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"q": [f"row {i}" for i in range(n)]})


def one_line(exc: pytest.ExceptionInfo[BaseException], *names: str) -> str:
    """The error's message, checked to be one line naming each of ``names``."""
    text = str(exc.value)
    assert text.strip() and "\n" not in text.strip(), text
    for name in names:
        assert name in text, f"{name!r} not in {text!r}"
    return text


def answers_correctly(engine: ScriptedEngine) -> None:
    """The engine is alive and answers (after an error)."""
    assert engine.alive
    assert gm.complete(QUESTION, max_tokens=200).final == ECHO


def cache_file() -> Path:
    return settings().cache_path("results.sqlite")


def stored() -> dict[str, dict[str, Any]]:
    """Every row in the result cache file, read directly."""
    if not cache_file().exists():
        return {}
    with contextlib.closing(sqlite3.connect(cache_file())) as db:
        return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM rows")}


def row_keys(df: pd.DataFrame, template: str, **options: Any) -> list[str]:
    """The cache key of each row (under the loaded model)."""
    m = RowMapper.create(df, template, **options)
    return [m.key(m.options.render(p, m.spec.examples)) for p in m.prompts() if p is not None]


def ours(caught: list[warnings.WarningMessage], word: str) -> list[str]:
    return [str(w.message) for w in caught
            if issubclass(w.category, GptOssWarning) and word in str(w.message)]


# ---------------------------------------------------------------------- item 9: bad input
def _stream(o: dict[str, Any]) -> Any:
    return next(iter(gm.stream("x", **o)))


PROMPT_SURFACES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "complete": lambda o: gm.complete("x", **o),
    "complete_batch": lambda o: gm.complete_batch(["x"], **o),
    "stream": _stream,
    "map": lambda o: frame().gptoss.map("{q}", **{"progress": False, **o}),
    "submit": lambda o: frame().gptoss.submit("{q}", **o).result(30),
    "plan": lambda o: frame().gptoss.plan("{q}", **o),
    "compare_efforts": lambda o: gm.compare_efforts("x", repeats=1, **o),
}

#: (bad options, what the one-line error must name)
BAD_PROMPT_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"effort": 5}, "effort"),
    ({"effort": ""}, "effort"),
    ({"effort": "extreme"}, "effort"),
    ({"max_tokens": "abc"}, "max_tokens"),
    ({"max_tokens": 1.9}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 2}, "top_p"),
    ({"top_p": 0}, "top_p"),
    ({"seed": BIG}, "seed"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"reasoning_budget": -1}, "reasoning_budget"),
    ({"reasoning_budget": "many"}, "reasoning_budget"),
    ({"instructions": 5}, "instructions"),
    ({"confidence": 1}, "confidence"),
    ({"confidence": "yes"}, "confidence"),
    ({"choices": "abc"}, "choices"),
    ({"choices": []}, "choices"),
    ({"choices": ["a", "a"]}, "choices"),
    ({"choices": [1, 2]}, "choices"),
    ({"regex": "("}, "regex"),
    ({"regex": ""}, "regex"),
    ({"schema": 5}, "schema"),
    ({"schema": {"type": "string"}}, "schema"),
    ({"choices": ["a"], "regex": "a"}, "regex"),
    ({"efort": "low"}, "did you mean 'effort'"),
]


@pytest.mark.parametrize("surface", PROMPT_SURFACES)
@pytest.mark.parametrize(("options", "name"), BAD_PROMPT_OPTIONS,
                         ids=[f"{next(iter(o))}={o[next(iter(o))]!r}"[:30]
                              for o, _ in BAD_PROMPT_OPTIONS])
def test_a_bad_prompt_option_is_one_line_naming_it(eng: ScriptedEngine, surface: str,
                                                   options: dict[str, Any],
                                                   name: str) -> None:
    with pytest.raises(GptOssError) as info:
        PROMPT_SURFACES[surface](options)
    one_line(info, name)
    assert eng.requests == []  # refused before anything was sent
    answers_correctly(eng)


MAP_SURFACES = {name: PROMPT_SURFACES[name] for name in ("map", "submit", "plan")}
BAD_MAP_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"on_error": "ignore"}, "on_error"),
    ({"cache": "yes"}, "cache"),
    ({"usage": 1}, "usage"),
    ({"reasoning": "no"}, "reasoning"),
    ({"progress": None}, "progress"),
    ({"examples": "abc"}, "examples"),
    ({"examples": 5}, "examples"),
    ({"examples": {"q": "x", "answer": "y"}}, "examples"),
    ({"examples": [("just the input",)]}, "examples"),
    ({"examples": [1, 2]}, "examples"),
    ({"examples": pd.DataFrame({"q": ["x"]})}, "examples"),
    ({"on_eror": "mark"}, "did you mean 'on_error'"),
    # the options later issues added: tools, the cascade, the cluster backend
    ({"tools": 5}, "tools"),
    ({"tools": [5]}, "tools"),
    ({"max_tool_rounds": -1}, "max_tool_rounds"),
    ({"max_tool_rounds": "many"}, "max_tool_rounds"),
    ({"tool_timeout_s": -1}, "tool_timeout_s"),
    ({"tool_calls": "yes"}, "tool_calls"),
    ({"cascade": 5}, "cascade"),
    ({"backend": 5}, "backend"),
]


@pytest.mark.parametrize("surface", MAP_SURFACES)
@pytest.mark.parametrize(("options", "name"), BAD_MAP_OPTIONS,
                         ids=[f"{next(iter(o))}={o[next(iter(o))]!r}"[:30]
                              for o, _ in BAD_MAP_OPTIONS])
def test_a_bad_map_option_is_one_line_naming_it(eng: ScriptedEngine, surface: str,
                                                options: dict[str, Any], name: str) -> None:
    with pytest.raises(GptOssError) as info:
        MAP_SURFACES[surface](options)
    one_line(info, name)
    assert eng.requests == []
    answers_correctly(eng)


def _reply(**changes: Any) -> dict[str, Any]:
    """A saved reply (JSON, as in a received notebook) with some recorded values changed."""
    data = json.loads(json.dumps(gm.complete(QUESTION, max_tokens=50).to_dict()))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for p in parents:
            target = target[p]
        target[last] = value
    return data


MULTI = pd.DataFrame([["a", "b"]], columns=pd.MultiIndex.from_tuples([("q", "x"), ("q", "y")]))
DUP = pd.DataFrame([["a", "b"]], columns=["q", "q"])
#: (id, call, what the one-line error must name)
OTHER_CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("history of tuples", lambda: gm.complete("x", history=[("a", "b")]), "history"),
    ("history a string", lambda: gm.complete("x", history="ab"), "history"),
    ("batch history", lambda: gm.complete_batch(["x"], history=[("a", "b")]), "history"),
    ("stream history", lambda: _stream({"history": [("a", "b")]}), "history"),
    ("prompt not a string", lambda: gm.complete(5), "prompt"),
    ("batch of one string", lambda: gm.complete_batch("abc"), "list of prompts"),
    ("batch of numbers", lambda: gm.complete_batch([1, 2]), "prompt"),
    ("stream prompt not a string", lambda: next(iter(gm.stream(5))), "prompt"),
    ("map template not a string", lambda: frame().gptoss.map(5), "template"),
    ("map template None", lambda: frame().gptoss.map(None), "template"),
    ("plan template not a string", lambda: frame().gptoss.plan(5), "template"),
    ("submit template not a string", lambda: frame().gptoss.submit(5), "template"),
    ("series template not a string", lambda: frame()["q"].gptoss.map(5), "template"),
    ("map duplicate columns", lambda: DUP.gptoss.map("{q}"), "'q'"),
    ("plan duplicate columns", lambda: DUP.gptoss.plan("{q}"), "'q'"),
    ("submit duplicate columns", lambda: DUP.gptoss.submit("{q}"), "'q'"),
    ("map MultiIndex columns", lambda: MULTI.gptoss.map("{q}"), "MultiIndex"),
    ("plan MultiIndex columns", lambda: MULTI.gptoss.plan("{q}"), "MultiIndex"),
    ("map unknown column", lambda: frame().gptoss.map("{text}"), "text"),
    ("efforts a string", lambda: gm.compare_efforts("x", efforts="low"), "efforts"),
    ("efforts unknown", lambda: gm.compare_efforts("x", efforts=["extreme"]), "efforts"),
    ("efforts n=0", lambda: gm.compare_efforts(frame(), "{q}", n=0), "n must"),
    ("efforts repeats str", lambda: gm.compare_efforts("x", repeats="3"), "repeats"),
    ("efforts budgets bad", lambda: gm.compare_efforts("x", repeats=1, budgets=[None, -1]),
     "budgets"),
    ("efforts budgets str", lambda: gm.compare_efforts("x", budgets="abc"), "budgets"),
    ("efforts source", lambda: gm.compare_efforts(5), "prompt"),
    ("efforts template", lambda: gm.compare_efforts(frame(), 5), "template"),
    ("efforts expected", lambda: gm.compare_efforts(frame(), "{q}", expected="x"), "expected"),
    ("efforts duplicate columns", lambda: gm.compare_efforts(DUP, "{q}"), "'q'"),
    ("efforts MultiIndex", lambda: gm.compare_efforts(MULTI, "{q}"), "MultiIndex"),
    ("efforts examples", lambda: gm.compare_efforts(frame(), "{q}", examples="a"), "examples"),
    ("reproduce a string", lambda: gm.reproduce("abc"), "reproduce"),
    ("reproduce no provenance", lambda: gm.reproduce({"prompt": "x"}), "provenance"),
    ("panel prompt", lambda: gm.effort_panel(5), "prompt"),
    ("panel unknown option", lambda: gm.effort_panel("x", efort="low"), "effort"),
    ("panel slider option", lambda: gm.effort_panel("x", effort="low"), "effort"),
    ("panel seed", lambda: gm.effort_panel("x", seed=BIG), "seed"),
]


@pytest.mark.parametrize(("call", "name"), [c[1:] for c in OTHER_CASES],
                         ids=[c[0] for c in OTHER_CASES])
def test_bad_input_is_one_line(eng: ScriptedEngine, call: Callable[[], Any],
                               name: str) -> None:
    with pytest.raises(GptOssError) as info:
        call()
    one_line(info, name)
    assert eng.requests == []
    answers_correctly(eng)


#: (recorded value changed, what the error names): a received notebook may hold anything
BAD_RECORDS: list[tuple[dict[str, Any], str]] = [
    ({"provenance__sampling__seed": BIG}, "seed"),
    ({"provenance__sampling__seed": "7"}, "seed"),
    ({"provenance__sampling__max_tokens": "abc"}, "max_tokens"),
    ({"provenance__sampling__temperature": "hot"}, "temperature"),
    ({"provenance__sampling__reasoning_budget": -1}, "reasoning_budget"),
    ({"provenance__sampling__stop_token_ids": "abc"}, "stop_token_ids"),
    ({"provenance__sampling__choice": "abc"}, "choices"),
    ({"provenance__sampling__json_schema": "{not json"}, "json_schema"),
    ({"provenance__sampling__logprobs": "yes"}, "logprobs"),
    ({"provenance__sampling__bogus": 1}, "bogus"),
    ({"provenance__effort": 5}, "effort"),
    ({"provenance__history": 5}, "history"),
    ({"provenance__history": [["a"]]}, "history"),
    ({"provenance__current_date": 5}, "current_date"),
    ({"provenance": "none"}, "provenance"),
    ({"prompt": 5}, "prompt"),
]


@pytest.mark.parametrize(("changes", "name"), BAD_RECORDS,
                         ids=[next(iter(c)).split("__")[-1] + "=" + repr(next(iter(c.values())))
                              for c, _ in BAD_RECORDS])
def test_reproduce_checks_every_recorded_value(eng: ScriptedEngine, changes: dict[str, Any],
                                               name: str) -> None:
    saved = _reply(**changes)
    before = len(eng.requests)
    with pytest.raises(GptOssError) as info:
        gm.reproduce(saved)
    one_line(info, name)
    assert len(eng.requests) == before
    answers_correctly(eng)


def test_reproduce_still_reruns_a_good_saved_reply(eng: ScriptedEngine) -> None:
    again = gm.reproduce(_reply())
    assert again.identical and again.again.final == ECHO


MAGIC_CASES: list[tuple[str, str, str]] = [
    ("--effort extreme", "", "--effort"),
    ("-e 5", "", "--effort"),
    ("-n abc", "", "--max-tokens"),
    ("-n 1.9", "", "--max-tokens"),
    ("-n 0", "", "max_tokens"),
    ("-t hot", "", "--temperature"),
    ("-t -1", "", "temperature"),
    ("--top-p 2", "", "top_p"),
    (f"--seed {BIG}", "", "seed"),
    ("--seed -1", "", "seed"),
    ("--seed 1.5", "", "--seed"),
    ("-b -1", "", "--reasoning-budget"),
    ("--choices ''", "", "--choices"),
    ("--choices ,", "", "--choices"),
    ("--choices a,a", "", "choices"),
    ("--regex '('", "", "regex"),
    ("--schema nothing", "", "--schema"),
    ("--schema five", "", "schema"),
    ("--efort low", "", "--efort"),
    ("-o 1x", "", "-o"),
    ("--chat five", "", "five"),
    ("--format yaml", "", "--format"),
    ("", "   ", "empty"),
    ("", "Hi {nothing}", "nothing"),
]
MAP_MAGIC_CASES: list[tuple[str, str]] = [
    ('df "{q}"', "--out"),
    ('df "{q}" --out a --effort extreme', "--effort"),
    ('df "{q}" --out a -n abc', "--max-tokens"),
    ('df "{q}" --out a -n 0', "max_tokens"),
    (f'df "{{q}}" --out a --seed {BIG}', "seed"),
    (f'df "{{q}}" --out a --seed {BIG} --dry-run', "seed"),
    (f'df "{{q}}" --out a --seed {BIG} --background', "seed"),
    ("df '{q}' --out a --choices ''", "--choices"),
    ('df "{q}" --out a --top-p 2', "top_p"),
    ('df "{q}" --out a -b -1', "--reasoning-budget"),
    ('df "{q}" --out a --regex "("', "regex"),
    ('df "{q}" --out a --examples nothing', "--examples"),
    ('df "{q}" --out a --examples five', "examples"),
    ('df "{q}" --out a --schema five', "schema"),
    ('df "{q}" --out a --efort low', "--efort"),
    ('five "{q}" --out a', "five"),
    ('df "{nothing}" --out a', "nothing"),
    ('df "{q" --out a', "template"),
    ('dup "{q}" --out a', "'q'"),
    ('mi "{q}" --out a', "MultiIndex"),
    ('ser "{}" --out 1x', "--out"),
]


@pytest.mark.parametrize(("line", "body", "name"), MAGIC_CASES,
                         ids=[c[0] or c[1] for c in MAGIC_CASES])
def test_a_bad_cell_magic_line_is_one_usage_error(eng: ScriptedEngine, shell: InteractiveShell,
                                                  line: str, body: str, name: str) -> None:
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("gptoss", line, body or "What?")
    one_line(info, name)
    assert eng.requests == []
    shell.run_cell_magic("gptoss", "-n 200", QUESTION)
    assert shell.user_ns["_"].final == ECHO


@pytest.mark.parametrize(("line", "name"), MAP_MAGIC_CASES, ids=[c[0] for c in MAP_MAGIC_CASES])
def test_a_bad_map_magic_line_is_one_usage_error(eng: ScriptedEngine, shell: InteractiveShell,
                                                 line: str, name: str) -> None:
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("gptoss_map", line)
    one_line(info, name)
    assert eng.requests == []
    answers_correctly(eng)


BAD_SETTINGS: list[tuple[str, Any]] = [
    ("effort", "extreme"), ("max_tokens", 0), ("max_tokens", "abc"), ("temperature", -1),
    ("top_p", 2), ("seed", BIG), ("seed", -1), ("reasoning_budget", -1),
    ("instructions", 5), ("current_date", "tomorrow"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS,
                         ids=[f"{n}={v!r}" for n, v in BAD_SETTINGS])
def test_a_bad_setting_is_refused_with_one_line(eng: ScriptedEngine, name: str,
                                                value: Any) -> None:
    s = settings()
    before = getattr(s, name)
    with pytest.raises(TraitError) as info:
        setattr(s, name, value)
    one_line(info, name)
    assert getattr(s, name) == before
    answers_correctly(eng)


def test_config_magic_refuses_a_bad_seed_and_keeps_the_setting(
        eng: ScriptedEngine, shell: InteractiveShell, caplog: pytest.LogCaptureFixture) -> None:
    shell.run_line_magic("config", f"GptOssSettings.seed = {BIG}")
    assert settings().seed != BIG
    assert any("'seed'" in r.getMessage() for r in caplog.records)
    answers_correctly(eng)
    assert eng.requests[-1].sampling.seed == settings().seed


@pytest.mark.parametrize("prompts", [("a", "b"), pd.Series(["a", "b"]), iter(["a", "b"])],
                         ids=["tuple", "Series", "iterator"])
def test_complete_batch_takes_any_iterable_of_prompts(eng: ScriptedEngine,
                                                      prompts: Any) -> None:
    assert [r.final for r in gm.complete_batch(prompts)] == ["echo: a", "echo: b"]


# ---------------------------------------------------------------------- item 3
def test_rows_the_engine_refused_are_never_cached(own_settings: Path) -> None:
    df = pd.DataFrame({"q": ["short", "word " * 400]})
    with serving(ScriptedEngine(max_model_len=300)) as engine:
        keys = row_keys(df, "{q}")
        out = df.gptoss.map("{q}", progress=False, usage=True)
        assert out["answer"][0] == "echo: short"
        assert "max_model_len" in out["error"][1] and not out["truncated"][1]
        assert set(stored()) == {keys[0]}  # the failed row is not in the file
        plan = df.gptoss.plan("{q}")
        assert (plan.cached, plan.to_generate) == (1, 1)
        df.gptoss.map("{q}", progress=False)
        assert [r.prompt_ids for r in engine.requests][2:] == [engine.requests[1].prompt_ids]


def test_error_rows_cached_by_an_older_version_are_generated_again(own_settings: Path) -> None:
    df = pd.DataFrame({"q": ["word " * 400]})
    with serving(ScriptedEngine(max_model_len=4096)) as engine:
        [key] = row_keys(df, "{q}")
        old = RowResult(final=None, analysis="", finish_reason="error", truncated=True,
                        has_final=False, completion_tokens=0, prompt_tokens=470,
                        error="prompt longer than max_model_len")
        cache = ResultCache(cache_file())
        cache.put(key, old.to_json())
        cache.close()
        plan = df.gptoss.plan("{q}")
        assert (plan.cached, plan.to_generate) == (0, 1)
        out = df.gptoss.map("{q}", progress=False)
        assert out[0].startswith("echo: word") and len(engine.requests) == 1
        assert stored()[key]["finish_reason"] == "stop"  # the good row replaced it


def test_unreadable_cached_rows_are_generated_again(eng: ScriptedEngine) -> None:
    df = frame(2)
    keys = row_keys(df, "{q}")
    cache = ResultCache(cache_file())
    cache.put(keys[0], {"written": "by another version"})
    cache.close()
    assert df.gptoss.plan("{q}").cached == 0
    out = df.gptoss.map("{q}", progress=False)
    assert list(out) == ["echo: row 0", "echo: row 1"] and len(eng.requests) == 2


# ---------------------------------------------------------------------- the fault test
def test_a_failing_request_fails_alone_and_the_rest_are_cached() -> None:
    df = frame(4)
    with serving(ScriptedEngine(fail={1})) as engine, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = row_keys(df, "{q}")
        out = df.gptoss.map("{q}", progress=False, usage=True)
        assert list(out["answer"].isna()) == [False, True, False, False]
        assert "ScriptedFailure" in out["error"][1]
        assert not out["truncated"].any()
        assert set(stored()) == {keys[0], keys[2], keys[3]}
        assert ours(caught, "failed") == ["1 of 4 rows failed (see the error column or "
                                          "attrs['gptoss']['error_rows'])"]
        again = df.gptoss.map("{q}", progress=False)  # only the failed row is sent again
        assert [r.prompt_ids for r in engine.requests[4:]] == [engine.requests[1].prompt_ids]
        assert again.notna().all() and set(stored()) == set(keys)
        assert engine.in_flight == 0


# ---------------------------------------------------------------------- item 4a
SURFACES_THAT_WRITE: dict[str, Callable[[InteractiveShell, dict[str, Any]], Any]] = {
    "complete": lambda ip, saved: gm.complete(QUESTION),
    "complete_batch": lambda ip, saved: gm.complete_batch([QUESTION, "x"]),
    "stream": lambda ip, saved: list(gm.stream(QUESTION)),
    "%%gptoss": lambda ip, saved: ip.run_cell_magic("gptoss", "", QUESTION),
    "map": lambda ip, saved: frame().gptoss.map("{q}", progress=False),
    "submit": lambda ip, saved: frame().gptoss.submit("{q}").result(30),
    "%gptoss_map": lambda ip, saved: ip.run_line_magic("gptoss_map", 'df "{q}" --out a'),
    "compare_efforts": lambda ip, saved: gm.compare_efforts(QUESTION, repeats=1),
    "reproduce": lambda ip, saved: gm.reproduce(saved),
}


@pytest.mark.parametrize("surface", SURFACES_THAT_WRITE)
def test_an_audit_log_in_a_missing_folder_fails_before_generating(
        eng: ScriptedEngine, shell: InteractiveShell, tmp_path: Path, surface: str) -> None:
    saved = _reply()
    before = len(eng.requests)
    settings().audit_log = str(tmp_path / "no-such-folder" / "audit.jsonl")
    with pytest.raises((StorageError, UsageError)) as info:
        SURFACES_THAT_WRITE[surface](shell, saved)
    one_line(info, "audit log", "no-such-folder")
    assert len(eng.requests) == before  # nothing was generated, so nothing was lost
    assert not (tmp_path / "no-such-folder").exists()


def _breaks_the_log_when_generating(log: Path, after: int = 0) -> Callable[..., list[int]]:
    """A script that replaces the audit log by a folder once ``after`` requests have
    been planned (after the check before generating), then answers as usual."""
    calls = [0]

    def script(ids: list[int], sampling: Sampling) -> list[int]:
        calls[0] += 1
        if calls[0] == after + 1:
            log.unlink(missing_ok=True)
            log.mkdir()
        from gptoss_magics.engine.scripted import default_script
        return default_script(ids, sampling)

    return script


@pytest.mark.parametrize("surface", ["complete", "stream", "%%gptoss"])
def test_an_audit_log_that_breaks_mid_run_keeps_the_answer(shell: InteractiveShell,
                                                           tmp_path: Path, surface: str) -> None:
    log = tmp_path / "audit.jsonl"
    settings().audit_log = str(log)
    with serving(ScriptedEngine(_breaks_the_log_when_generating(log))), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if surface == "complete":
            reply = gm.complete(QUESTION)
        elif surface == "stream":
            *_, reply = gm.stream(QUESTION)
        else:
            shell.run_cell_magic("gptoss", "", QUESTION)
            reply = shell.user_ns["_"]
    assert reply.final == ECHO
    assert len(ours(caught, "audit log")) == 1 and log.is_dir()


def test_an_audit_log_that_breaks_mid_map_keeps_every_row(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    settings().audit_log = str(log)
    df = frame(6)
    engine = ScriptedEngine(_breaks_the_log_when_generating(log, after=3), max_num_seqs=1)
    with serving(engine), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = row_keys(df, "{q}")
        out = df.gptoss.map("{q}", progress=False)
    assert list(out) == [f"echo: row {i}" for i in range(6)]
    assert gm.last_result() is out
    assert set(stored()) == set(keys)
    assert len(ours(caught, "audit log")) == 1  # once per map, not once per row


# ---------------------------------------------------------------------- item 4c
@contextlib.contextmanager
def _sqlite_full(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The result cache's database may not grow: SQLite itself reports 'database or disk
    is full' once its pages are used up (our own cache class is patched, no engine)."""
    original = ResultCache._open

    def full_soon(self: ResultCache) -> sqlite3.Connection:
        db = original(self)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 1}")
        return db

    monkeypatch.setattr(ResultCache, "_open", full_soon)
    yield "max_page_count"


@contextlib.contextmanager
def _tmpfs_full(folder: Path) -> Iterator[str]:
    """The cache folder on a 96 KiB tmpfs (needs root and mount)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tiny tmpfs needs root and mount; the max_page_count case covers it")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield "tmpfs"
    finally:
        gc.collect()  # drop any connection still holding the files
        if subprocess.run(["umount", str(folder)]).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)])


@pytest.mark.parametrize("how", ["max_page_count", "tmpfs"])
def test_a_full_disk_mid_map_loses_no_row(own_settings: Path, monkeypatch: pytest.MonkeyPatch,
                                          how: str) -> None:
    full = _sqlite_full(monkeypatch) if how == "max_page_count" else _tmpfs_full(own_settings)
    n = 30
    df = frame(n)
    engine = ScriptedEngine(lambda ids, s: harmony_completion("ok", "r" * 2500),
                            max_num_seqs=2)
    with full, serving(engine), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = row_keys(df, "{q}")
        out = df.gptoss.map("{q}", progress=False)
        assert list(out) == ["ok"] * n
        assert gm.last_result() is out
        assert len(ours(caught, "result cache")) == 1
        assert "full" in ours(caught, "result cache")[0]
        saved = stored()
        assert 0 < len(saved) < n and set(saved) <= set(keys)
        assert engine.in_flight == 0


# ---------------------------------------------------------------------- item 4d
def _slow() -> ScriptedEngine:
    return ScriptedEngine(step_s=0.01, tokens_per_step=2, max_num_seqs=2)


def test_an_exception_mid_map_aborts_the_rest_and_keeps_what_finished() -> None:
    df = frame(8)
    with serving(_slow()) as engine:
        keys = row_keys(df, "{q}")
        mapper = RowMapper.create(df, "{q}", progress=False)
        finished = [0]

        def on_progress() -> None:
            finished[0] += 1
            if finished[0] == 2:
                raise RuntimeError("the progress display broke")

        mapper.progress.callback = on_progress
        with pytest.raises(RuntimeError, match="progress display broke") as info:
            mapper.run()
        assert engine.in_flight == 0  # nothing left running in the engine
        assert any("last_result()" in note for note in getattr(info.value, "__notes__", []))
        partial = gm.last_result()
        assert partial is not None and partial.notna().sum() == 2
        assert set(stored()) == {keys[i] for i in range(8) if pd.notna(partial.iloc[i])}
        assert len(engine.requests) == 8


def test_an_audit_that_raises_mid_map_aborts_the_rest(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    settings().audit_log = str(tmp_path / "audit.jsonl")
    original = audit.write
    rows = [0]

    def write(record: Any) -> bool:
        if record.get("kind") == "map_row":
            rows[0] += 1
            if rows[0] == 2:
                raise ValueError("cannot serialise this record")
        return original(record)

    monkeypatch.setattr(audit, "write", write)
    df = frame(8)
    with serving(_slow()) as engine:
        with pytest.raises(ValueError, match="cannot serialise"):
            df.gptoss.map("{q}", progress=False)
        assert engine.in_flight == 0
        partial = gm.last_result()
        assert partial is not None and partial.notna().sum() == 2
        assert len(stored()) == 2
        # the same map again generates only the rest
        monkeypatch.setattr(audit, "write", original)
        out = df.gptoss.map("{q}", progress=False)
        assert out.attrs["gptoss"]["summary"]["cached"] == 2 and out.notna().all()


# ---------------------------------------------------------------------- item 5
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """Make ``folder`` and its files read-only: chmod when not root (root ignores
    permissions), else ``chattr +i``; skips when neither works here."""
    paths = [folder, *folder.iterdir()]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield "chmod"
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root (chmod does not bind root) and chattr is missing")
    args = [str(p) for p in paths]
    done = subprocess.run(["chattr", "+i", *args], capture_output=True, text=True)
    try:
        if done.returncode != 0 or os.access(folder, os.W_OK):
            pytest.skip(f"running as root and chattr +i does not work here: {done.stderr}")
        yield "chattr +i"
    finally:
        subprocess.run(["chattr", "-i", *args], capture_output=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_read_only_cache_is_served_and_never_moved(eng: ScriptedEngine,
                                                     own_settings: Path) -> None:
    df = frame(3)
    df.gptoss.map("{q}", progress=False)
    assert len(stored()) == 3
    folder = cache_file().parent
    files = sorted(p.name for p in folder.iterdir())
    digest = _digest(cache_file())
    with read_only(folder), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = df.gptoss.plan("{q}")
        assert (plan.cached, plan.to_generate) == (3, 0)
        assert len(ours(caught, "cannot be written")) == 1
        out = df.gptoss.map("{q}", progress=False)
        assert list(out) == ["echo: row 0", "echo: row 1", "echo: row 2"]
        assert out.attrs["gptoss"]["summary"]["cached"] == 3 and len(eng.requests) == 3
        assert len(ours(caught, "cannot be written")) == 2  # once for the plan, once here
        more = frame(4).gptoss.map("{q}", progress=False)  # a new row: generated, not saved
        assert more[3] == "echo: row 3" and len(eng.requests) == 4
        assert not ours(caught, "moved")
    assert sorted(p.name for p in folder.iterdir()) == files
    assert _digest(cache_file()) == digest


def test_a_damaged_cache_file_is_moved_aside(eng: ScriptedEngine) -> None:
    cache_file().write_bytes(b"this is not a database " * 200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = frame(2).gptoss.map("{q}", progress=False)
    assert list(out) == ["echo: row 0", "echo: row 1"]
    [moved] = ours(caught, "moved to")
    aside = [p for p in cache_file().parent.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and str(aside[0]) in moved
    assert aside[0].read_bytes().startswith(b"this is not a database")
    assert len(stored()) == 2  # a new cache was started


def test_a_cache_damaged_past_its_first_page_is_moved_aside(eng: ScriptedEngine) -> None:
    cache = ResultCache(cache_file())
    for i in range(300):
        cache.put(f"filler {i}", {"final": "x" * 200})
    cache.close()
    with open(cache_file(), "r+b") as fh:  # the header and schema (page 1) stay readable
        fh.seek(4096)
        fh.write(b"\xff" * (cache_file().stat().st_size - 4096))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = frame(2).gptoss.plan("{q}")
        out = frame(2).gptoss.map("{q}", progress=False)
    assert plan.to_generate == 2 and list(out) == ["echo: row 0", "echo: row 1"]
    assert len(ours(caught, "moved to")) == 1 and "malformed" in ours(caught, "moved to")[0]
    assert len([p for p in cache_file().parent.iterdir() if ".damaged-" in p.name]) >= 1
    assert len(stored()) == 2  # a new cache was started and holds the new rows


# ---------------------------------------------------------------------- item 10
_NOTE = re.compile(r"(\d+) of (\d+) distinct prompts are saved in the result cache.*"
                   r"\((\d+) finished\)")


def _rows_on_disk(keys: list[str]) -> int:
    uri = f"file:{cache_file()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        marks = ",".join("?" * len(keys))
        return int(db.execute(f"SELECT count(*) FROM rows WHERE key IN ({marks})",
                              keys).fetchone()[0])


def test_the_interrupt_note_counts_the_rows_on_disk() -> None:
    df = frame(40)
    engine = ScriptedEngine(step_s=0.01, tokens_per_step=1, max_num_seqs=4)
    with serving(engine):
        keys = row_keys(df, "{q}")

        def interrupt_after_some_rows() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(sqlite3.Error):  # not created yet
                    if _rows_on_disk(keys) >= 3:
                        _thread.interrupt_main()
                        return
                time.sleep(0.005)

        watcher = threading.Thread(target=interrupt_after_some_rows, daemon=True)
        watcher.start()
        with pytest.raises(KeyboardInterrupt) as info:
            df.gptoss.map("{q}", progress=False)
        watcher.join()
        match = _NOTE.search(str(info.value))
        assert match, str(info.value)
        saved, total, _ = map(int, match.groups())
        assert total == 40 and 3 <= saved < 40
        assert saved == _rows_on_disk(keys)
        assert engine.in_flight == 0


class _InterruptAfterInsert:
    """A cache connection that raises KeyboardInterrupt right after the ``nth`` INSERT,
    before its commit: where a Ctrl-C between a row's insert and its commit lands."""

    def __init__(self, db: sqlite3.Connection, nth: int) -> None:
        self.db, self.nth, self.inserts = db, nth, 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = self.db.execute(sql, *args)
        if sql.lstrip().upper().startswith("INSERT"):
            self.inserts += 1
            if self.inserts == self.nth:
                raise KeyboardInterrupt
        return cursor

    def __enter__(self) -> Any:
        return self.db.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.db.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_an_interrupt_between_insert_and_commit_is_not_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = ResultCache._open
    monkeypatch.setattr(ResultCache, "_open",
                        lambda self: _InterruptAfterInsert(original(self), nth=3))
    df = frame(10)
    with serving(ScriptedEngine(max_num_seqs=1)) as engine:
        keys = row_keys(df, "{q}")
        with pytest.raises(KeyboardInterrupt) as info:
            df.gptoss.map("{q}", progress=False)
        match = _NOTE.search(str(info.value))
        assert match, str(info.value)
        saved, total, finished = map(int, match.groups())
        assert (saved, total, finished) == (2, 10, 3)  # the third row was not committed
        assert _rows_on_disk(keys) == 2
        assert engine.in_flight == 0
