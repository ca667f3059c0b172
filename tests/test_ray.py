"""df.gptoss.map on a real local Ray cluster (two nodes of one CPU each, on this machine),
with two replicas of the real vLLM engine on the tiny model inside Ray Data actors.

Needs Ray Data (``pip install 'gptoss-magics[ray]'``, which ``make setup`` installs);
skipped only where Ray is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics.frame.cache import ResultCache
from gptoss_magics.settings import GptOssSettings, settings

ray = pytest.importorskip("ray", reason="Ray Data is not installed: pip install "
                          "'gptoss-magics[ray]'")

ROWS = 200
WORDS = ["river", "stone", "garden", "window", "tiger", "castle"]
TEMPLATE = "Uppercase the word: {w}"
#: options whose meaning must survive the trip: a constraint (vLLM's structured outputs and
#: our reasoning parser in the replicas), usage and confidence columns
OPTIONS: dict[str, Any] = {"effort": "low", "max_tokens": 48, "progress": False,
                           "choices": [w.upper() for w in WORDS], "usage": True,
                           "confidence": True}
pytestmark = [pytest.mark.engine,
              pytest.mark.filterwarnings("ignore::gptoss_magics.GptOssWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]


def frame() -> pd.DataFrame:
    """200 distinct rows on a non-default index."""
    words = [f"{WORDS[i % 6]} {WORDS[(i // 6) % 6]} {i}" for i in range(ROWS)]
    return pd.DataFrame({"w": words}, index=range(1000, 1000 + 3 * ROWS, 3))


@pytest.fixture(scope="module")
def cluster(tiny_path: Path) -> Iterator[Any]:
    """Two Ray nodes of one CPU each on this machine; this process is the driver."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def in_process(engine: dict) -> pd.DataFrame:
    """The in-process answers (the shared engine), with the cache off."""
    return frame().gptoss.map(TEMPLATE, cache=False, **OPTIONS)


@pytest.fixture
def own_cache(fresh_settings: GptOssSettings, tmp_path: Path) -> Path:
    fresh_settings.cache_dir = str(tmp_path / "cache")
    return tmp_path / "cache" / "results.sqlite"


def same(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Answers, token counts and flags identical; the confidence (a probability from the
    log-probabilities) equal to 0.01: on CPU, an engine batch of other rows can move a
    bf16 logit in its last bits."""
    pd.testing.assert_frame_equal(out.drop(columns="confidence"),
                                  expected.drop(columns="confidence"))
    pd.testing.assert_series_equal(out["confidence"], expected["confidence"], check_exact=False,
                                   rtol=0, atol=0.01)


def backend(**kw: Any) -> gm.RayBackend:
    model = os.environ.get("GPTOSS_TEST_MODEL", "tiny")  # the shared engine's (conftest)
    return gm.RayBackend(**{"replicas": 2, "batch_size": 16, "model": model, **kw})


def test_two_replicas_give_the_in_process_answers(cluster: Any,
                                                  in_process: pd.DataFrame) -> None:
    out = frame().gptoss.map(TEMPLATE, cache=False, backend=backend(), **OPTIONS)
    assert out["answer"].notna().sum() > ROWS // 2  # the tiny model answers most of them
    same(out, in_process)
    assert isinstance(out["answer"].dtype, pd.CategoricalDtype)
    info, here = out.attrs["gptoss"], in_process.attrs["gptoss"]
    assert info["weights_fingerprint"] == here["weights_fingerprint"]
    assert info["sampling"] == here["sampling"]
    assert info["summary"]["generated"] == ROWS
    ran = info["backend"]
    assert ran["kind"] == "ray" and ran["replicas"] == 2
    assert len(ran["rows_by_replica"]) == 2 and sum(ran["rows_by_replica"].values()) == ROWS
    assert len(ran["rows_by_node"]) == 2  # one replica on each node
    assert ran["hosts"]
    assert "backend" not in here


def _replica_pids(job: gm.MapJob) -> list[int]:
    engine = job._mapper.session.engine
    return sorted({int(name.rsplit("/", 1)[1]) for name in engine.by_replica})


def test_a_replica_killed_mid_map_loses_nothing_finished(
        cluster: Any, in_process: pd.DataFrame, own_cache: Path,
        wait_until: Callable[..., None]) -> None:
    job = frame().gptoss.submit(TEMPLATE, backend=backend(), **OPTIONS)
    wait_until(lambda: job.rows_done >= 48 or job.done, timeout=600, message="48 rows")
    assert not job.done, "the map finished before a replica could be killed"
    saved_before = _cached_keys(own_cache)
    victim = _replica_pids(job)[0]
    os.kill(victim, signal.SIGKILL)
    out = job.result(timeout=900)
    same(out, in_process)
    served = out.attrs["gptoss"]["backend"]["rows_by_replica"]
    assert sum(served.values()) == ROWS  # each row came back once
    assert len(served) == 3  # the killed replica, its restart, and the other one
    assert saved_before <= _cached_keys(own_cache)
    assert out.attrs["gptoss"]["summary"]["generated"] == ROWS


def _cached_keys(path: Path) -> set[str]:
    store = ResultCache(path)
    try:
        assert store.db is not None
        return {k for (k,) in store.db.execute("SELECT key FROM rows")}
    finally:
        store.close()


def test_resume_after_an_interrupt_generates_only_the_missing_rows(
        cluster: Any, in_process: pd.DataFrame, own_cache: Path,
        wait_until: Callable[..., None]) -> None:
    job = frame().gptoss.submit(TEMPLATE, backend=backend(), **OPTIONS)
    wait_until(lambda: job.rows_done >= 32 or job.done, timeout=600, message="32 rows")
    job.cancel()
    with pytest.raises(gm.CancelledError):
        job.result()
    saved = len(_cached_keys(own_cache))
    assert 32 <= saved < ROWS
    out = frame().gptoss.map(TEMPLATE, backend=backend(), **OPTIONS)
    same(out, in_process)
    summary = out.attrs["gptoss"]["summary"]
    assert summary["cached"] == saved and summary["generated"] == ROWS - saved
    assert sum(out.attrs["gptoss"]["backend"]["rows_by_replica"].values()) == ROWS - saved


def test_a_replica_with_other_weights_is_refused(cluster: Any, tiny_path: Path,
                                                 tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_path, other)
    config = other / "config.json"
    config.write_text(config.read_text() + "\n")  # one byte more: another fingerprint
    b = gm.RayBackend(replicas=1, model=str(tiny_path), model_path_on_nodes=str(other))
    with pytest.raises(gm.ModelFolderError) as err:
        frame().head(4).gptoss.map(TEMPLATE, cache=False, backend=b, **OPTIONS)
    message = str(err.value)
    assert "\n" not in message
    assert "fingerprint mismatch" in message and str(other) in message
    assert "shared storage" in message
    assert settings().cache_dir  # the driver is untouched


@pytest.mark.parametrize("kind", ["function", "python"])
def test_tools_run_on_the_replicas(cluster: Any, engine: dict, fresh_settings: GptOssSettings,
                                   tmp_path: Path, kind: str) -> None:
    """Each row's tool conversation runs on a replica (the function on its host, the
    python tool in a sandbox there); answers and trails are the in-process ones."""
    from gptoss_magics.tiny import read_artifact_meta
    from gptoss_magics.tiny import tasks as T

    if engine["model"] != "tiny" or "multiply" not in read_artifact_meta()["tasks"]:
        pytest.skip("needs the trained tiny model, which calls tools")
    fresh_settings.current_date = "2026-03-29"  # as the tiny model was trained
    log = tmp_path / "calls.txt"

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return a * b

    pairs = [tuple(int(n) for n in re.findall(r"\d+", ex.user))
             for ex in T.held_out(6, seed=71, tasks=("multiply",), tools=kind)]
    df = pd.DataFrame(pairs, columns=["a", "b"])
    opts: dict[str, Any] = {"tools": [multiply] if kind == "function" else ["python"],
                            "tool_calls": True, "temperature": 0, "max_tokens": 200,
                            "progress": False, "cache": False}
    here = df.gptoss.map("What is {a} * {b}?", **opts)
    there = df.gptoss.map("What is {a} * {b}?", backend=backend(batch_size=4), **opts)
    right = [str(a * b) for a, b in pairs]
    assert sum(there["answer"].str.strip() == right) >= 0.8 * len(df), there
    assert list(there["answer"]) == list(here["answer"])
    assert list(there["error"]) == list(here["error"])

    def trail(calls: Any) -> list[tuple[Any, ...]]:
        return [(c["name"], c["arguments"], c["result"], c["error"], c["output"])
                for c in calls or []]

    assert [trail(t) for t in there["tool_calls"]] == [trail(t) for t in here["tool_calls"]]
    assert sum(map(len, there["tool_calls"])) >= 0.8 * len(df)
    info = there.attrs["gptoss"]
    assert info["tools"] == here.attrs["gptoss"]["tools"]
    assert sum(info["backend"]["rows_by_replica"].values()) == len(df)
    if kind == "function":  # every call of the Ray map ran in a replica's process
        pids = log.read_text().split()
        driver = [p for p in pids if p == str(os.getpid())]
        replicas = [p for p in pids if p != str(os.getpid())]
        assert len(driver) == len(replicas) == sum(map(len, there["tool_calls"]))
