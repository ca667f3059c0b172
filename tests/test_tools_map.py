"""Tools in DataFrame maps, on the scripted engine (no vLLM).

The scripted model reads "What is A * B?", calls ``functions.multiply`` with A and B while
its prompt holds no tool result, and answers with the result once it does. Every row's
conversation goes on by itself on the engine's shared batch: the tests assert on the
order in which the engine receives requests, never on time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from pydantic import BaseModel, Field
from test_tools import call_ids, results

import gptoss_magics as gm
from gptoss_magics import harmony as H
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine.scripted import harmony_completion, user_message
from gptoss_magics.frame import MapJob, MapPlan
from gptoss_magics.frame.tool_rows import WORKERS
from gptoss_magics.settings import settings

ASK = "What is {a} * {b}?"
NUMBERS = re.compile(r"(-?\d+) \* (-?\d+)")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def numbers(ids: list[int] | tuple[int, ...]) -> tuple[int, int]:
    match = NUMBERS.search(user_message(ids))
    assert match, user_message(ids)
    return int(match.group(1)), int(match.group(2))


def answer(result: str, sampling: Sampling) -> list[int]:
    if sampling.json_schema is not None:
        value = -1 if sampling.seed == 0 else int(result)  # seed 0: fails the schema
        return harmony_completion(json.dumps({"value": value}), "The tool answered.")
    return harmony_completion(f"product {result}", "The tool answered.")


def script(ids: list[int], sampling: Sampling) -> list[int]:
    """Call multiply(A, B) until a result is in the prompt; then answer with it."""
    seen = results(ids)
    if seen:
        return answer(seen[-1], sampling)
    a, b = numbers(ids)
    return call_ids("functions.multiply", json.dumps({"a": a, "b": b}))


def frame(n: int, b: int = 7) -> pd.DataFrame:
    return pd.DataFrame({"a": list(range(n)), "b": [b] * n})


def is_continuation(request: Any) -> bool:
    return bool(results(request.prompt_ids))


def cached_rows() -> int:
    with sqlite3.connect(settings().cache_path("results.sqlite")) as db:
        return int(db.execute("SELECT count(*) FROM rows").fetchone()[0])


# ---------------------------------------------------------------------- values and trails
def test_every_row_calls_its_tool(scripted: ScriptedEngine) -> None:
    scripted.script = script
    df = frame(5)
    out = df.gptoss.map(ASK, tools=[multiply], tool_calls=True, usage=True, progress=False)
    assert list(out["answer"]) == [f"product {a * 7}" for a in range(5)]
    assert out["error"].isna().all()
    for a, trail in zip(range(5), out["tool_calls"], strict=True):
        [call] = trail
        assert (call["name"], call["arguments"], call["result"], call["error"]) == \
            ("functions.multiply", {"a": a, "b": 7}, a * 7, None)
        assert call["output"] == str(a * 7)
    firsts = [r for r in scripted.requests if not is_continuation(r)]
    seconds = [r for r in scripted.requests if is_continuation(r)]
    assert len(firsts) == len(seconds) == 5 and len({r.job_id for r in firsts}) == 1
    assert "type multiply = (_: {" in H.decode(firsts[0].prompt_ids)
    for second in seconds:  # token extension: each continuation extends its first prompt
        [first] = [f for f in firsts if numbers(f.prompt_ids) == numbers(second.prompt_ids)]
        a, b = numbers(first.prompt_ids)
        call = call_ids("functions.multiply", json.dumps({"a": a, "b": b}))
        assert list(second.prompt_ids) == list(first.prompt_ids) + call + \
            H.tool_result_ids("functions.multiply", str(a * b))
    # tokens of the whole chain: both rounds generated, the result counted as prompt
    assert (out["completion_tokens"] > len(answer("0", Sampling()))).all()
    info = out.attrs["gptoss"]
    assert info["tools"][0]["name"] == "multiply" and info["max_tool_rounds"] == 8
    plain = df.gptoss.map(ASK, tools=[multiply], progress=False)  # from the cache
    assert isinstance(plain, pd.Series) and list(plain) == list(out["answer"])


def test_failing_calls_are_row_errors(scripted: ScriptedEngine) -> None:
    """A raising tool, bad arguments, an unknown tool and the round limit fail their own
    row only; failed rows are not cached, so a rerun runs them again."""
    calls: list[int] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append(a)
        if a == 1:
            raise ValueError("the desk's multiplier is down")
        return a * b

    def by_row(ids: list[int], sampling: Sampling) -> list[int]:
        a, b = numbers(ids)
        if a == 4:  # calls again and again
            return call_ids("functions.multiply", json.dumps({"a": a, "b": b}))
        if results(ids) or a in (0, 1):
            return script(ids, sampling)
        if a == 2:
            return call_ids("functions.multiply", json.dumps({"a": "two", "b": b}))
        return call_ids("functions.divide", json.dumps({"a": a, "b": b}))

    scripted.script = by_row
    df = frame(5)
    with pytest.warns(gm.GptOssWarning, match="4 of 5 rows failed"):
        out = df.gptoss.map(ASK, tools=[multiply], max_tool_rounds=1, tool_calls=True,
                            progress=False)
    assert out.loc[0, "answer"] == "product 0" and pd.isna(out.loc[0, "error"])
    assert out["answer"].iloc[1:].isna().all()
    errors = list(out["error"].iloc[1:])
    assert errors[0] == ("the last tool call failed: multiply raised ValueError: the desk's "
                         "multiplier is down")
    assert errors[1].startswith("the last tool call failed: invalid arguments for multiply: "
                                "a: Input should be a valid integer")
    assert errors[2] == ("the last tool call failed: there is no tool named "
                         "'functions.divide'; the tools are: functions.multiply")
    assert errors[3] == ("the model kept calling tools after 1 calls (max_tool_rounds) and "
                         "gave no answer")
    trail = out.loc[4, "tool_calls"]
    assert [c["error"] for c in trail] == [
        None, "tool round limit reached (1 calls): answer now without calling tools"]
    assert sorted(calls) == [0, 1, 4]  # bad arguments and unknown names call nothing
    assert out.attrs["gptoss"]["error_rows"]["1"] == errors[0]
    assert cached_rows() == 1
    before = len(scripted.requests)
    with pytest.warns(gm.GptOssWarning):
        again = df.gptoss.map(ASK, tools=[multiply], max_tool_rounds=1, progress=False)
    assert again.attrs["gptoss"]["summary"]["cached"] == 1
    assert not any(numbers(r.prompt_ids)[0] == 0 for r in scripted.requests[before:])


def test_on_error_raise_names_the_row(scripted: ScriptedEngine) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        raise ValueError("down")

    scripted.script = script
    with pytest.raises(gm.RowError, match=r"row 0 failed: the last tool call failed: "
                                          r"multiply raised ValueError: down"):
        frame(2).gptoss.map(ASK, tools=[multiply], on_error="raise", progress=False)


# ---------------------------------------------------------------------- interleaving
def test_a_slow_tool_holds_no_other_row_back(scripted: ScriptedEngine) -> None:
    """Row 0's tool waits until the engine has received every other row's continuation:
    done round by round, it would wait in vain (then time out and come first)."""
    n = 6
    release = threading.Event()

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        if a == 0:
            release.wait(20)
        return a * b

    def watching(ids: list[int], sampling: Sampling) -> list[int]:
        if sum(is_continuation(r) for r in scripted.requests) == n - 1:
            release.set()  # the others have all gone on
        return script(ids, sampling)

    scripted.script = watching
    out = frame(n).gptoss.map(ASK, tools=[multiply], progress=False)
    assert list(out) == [f"product {a * 7}" for a in range(n)]
    order = [numbers(r.prompt_ids)[0] for r in scripted.requests if is_continuation(r)]
    assert sorted(order[:-1]) == list(range(1, n)) and order[-1] == 0
    assert len({r.job_id for r in scripted.requests}) > 2  # continuations go on their own


def test_calls_run_side_by_side_on_a_bounded_pool(scripted: ScriptedEngine) -> None:
    lock = threading.Lock()
    full = threading.Event()
    running = [0]
    peak = [0]

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if running[0] >= WORKERS:
                full.set()
        full.wait(20)  # the first calls wait until the pool is full
        with lock:
            running[0] -= 1
        return a * b

    scripted.script = script
    scripted.max_num_seqs = 32
    out = frame(20).gptoss.map(ASK, tools=[multiply], progress=False)
    assert list(out) == [f"product {a * 7}" for a in range(20)]
    assert full.is_set() and peak[0] == WORKERS


# ---------------------------------------------------------------------- the cache
def test_a_cached_row_replays_without_calling_tools(scripted: ScriptedEngine) -> None:
    calls: list[int] = []

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append(a)
        return a * b

    scripted.script = script
    df = frame(4)
    first = df.gptoss.map(ASK, tools=[multiply], tool_calls=True, progress=False)
    assert sorted(calls) == [0, 1, 2, 3] and len(scripted.requests) == 8
    again = df.gptoss.map(ASK, tools=[multiply], tool_calls=True, progress=False)
    assert sorted(calls) == [0, 1, 2, 3] and len(scripted.requests) == 8  # nothing ran
    assert again.attrs["gptoss"]["summary"]["cached"] == 4
    assert list(again["answer"]) == list(first["answer"])
    assert list(again["tool_calls"]) == list(first["tool_calls"])  # the trail, from the cache
    assert again.loc[2, "tool_calls"][0]["result"] == 14


@pytest.mark.filterwarnings("ignore::gptoss_magics.GptOssWarning")  # the run without tools
def test_the_cache_key_covers_the_tools(scripted: ScriptedEngine) -> None:
    scripted.script = script
    df = frame(2)
    df.gptoss.map(ASK, tools=[multiply], progress=False)
    runs = [len(scripted.requests)]

    def again(**options: Any) -> None:
        out = df.gptoss.map(ASK, progress=False, **options)
        runs.append(len(scripted.requests))
        assert out.attrs["gptoss"]["summary"]["cached"] == (2 if runs[-1] == runs[-2] else 0)

    again(tools=[multiply])  # the same tool: from the cache

    def multiply_floats(a: float, b: float) -> float:
        """Multiply two integers."""
        return a * b

    again(tools=[gm.function_tool(multiply_floats, name="multiply")])  # another schema
    again(tools=[multiply], max_tool_rounds=3)  # another round limit
    again()  # no tools
    assert runs == [4, 4, 8, 12, 14]


# ---------------------------------------------------------------------- stopping
@pytest.mark.scripted(max_num_seqs=16, step_s=0.002, tokens_per_step=1)
def test_cancel_aborts_requests_and_abandons_pending_calls(scripted: ScriptedEngine,
                                                           wait_until: Callable[..., None]
                                                           ) -> None:
    """Rows 0-2 are done, rows 3-5 wait for their calls, row 6 is still generating."""
    release = threading.Event()
    calls: list[int] = []
    returned: list[int] = []
    long = [True]

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append(a)
        if a >= 3:
            release.wait(20)
        returned.append(a)
        return a * b

    def slow_row_6(ids: list[int], sampling: Sampling) -> list[int]:
        if numbers(ids)[0] == 6 and long[0]:
            return harmony_completion("6 * 7", "word " * 5000)
        return script(ids, sampling)

    scripted.script = slow_row_6
    df = frame(7)
    job = df.gptoss.submit(ASK, tools=[multiply])
    try:
        wait_until(lambda: job.rows_done == 3 and len(calls) == 6, message="3 rows and 3 calls")
        assert scripted.in_flight == 1  # row 6
        sent = len(scripted.requests)
        job.cancel()
        with pytest.raises(gm.CancelledError, match="map cancelled: 3 of 7 distinct prompts"):
            job.result()
        assert scripted.in_flight == 0  # row 6 was aborted
    finally:
        release.set()
    wait_until(lambda: len(returned) == 6, message="the abandoned calls to return")
    assert len(scripted.requests) == sent  # their results were ignored
    assert cached_rows() == 3
    long[0] = False
    out = df.gptoss.map(ASK, tools=[multiply], progress=False)  # the rest only
    assert list(out) == [f"product {a * 7}" for a in range(7)]
    assert sorted(calls[6:]) == [3, 4, 5, 6]


@pytest.mark.scripted(max_num_seqs=16)
def test_an_interrupt_keeps_the_finished_rows(scripted: ScriptedEngine,
                                              wait_until: Callable[..., None]) -> None:
    release = threading.Event()

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        if a == 3:  # the user presses Ctrl-C once the other rows are done
            wait_until(lambda: cached_rows() == 3, message="rows 0-2 in the cache")
            os.kill(os.getpid(), signal.SIGINT)
        if a >= 3:
            release.wait(20)
        return a * b

    scripted.script = script
    try:
        with pytest.raises(KeyboardInterrupt, match="map interrupted: 3 of 4 distinct"):
            frame(4).gptoss.map(ASK, tools=[multiply], progress=False)
        assert scripted.in_flight == 0
        sent = len(scripted.requests)
    finally:
        release.set()
    partial = gm.last_result()
    assert partial is not None
    assert list(partial.iloc[:3]) == ["product 0", "product 7", "product 14"]
    assert pd.isna(partial.iloc[3])
    assert not any(is_continuation(r) and numbers(r.prompt_ids)[0] == 3
                   for r in scripted.requests[:sent])


def test_a_background_map_with_tools_keeps_its_priority(scripted: ScriptedEngine) -> None:
    scripted.script = script
    job = frame(4).gptoss.submit(ASK, tools=[multiply], tool_calls=True)
    assert isinstance(job, MapJob)
    out = job.result(60)
    assert list(out["answer"]) == [f"product {a * 7}" for a in range(4)]
    assert len(scripted.requests) == 8
    assert {r.priority for r in scripted.requests} == {MapJob.PRIORITY}  # every round


# ---------------------------------------------------------------------- constraints, plan
class Product(BaseModel):
    value: int = Field(ge=0)


def test_a_schema_applies_to_the_answer_after_the_chain(scripted: ScriptedEngine) -> None:
    scripted.script = script
    out = frame(3).gptoss.map(ASK, tools=[multiply], schema=Product, seed=1, progress=False)
    assert list(out["value"]) == [0, 7, 14] and out["error"].isna().all()
    assert all(r.sampling.json_schema is not None for r in scripted.requests)
    # an answer that fails the schema gets one more try (the chain runs again)
    retried = frame(2, b=3).gptoss.map(ASK, tools=[multiply], schema=Product, seed=0,
                                       progress=False)
    assert list(retried["value"]) == [0, 3]
    assert retried.attrs["gptoss"]["summary"]["retried"] == 2


def test_plan_counts_the_tool_declarations(scripted: ScriptedEngine) -> None:
    df = frame(3)
    bare = df.gptoss.plan(ASK)
    with_tools = df.gptoss.plan(ASK, tools=[multiply], max_tool_rounds=2)
    assert isinstance(with_tools, MapPlan) and with_tools.tools == ("functions.multiply",)
    assert "type multiply = (_: {" in with_tools.first_prompt
    spec = "// Multiply two integers.\ntype multiply = (_: {"
    assert with_tools.prompt_tokens_min > bare.prompt_tokens_min + len(
        H.encoding().encode(spec, allowed_special="all"))
    assert with_tools.most_tokens == 3 * with_tools.max_tokens * 3  # rows x tokens x rounds
    assert "multiply (at most 2 calls per row)" in repr(with_tools)
    assert scripted.requests == []


# ---------------------------------------------------------------------- the magic
def test_the_map_magic_takes_tools(scripted: ScriptedEngine, ip: InteractiveShell) -> None:
    scripted.script = script
    df = frame(3)
    ip.user_ns.update(df=df, multiply=multiply)
    ip.run_line_magic("gptoss_map", f'df "{ASK}" -o product --tools multiply --tool-calls')
    assert list(df["product"]) == ["product 0", "product 7", "product 14"]
    assert [t[0]["result"] for t in df["product_tool_calls"]] == [0, 7, 14]
    plan = ip.run_line_magic("gptoss_map", f'df "{ASK}" -o p --tools multiply --dry-run')
    assert plan.tools == ("functions.multiply",)
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--tools nope: no such function in the notebook"):
        ip.run_line_magic("gptoss_map", f'df "{ASK}" -o p --tools nope')
