"""Background maps (df.gptoss.submit): the kernel stays free, interactive requests go first."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics.frame import MapJob
from gptoss_magics.session import current

pytestmark = pytest.mark.engine

WORDS = ["river", "stone", "garden", "window", "tiger", "castle", "honey", "rocket"]


def sums(n: int, offset: int = 0) -> pd.DataFrame:
    """``n`` distinct sums (up to 1,000)."""
    return pd.DataFrame({"q": [f"What is {(i + offset) % 100} + {(i + offset) // 100 % 10}?"
                               for i in range(n)]})


def test_a_background_map_gives_the_map_result(engine: dict) -> None:
    df = pd.DataFrame({"w": WORDS * 3})
    kw = {"effort": "low", "temperature": 0, "max_tokens": 64, "cache": False}
    job = df.gptoss.submit("Uppercase the word: {w}", **kw)
    assert isinstance(job, MapJob)
    result = job.result(timeout=300)
    assert job.done and job.rows_done == job.rows == len(df)
    assert repr(job).startswith("MapJob done: 24 of 24 rows (100%)")
    assert "<progress value='24' max='24'>" in job._repr_html_()
    foreground = df.gptoss.map("Uppercase the word: {w}", progress=False, **kw)
    assert list(result) == list(foreground)
    if engine["model"] == "tiny":
        assert list(result[:8]) == [w.upper() for w in WORDS]


def test_interactive_requests_go_ahead_of_its_rows(engine: dict, wait_until: Any) -> None:
    """Every row runs to max_tokens, so the job's rows finish in waves of ``slots -
    reserve`` at once. Asked just after a wave, a short request is answered before the
    next one: without the reserve it would wait for that whole wave (a quarter of the
    job) to free a slot."""
    info = current().engine.info
    assert info["priority"]  # the engine schedules by priority
    sched = current().engine.scheduling()
    wave = sched["slots"] - sched["reserve"]
    assert sched["reserve"] >= 1 and wave < 1000
    df = sums(1000)
    job = df.gptoss.submit("{q}", effort="high", temperature=0, max_tokens=48, cache=False)
    try:
        wait_until(lambda: job.rows_done >= wave or job.done, timeout=300)
        assert not job.done
        from gptoss_magics.magics import StatusView

        assert re.search(r"background\s+map [\d,]+/1,000 rows",
                         repr(StatusView(gm.status())))  # as %gptoss_status shows it
        assert gm.status()["background"][0]["rows"] == 1000
        asked = job.rows_done
        reply = gm.complete("Uppercase the word: river", effort="low", temperature=0,
                            max_tokens=24)
        answered = job.rows_done
        shown = repr(job)
    finally:
        job.cancel()
    assert reply.completion_tokens > 0
    if engine["model"] == "tiny":
        assert reply.final == "RIVER"
    print(f"answered after {reply.latency_s:.2f} s; {answered - asked} of the job's "
          f"{len(df)} rows finished meanwhile; {shown}")
    assert answered - asked < len(df) // 10
    assert f"{sched['reserve']} of {sched['slots']} engine slots kept for the notebook" in shown
    assert "1 interactive request served meanwhile" in shown


def test_two_background_jobs_share_the_engine(engine: dict) -> None:
    """A small job submitted behind a large one does not wait for all of its rows: the
    two jobs' rows are fed in turn (first come, first served would finish the large job's
    1,000 rows first)."""
    kw = {"effort": "low", "temperature": 0, "max_tokens": 16, "cache": False}
    large = sums(1000).gptoss.submit("{q} (large)", **kw)
    small = sums(100, offset=7).gptoss.submit("{q} (small)", **kw)
    try:
        assert small.wait(600)
        large_when_small_ended = large.rows_done
    finally:
        large.cancel()
    assert len(small.result()) == 100
    assert large_when_small_ended < 700, large_when_small_ended


def test_cancel_keeps_the_finished_rows(engine: dict, wait_until: Any) -> None:
    df = sums(300, offset=3)
    kw = {"effort": "medium", "temperature": 0, "max_tokens": 48}
    job = df.gptoss.submit("{q} (background)", **kw)
    wait_until(lambda: job.rows_done >= 20 or job.done, timeout=120)
    job.cancel()
    assert job.done and repr(job).startswith("MapJob cancelled")
    with pytest.raises(gm.CancelledError, match=r"map cancelled: \d+ of 300 distinct prompts"):
        job.result()
    kept = job.rows_done
    again = df.gptoss.map("{q} (background)", progress=False, **kw)
    summary = again.attrs["gptoss"]["summary"]
    assert summary["cached"] >= min(kept, 20) and summary["cached"] + summary["generated"] == 300


def test_its_warning_comes_with_the_result(engine: dict) -> None:
    job = sums(4).gptoss.submit("{q}", effort="high", max_tokens=8, cache=False)
    with pytest.warns(gm.GptOssWarning, match="4 of 4 rows hit max_tokens"):
        job.result(timeout=120)


def test_submit_needs_a_model_at_once() -> None:
    code = ("import pandas as pd, gptoss_magics as gm\n"
            "try:\n    pd.DataFrame({'a': [1]}).gptoss.submit('{a}')\n"
            "except gm.EngineNotLoadedError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.startswith("refused: No model is loaded"), out.stdout + out.stderr


def test_the_map_magic_in_the_background(engine: dict, ip: Any) -> None:
    ip.user_ns["words"] = pd.DataFrame({"w": WORDS})
    job = ip.run_line_magic("gptoss_map", 'words "Uppercase the word: {w}" -o up -t 0 -n 64 '
                                          "--no-cache --background")
    assert isinstance(job, MapJob)
    result = job.result(timeout=120)
    assert "up" not in ip.user_ns["words"].columns  # assigning it is the caller's move
    if engine["model"] == "tiny":
        assert list(result) == [w.upper() for w in WORDS]
