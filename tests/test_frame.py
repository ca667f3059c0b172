"""df.gptoss.map on the real tiny engine: alignment, batching, cache, resume, flags."""

from __future__ import annotations

import _thread
import os
import sqlite3
import stat
import threading
import warnings
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics import GptOssWarning, RowError
from gptoss_magics.settings import settings

pytestmark = pytest.mark.engine


def frame(n: int, seed: int = 0, start: int = 100) -> pd.DataFrame:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    texts = [f"{words[i % 8]} {words[(i * 3 + seed) % 8]} row {i}" for i in range(n)]
    return pd.DataFrame({"text": texts, "k": range(n)}, index=range(start, start + 2 * n, 2))


#: words the trained tiny model uppercases (greedy, within 64 tokens)
WORDS = ["river", "stone", "garden", "window", "tiger", "castle"]


def test_result_is_aligned_to_a_non_default_index(engine: dict) -> None:
    df = pd.DataFrame({"w": WORDS}, index=["f", "a", "e", "b", "d", "c"])
    out = df.gptoss.map("Uppercase the word: {w}", max_tokens=64, temperature=0, cache=False,
                        progress=False)
    assert isinstance(out, pd.Series) and list(out.index) == list(df.index)
    info = out.attrs["gptoss"]
    assert info["summary"]["rows"] == 6 and info["summary"]["generated"] == 6
    assert info["weights_fingerprint"].startswith("sha256:") and info["vllm"]
    assert info["template"] == "Uppercase the word: {w}"
    if engine["model"] == "tiny":  # each answer sits on its own row's label
        assert out.to_dict() == {label: w.upper() for label, w in df["w"].items()}


def test_duplicates_are_generated_once_in_one_batch(engine: dict,
                                                     count_requests: list[int]) -> None:
    words = ["river", "stone", "river", "river", "stone", "tiger"]
    df = pd.DataFrame({"text": words})
    out = df.gptoss.map("Uppercase the word: {text}", max_tokens=64, cache=False,
                        progress=False, temperature=0)
    assert count_requests == [3]
    assert out.attrs["gptoss"]["summary"]["unique_prompts"] == 3
    assert out.notna().all(), out
    # duplicate rows share the answer of their prompt
    assert out[0] == out[2] == out[3] and out[1] == out[4]
    if engine["model"] == "tiny":
        assert list(out) == [w.upper() for w in words]


def test_missing_values_are_never_sent(engine: dict, count_requests: list[int]) -> None:
    df = pd.DataFrame({"text": ["a", None, float("nan"), "d", pd.NA, "nan"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = df.gptoss.map("Say: {text}", max_tokens=4, cache=False, progress=False)
    assert count_requests == [3]  # "a", "d" and the literal string "nan"
    assert out.isna()[[1, 2, 4]].all()
    info = out.attrs["gptoss"]
    assert info["summary"]["missing"] == 3 and info["missing_rows"] == [1, 2, 4]
    assert any("3 of 6 rows had missing values" in str(w.message) for w in caught)


def test_missing_column_lists_the_columns_before_generating(engine: dict,
                                                            count_requests: list[int]) -> None:
    df = frame(3)
    with pytest.raises(gm.TemplateError, match=r"'txt'.*did you mean 'text'.*'text', 'k'"):
        df.gptoss.map("Summarise {txt}")
    assert count_requests == []


def test_truncation_is_flagged_and_summarised(engine: dict) -> None:
    df = frame(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = df.gptoss.map("Explain {text} at length.", max_tokens=2, effort="high",
                            cache=False, progress=False, reasoning=True)
    assert out["truncated"].all() and out["answer"].isna().all()
    assert (out["error"] == "hit max_tokens").all()
    msgs = [str(w.message) for w in caught if issubclass(w.category, GptOssWarning)]
    assert any("5 of 5 rows hit max_tokens (2); raise max_tokens or lower effort" in m
               for m in msgs)


def test_second_identical_run_comes_from_the_cache(engine: dict,
                                                   count_requests: list[int]) -> None:
    df = frame(8, seed=11)
    first = df.gptoss.map("Cache test: {text}", max_tokens=6, progress=False)
    second = df.gptoss.map("Cache test: {text}", max_tokens=6, progress=False)
    assert count_requests == [8]
    assert second.attrs["gptoss"]["summary"]["cached"] == 8
    assert second.attrs["gptoss"]["summary"]["generated"] == 0
    pd.testing.assert_series_equal(first, second)
    db = settings().cache_path("results.sqlite")
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    # a different setting is a different key
    df.gptoss.map("Cache test: {text}", max_tokens=7, progress=False)
    assert count_requests == [8, 8]


def test_interrupt_keeps_finished_rows_and_rerun_does_the_rest(engine: dict,
                                                               count_requests: list[int],
                                                               wait_until: Any) -> None:
    n = 160
    df = frame(n, seed=5)
    template = "Interrupt test, please answer: {text}"
    before = _saved_rows()

    def interrupt_when_saved() -> None:  # Ctrl-C as soon as the map has saved a row
        wait_until(lambda: _saved_rows() > before, timeout=120)
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_when_saved, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt, match="generates only the rest"):
        df.gptoss.map(template, max_tokens=32, progress=False)
    watcher.join()
    partial = gm.last_result()
    assert partial is not None and list(partial.index) == list(df.index)
    saved = _saved_rows() - before
    assert 0 < saved < n
    out = df.gptoss.map(template, max_tokens=32, progress=False)
    summary = out.attrs["gptoss"]["summary"]
    assert summary["cached"] == saved
    assert summary["generated"] == n - saved
    assert count_requests == [n, n - saved]


def _saved_rows() -> int:
    with sqlite3.connect(settings().cache_path("results.sqlite")) as db:
        return int(db.execute("SELECT COUNT(*) FROM rows").fetchone()[0])


def test_on_error_raise_names_the_row(engine: dict) -> None:
    df = pd.DataFrame({"text": ["short", "word " * 5000]}, index=["row-1", "row-7"])
    with pytest.raises(RowError, match=r"row 'row-7' failed: .*max_model_len"):
        df.gptoss.map("Prompt {text}", max_tokens=2, on_error="raise", cache=False,
                      progress=False)
    marked = df.gptoss.map("Prompt {text}", max_tokens=2, cache=False, progress=False,
                           reasoning=True)
    assert "max_model_len" in marked.loc["row-7", "error"]
    assert marked.attrs["gptoss"]["summary"]["errors"] == 1


def test_series_accessor(engine: dict) -> None:
    s = pd.Series(["a", "b", None], index=[5, 6, 7], name="letters")
    out = s.gptoss.map("Letter {} or {value}", max_tokens=3, cache=False, progress=False)
    assert list(out.index) == [5, 6, 7] and pd.isna(out[7])
    assert out.attrs["gptoss"]["summary"]["unique_prompts"] == 2


def test_map_magic(engine: dict, ip: Any) -> None:
    df = pd.DataFrame({"w": WORDS[:4]})
    ip.user_ns["df"] = df
    ip.run_line_magic("gptoss_map", 'df "Uppercase the word: {w}" --out said -n 64 -t 0 '
                                    "--effort low")
    assert "said" in df.columns and len(df["said"]) == 4 and df["said"].notna().all()
    if engine["model"] == "tiny":
        assert list(df["said"]) == [w.upper() for w in WORDS[:4]]


# ---------------------------------------------------------------------- typed outputs
# These use what the embedded tiny model was trained on (sentiment from keywords).
SENTIMENT = pd.DataFrame({
    "text": ["the food was great", "the room was awful", "the train was on time today",
             "a lovely and cheerful morning", "rude and boring service", "the city park",
             None],
    "truth": ["positive", "negative", "neutral", "positive", "negative", "neutral", None],
}, index=[f"r{i}" for i in range(7)])


def test_choices_label_a_small_frame_correctly(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip("needs the trained tiny model")
    out = SENTIMENT.gptoss.map("What is the sentiment of: {text}",
                               choices=["positive", "negative", "neutral"], temperature=0,
                               cache=False, progress=False)
    assert isinstance(out.dtype, pd.CategoricalDtype)
    assert list(out.cat.categories) == ["positive", "negative", "neutral"]
    assert out.dropna().isin(["positive", "negative", "neutral"]).all()
    assert pd.isna(out["r6"])
    assert (out.dropna() == SENTIMENT["truth"].dropna()).all(), out


def test_schema_gives_typed_columns(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip("needs the trained tiny model")
    from typing import Literal

    from pydantic import BaseModel, Field

    class Review(BaseModel):
        sentiment: Literal["positive", "negative", "neutral"]
        stars: int = Field(ge=1, le=5)

    out = SENTIMENT.gptoss.map("What is the sentiment of: {text}", schema=Review,
                               temperature=0, cache=False, progress=False)
    assert list(out.columns) == ["sentiment", "stars", "truncated", "error"]
    assert str(out["sentiment"].dtype) == "category" and str(out["stars"].dtype) == "Int64"
    ok = out["error"].isna() & SENTIMENT["text"].notna()
    assert ok.sum() >= 5, out
    assert out.loc[ok, "stars"].between(1, 5).all()
    assert out.loc[ok, "sentiment"].isin(["positive", "negative", "neutral"]).all()


def test_schema_failure_is_retried_once_then_marked(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip("needs the trained tiny model")
    from typing import Literal

    from pydantic import BaseModel, field_validator

    class Picky(BaseModel):
        sentiment: Literal["positive", "negative", "neutral"]

        @field_validator("sentiment")
        @classmethod
        def never(cls, value: str) -> str:
            raise ValueError("rejected by the validator")

    df = SENTIMENT.iloc[:3]
    out = df.gptoss.map("What is the sentiment of: {text}", schema=Picky, temperature=0,
                        cache=False, progress=False)
    assert out.attrs["gptoss"]["summary"]["retried"] == 3
    assert out["error"].str.contains("rejected by the validator").all()
    with pytest.raises(RowError, match="row 'r0' failed"):
        df.gptoss.map("What is the sentiment of: {text}", schema=Picky, temperature=0,
                      cache=False, progress=False, on_error="raise")


def test_regex_constrains_the_final_answer_only(engine: dict) -> None:
    if engine["model"] != "tiny":
        pytest.skip("needs the trained tiny model")
    df = pd.DataFrame({"a": [17, 40, 8], "b": [25, 2, 13]})
    out = df.gptoss.map("What is {a} + {b}?", regex="[0-9]{1,3}", temperature=0,
                        cache=False, progress=False, reasoning=True, effort="medium")
    assert out["answer"].str.fullmatch("[0-9]{1,3}").all()
    assert out["reasoning"].str.contains("Units").all()  # the reasoning stayed free
    right = [int(x) == a + b for x, a, b in zip(out["answer"], df["a"], df["b"], strict=True)]
    assert sum(right) >= 2, out  # a toy model: mostly right


def test_progress_bar_counts_rows(engine: dict, capsys: pytest.CaptureFixture[str]) -> None:
    df = frame(5, seed=21)
    df.gptoss.map("Progress {text}", max_tokens=3, cache=False)
    err = capsys.readouterr().err
    assert "5/5" in err and "row" in err and "tok/s" in err


def test_usage_columns_account_for_every_row(engine: dict) -> None:
    df = pd.DataFrame({"text": ["What is 3 + 4?", "Uppercase the word: stone",
                                "What is 3 + 4?"]})
    out = df.gptoss.map("{text}", max_tokens=64, temperature=0, usage=True, cache=False,
                        progress=False)
    assert {"prompt_tokens", "reasoning_tokens", "completion_tokens"} <= set(out.columns)
    assert all(str(out[c].dtype) == "Int64" for c in ("prompt_tokens", "reasoning_tokens",
                                                      "completion_tokens"))
    assert (out["prompt_tokens"] > 0).all() and (out["completion_tokens"] <= 64).all()
    assert (out["reasoning_tokens"] <= out["completion_tokens"]).all()
    assert out.iloc[0].equals(out.iloc[2])  # a duplicate row shares its generation
    summary = out.attrs["gptoss"]["summary"]
    assert out["completion_tokens"].iloc[:2].sum() == summary["completion_tokens"]
