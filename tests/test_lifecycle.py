"""Unload frees memory; load again works; errors when nothing is loaded.

Memory figures are printed (``pytest -s``), not asserted against thresholds: how much a
process gives back depends on the machine and its load; benchmarks/ tracks the figures.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

import gptoss_magics as gm

pytestmark = [pytest.mark.engine, pytest.mark.lifecycle]

MEMORY_KEYS = {"model", "rss_before_load", "rss_loaded", "rss_after_unload",
               "gpu_before_load", "gpu_loaded", "gpu_after_unload"}


def _mib(report: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in report.items()
                     if k.startswith("rss") and v is not None)


def test_unload_frees_memory_and_load_works_again(engine: dict) -> None:
    first = gm.unload()
    assert not gm.is_loaded()
    assert set(first) >= MEMORY_KEYS and first["model"] == engine["model"]
    assert all(isinstance(first[k], int) for k in MEMORY_KEYS if k.startswith("rss"))
    print(f"\nfirst cycle: {_mib(first)}")
    # the engine's weights, KV cache and tokenizer came back (imported code stays)
    assert first["rss_after_unload"] < first["rss_loaded"], first

    with pytest.raises(gm.EngineNotLoadedError, match="load"):
        gm.complete("hello")
    with pytest.raises(gm.EngineNotLoadedError):
        gm.unload()

    # loading leaves the caller's random numbers alone (vLLM seeds the globals)
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    gm.load("tiny")
    assert random.random() == expected
    assert gm.complete("again", max_tokens=4).completion_tokens == 4

    second = gm.unload()
    assert set(second) >= MEMORY_KEYS
    assert second["rss_after_unload"] < second["rss_loaded"], second
    print(f"second cycle: {_mib(second)}; kept since the first: "
          f"{(second['rss_after_unload'] - first['rss_after_unload']) / 2**20:,.0f} MiB")
    gm.load("tiny")  # leave it loaded for any later test
    assert gm.status()["state"] == "ready"


def test_status_without_a_model(engine: dict) -> None:
    gm.unload()
    st = gm.status()
    assert st["state"] == "none" and st["model"] is None
    assert {"rss_bytes", "defaults", "background"} <= set(st)
    gm.load("tiny")


def test_load_and_unload_magics(engine: dict, ip: Any,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.error import UsageError

    ip.run_line_magic("gptoss_unload", "")
    assert "Unloaded" in capsys.readouterr().out
    with pytest.raises(UsageError, match="No model is loaded"):
        ip.run_line_magic("gptoss_unload", "")
    with pytest.raises(UsageError, match="No model is loaded"):
        ip.run_cell_magic("gptoss", "", "hello")
    # the configured default is not on this machine: say so, suggest tiny, load nothing
    with pytest.raises(UsageError, match=r"openai/gpt-oss-20b is not on this machine.*tiny"):
        ip.run_line_magic("gptoss_load", "")
    assert not gm.is_loaded()
    with pytest.raises(UsageError, match="No model folder"):
        ip.run_line_magic("gptoss_load", "/no/such/folder")
    st = ip.run_line_magic("gptoss_load", "tiny --max-model-len 2048")
    assert st["state"] == "ready" and st["max_model_len"] == 2048
    gm.unload()
    gm.load("tiny")


def test_interrupted_load_leaves_nothing_running(engine: dict, wait_until: Any) -> None:
    import _thread
    import threading

    gm.unload()
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt, match="loading interrupted"):
        gm.load("tiny")
    assert not gm.is_loaded() and gm.status()["state"] == "none"
    wait_until(lambda: not any(t.name == "gptoss-engine" for t in threading.enumerate()),
               timeout=120, message="the half-started engine to shut down")
    gm.load("tiny")
    assert gm.complete("What is 2 + 2?", max_tokens=64, temperature=0).completion_tokens > 0


def test_unload_during_a_background_map_keeps_its_finished_rows(engine: dict,
                                                                wait_until: Any) -> None:
    import pandas as pd

    df = pd.DataFrame({"q": [f"What is {i % 100} + {i // 100}? (unload)" for i in range(600)]})
    job = df.gptoss.submit("{q}", effort="high", temperature=0, max_tokens=48)
    wait_until(lambda: job.rows_done > 0, timeout=120)
    gm.unload()
    assert job.wait(60)
    with pytest.raises(gm.EngineDeadError, match=r"unloaded.*distinct prompts are"):
        job.result()
    kept = job.rows_done
    gm.load("tiny")
    again = df.gptoss.map("{q}", effort="high", temperature=0, max_tokens=48, progress=False)
    assert again.attrs["gptoss"]["summary"]["cached"] >= kept > 0
