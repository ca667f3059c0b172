"""Background work keeps slots free for the notebook (engine/reserve.py), on the scripted
engine: its scheduler admits by priority into ``max_num_seqs`` slots like vLLM's, without
preemption. The same guarantee on the real engine: tests/test_background.py."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics.engine import Sampling, ScriptedEngine
from gptoss_magics.engine.reserve import Reserve, default_reserve

LONG = Sampling(max_tokens=400)  # 100 steps of 4 tokens: a row outlives a short request
SHORT = Sampling(max_tokens=8)


def long_script(prompt: list[int], sampling: Sampling) -> list[int]:
    return [1000] * sampling.max_tokens


def rows_done(job: Any) -> int:
    """Read the job's events so far; the number of its requests that finished."""
    while job.poll() is not None:
        pass
    return sum(c is not None for c in job.completions)


def test_default_reserve_is_small_and_leaves_the_job_a_slot() -> None:
    assert [default_reserve(n) for n in (1, 2, 5, 8, 256, 1024)] == [0, 1, 4, 4, 4, 16]
    assert Reserve(8, 20).reserve == 7  # never all the slots
    assert Reserve(8, -1).reserve == 0


def test_background_rows_never_fill_the_engine() -> None:
    eng = ScriptedEngine(long_script, max_num_seqs=8, reserve=2, step_s=0.002)
    try:
        job = eng.submit([[1, i] for i in range(40)], LONG, priority=1)
        peak = 0
        while not job.finished:
            stats = eng.scheduling()
            peak = max(peak, stats["background_in_flight"])
            assert stats["background_in_flight"] + stats["background_held"] <= 40
            job.poll(0.01)
        assert peak == 6  # 8 slots, 2 kept free
        assert eng.scheduling()["background_in_flight"] == 0
        assert all(c is not None and len(c.token_ids) == 400 for c in job.completions)
    finally:
        eng.close()


def short_request_during_a_long_job(reserve: int, running: int) -> tuple[int, Any, dict]:
    """64 long background rows on 8 slots with ``reserve`` kept free; once ``running`` of
    them run, one short interactive request. (rows finished meanwhile, its answer, the
    engine's scheduling figures after it)"""
    eng = ScriptedEngine(long_script, max_num_seqs=8, reserve=reserve, step_s=0.002)
    try:
        bg = eng.submit([[1, i] for i in range(64)], LONG, priority=1)
        while eng.scheduling()["background_in_flight"] < running:
            pass
        before = rows_done(bg)
        answer = eng.generate([[2, 2]], SHORT)[0]
        finished = rows_done(bg) - before
        stats = eng.scheduling()
        bg.abort()
        return finished, answer, stats
    finally:
        eng.close()


def test_an_interactive_request_starts_at_once_while_rows_run() -> None:
    finished, answer, stats = short_request_during_a_long_job(reserve=2, running=6)
    assert len(answer.token_ids) == 8
    # two steps for the short request; a background row needs a hundred
    assert finished == 0
    assert stats["interactive_served"] == 1


def test_without_a_reserve_the_request_waits_for_a_row() -> None:
    """What the reserve prevents: with every slot taken, the short request waits until
    a whole wave of rows has finished."""
    finished, _, _ = short_request_during_a_long_job(reserve=0, running=8)
    assert finished >= 8


def test_two_background_jobs_share_the_slots_and_neither_starves() -> None:
    eng = ScriptedEngine(long_script, max_num_seqs=8, reserve=2, step_s=0.002)
    try:
        first = eng.submit([[1, i] for i in range(30)], SHORT, priority=1)
        second = eng.submit([[3, i] for i in range(30)], SHORT, priority=1)
        ends = []
        for tag, job in ((1, first), (2, second)):
            for c in eng_wait(job):
                ends.append((job.t0 + c.latency_s, tag))
        order = [tag for _, tag in sorted(ends)]
        assert sorted(order) == [1] * 30 + [2] * 30
        # fed in turn: the second job's rows do not wait for all of the first's
        assert order[:24].count(2) >= 8
    finally:
        eng.close()


def eng_wait(job: Any) -> list[Any]:
    """Every completion of ``job``, once it has finished."""
    for _ in job.iter_events():
        pass
    return list(job.completions)


def test_abort_drops_the_held_rows() -> None:
    eng = ScriptedEngine(long_script, max_num_seqs=4, reserve=1, step_s=0.002)
    try:
        bg = eng.submit([[1, i] for i in range(50)], LONG, priority=1)
        bg.abort()
        completions = eng.generate([[2, 2]], SHORT)
        assert len(completions[0].token_ids) == 8
        stats = eng.scheduling()
        assert stats["background_held"] == 0 and stats["background_in_flight"] == 0
        assert eng.in_flight == 0
    finally:
        eng.close()


@pytest.mark.scripted(max_num_seqs=8, reserve=2, step_s=0.002, script=long_script)
def test_the_job_shows_its_reserve_and_the_requests_served(scripted: ScriptedEngine,
                                                          wait_until: Any) -> None:
    df = pd.DataFrame({"q": [f"row {i}" for i in range(40)]})
    job = df.gptoss.submit("{q}", max_tokens=400, cache=False)
    try:
        wait_until(lambda: scripted.scheduling()["background_in_flight"] == 6, timeout=30)
        gm.complete("hello", max_tokens=8)
        assert job.interactive_served == 1
        text = repr(job)
        assert "2 of 8 engine slots kept for the notebook" in text
        assert "1 interactive request served meanwhile" in text
    finally:
        job.cancel()


def test_a_batch_launched_while_a_job_runs_starts_at_once_and_goes_first() -> None:
    """An evaluation or an effort comparison (many interactive requests) starts on the
    reserve at once, and the job's held rows wait until the batch is done (a batch larger
    than the reserve also takes the slots of the job's rows as they finish)."""
    eng = ScriptedEngine(long_script, max_num_seqs=8, reserve=2, step_s=0.002)
    try:
        bg = eng.submit([[1, i] for i in range(64)], LONG, priority=1)
        while eng.scheduling()["background_in_flight"] < 6:
            pass
        batch = eng.submit([[2, i] for i in range(12)], Sampling(max_tokens=40))
        ends = sorted(batch.t0 + c.latency_s for c in eng_wait(batch) if c)
        rows = sorted(bg.t0 + c.latency_s for c in eng_wait(bg) if c)
        # the batch ran on the two reserve slots at once, two by two (10 steps each),
        # and was done before the first row (100 steps) finished ...
        assert ends[-1] < rows[0]
        # ... and no held row entered before the batch was served
        assert sum(t > ends[-1] for t in rows) == 64
        assert eng.scheduling()["interactive_served"] == 12
    finally:
        eng.close()
