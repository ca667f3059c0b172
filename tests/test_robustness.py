"""Holding under bad input, on the real vLLM engine (tiny model).

A seed past 2**63-1 used to reach vLLM and make its step fail, which killed the engine
for every later request. Every path a seed can come in by now refuses it with one line
naming ``seed`` before anything is sent, and the engine answers correctly afterwards. A
prompt too long for the context fails its row alone and is never served from the cache.
The full matrix of bad values runs on the scripted engine in ``test_robustness_fast.py``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError

import gptoss_magics as gm
from gptoss_magics.errors import GptOssError, InvalidOptionError
from gptoss_magics.frame import RowMapper
from gptoss_magics.session import current
from gptoss_magics.settings import settings

pytestmark = pytest.mark.engine

QUESTION = "What is 17 + 25?"
BIG = 2**64


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path) -> Iterator[None]:
    """A fresh cache folder for each test; the settings are put back afterwards."""
    s = settings()
    saved = {n: getattr(s, n) for n in s.trait_names() if s.trait_metadata(n, "config")}
    s.cache_dir = str(tmp_path / "cache")
    s.audit_log = ""
    yield
    for name, value in saved.items():
        setattr(s, name, value)


@pytest.fixture
def sent(engine: dict, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of prompts of each submission to the real engine during the test."""
    eng = current().engine
    calls: list[int] = []
    original = eng.submit

    def submit(prompts: Any, sampling: Any, **kw: Any) -> Any:
        calls.append(len(prompts))
        return original(prompts, sampling, **kw)

    monkeypatch.setattr(eng, "submit", submit)
    return calls


@pytest.fixture
def shell(engine: dict) -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("gptoss_magics")
    ip.user_ns["df"] = pd.DataFrame({"q": [QUESTION]})
    yield ip
    for name in ("df", "_", "a"):
        ip.user_ns.pop(name, None)


def one_line(info: pytest.ExceptionInfo[BaseException], name: str) -> None:
    text = str(info.value).strip()
    assert text and "\n" not in text and name in text, text


def answers_correctly() -> None:
    assert gm.status()["state"] == "ready"
    assert gm.complete(QUESTION, max_tokens=200, temperature=0).final.strip() == "42"


def _saved_reply_with_seed(seed: int) -> dict[str, Any]:
    """A reply as saved in a notebook someone sent (JSON), whose record says ``seed``."""
    data = json.loads(json.dumps(gm.complete(QUESTION, max_tokens=16, temperature=0)
                                 .to_dict()))
    data["provenance"]["sampling"]["seed"] = seed
    return data


SEED_PATHS: dict[str, Callable[[InteractiveShell], Any]] = {
    "complete": lambda ip: gm.complete(QUESTION, seed=BIG),
    "settings": lambda ip: setattr(settings(), "seed", BIG),
    "%%gptoss --seed": lambda ip: ip.run_cell_magic("gptoss", f"--seed {BIG}", QUESTION),
    "%gptoss_map --seed": lambda ip: ip.run_line_magic(
        "gptoss_map", f'df "{{q}}" --out a --seed {BIG}'),
}


@pytest.mark.parametrize("path", [*SEED_PATHS, "reproduce"])
def test_an_out_of_range_seed_is_refused_and_the_engine_lives(
        shell: InteractiveShell, sent: list[int], path: str) -> None:
    saved = _saved_reply_with_seed(BIG) if path == "reproduce" else None
    before = list(sent)
    errors = (InvalidOptionError, UsageError, TraitError)
    with pytest.raises(errors) as info:
        if saved is not None:
            gm.reproduce(saved)
        else:
            SEED_PATHS[path](shell)
    one_line(info, "seed")
    assert sent == before  # the engine never saw it
    assert settings().seed != BIG
    answers_correctly()


def _keys(df: pd.DataFrame, template: str, **options: Any) -> list[str]:
    m = RowMapper.create(df, template, **options)
    return [m.key(m.options.render(p, m.spec.examples)) for p in m.prompts() if p is not None]


def _stored() -> set[str]:
    with contextlib.closing(sqlite3.connect(settings().cache_path("results.sqlite"))) as db:
        return {k for (k,) in db.execute("SELECT key FROM rows")}


def test_a_prompt_too_long_for_the_context_is_not_cached(sent: list[int]) -> None:
    df = pd.DataFrame({"q": [QUESTION, "word " * 5000]})
    options = {"max_tokens": 200, "temperature": 0}
    keys = _keys(df, "{q}", **options)
    with pytest.warns(gm.GptOssWarning, match="1 of 2 rows failed"):
        out = df.gptoss.map("{q}", usage=True, progress=False, **options)
    assert out["answer"][0].strip() == "42"
    assert "max_model_len" in out["error"][1] and not out["truncated"][1]
    assert _stored() == {keys[0]}
    plan = df.gptoss.plan("{q}", **options)
    assert (plan.cached, plan.to_generate, len(plan.too_long or [])) == (1, 1, 1)
    with pytest.warns(gm.GptOssWarning, match="1 of 2 rows failed"):
        again = df.gptoss.map("{q}", progress=False, **options)
    assert sent == [2, 1]  # only the refused row was sent again
    assert again[0].strip() == "42" and again.attrs["gptoss"]["summary"]["cached"] == 1


DUP = pd.DataFrame([["a", "b"]], columns=["q", "q"])
#: a representative part of the matrix in test_robustness_fast.py
BAD_CALLS: list[tuple[str, Callable[[InteractiveShell], Any], str]] = [
    ("effort=5", lambda ip: gm.complete(QUESTION, effort=5), "effort"),
    ("effort=''", lambda ip: gm.complete(QUESTION, effort=""), "effort"),
    ("max_tokens='abc'", lambda ip: gm.complete(QUESTION, max_tokens="abc"), "max_tokens"),
    ("max_tokens=1.9", lambda ip: gm.complete(QUESTION, max_tokens=1.9), "max_tokens"),
    ("top_p=2", lambda ip: gm.complete(QUESTION, top_p=2), "top_p"),
    ("temperature='hot'", lambda ip: gm.complete(QUESTION, temperature="hot"), "temperature"),
    ("reasoning_budget=-1", lambda ip: next(iter(gm.stream(QUESTION, reasoning_budget=-1))),
     "reasoning_budget"),
    ("history of tuples", lambda ip: gm.complete(QUESTION, history=[("a", "b")]), "history"),
    ("choices='abc'", lambda ip: gm.complete(QUESTION, choices="abc"), "choices"),
    ("complete_batch('abc')", lambda ip: gm.complete_batch("abc"), "list of prompts"),
    ("efort=", lambda ip: gm.complete(QUESTION, efort="low"), "'effort'"),
    ("on_error='ignore'", lambda ip: ip.user_ns["df"].gptoss.map("{q}", on_error="ignore"),
     "on_error"),
    ("cache='yes'", lambda ip: ip.user_ns["df"].gptoss.submit("{q}", cache="yes"), "cache"),
    ("duplicate columns", lambda ip: DUP.gptoss.map("{q}"), "'q'"),
    ("--choices ''", lambda ip: ip.run_cell_magic("gptoss", "--choices ''", QUESTION),
     "--choices"),
    ("%gptoss_map -n 0", lambda ip: ip.run_line_magic("gptoss_map", 'df "{q}" --out a -n 0'),
     "max_tokens"),
    ("compare_efforts budgets", lambda ip: gm.compare_efforts(QUESTION, budgets=[None, -1]),
     "budgets"),
    ("settings effort", lambda ip: setattr(settings(), "effort", "extreme"), "effort"),
    ("settings max_tokens", lambda ip: setattr(settings(), "max_tokens", 0), "max_tokens"),
]


def test_bad_values_never_reach_the_real_engine(shell: InteractiveShell,
                                                sent: list[int]) -> None:
    for label, call, name in BAD_CALLS:
        with pytest.raises((GptOssError, UsageError, TraitError)) as info:
            call(shell)
        text = str(info.value).strip()
        assert "\n" not in text and name in text, (label, text)
        assert sent == [], label
    answers_correctly()
