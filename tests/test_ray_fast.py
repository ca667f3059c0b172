"""RayBackend without a cluster: its arguments, the map's checks before Ray starts, and the
one line a user gets without Ray installed (no vLLM, no Ray cluster, no model)."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics.cluster.driver import _clear
from gptoss_magics.cluster.replica import MISMATCH, check_fingerprint, sampling_from_json
from gptoss_magics.engine import Sampling


@pytest.mark.parametrize("kwargs", [
    {"replicas": 0}, {"replicas": 1.5}, {"replicas": True}, {"tensor_parallel_size": 0},
    {"gpus_per_replica": -1}, {"gpus_per_replica": 1, "tensor_parallel_size": 2},
    {"batch_size": 0}, {"cpus_per_replica": "one"}, {"model": 3}, {"engine_args": [1]},
])
def test_bad_arguments_say_which(kwargs: dict[str, Any]) -> None:
    with pytest.raises(gm.InvalidOptionError) as err:
        gm.RayBackend(**kwargs)
    assert next(iter(kwargs)) in str(err.value) and "\n" not in str(err.value)


def test_a_backend_is_a_plain_object() -> None:
    b = gm.RayBackend(replicas=4, gpus_per_replica=2, tensor_parallel_size=2)
    assert (b.replicas, b.gpus_per_replica, b.tensor_parallel_size) == (4, 2, 2)
    assert "replicas=4" in repr(b)


def test_backend_must_be_a_ray_backend(scripted: Any) -> None:
    df = pd.DataFrame({"w": ["a"]})
    with pytest.raises(gm.InvalidOptionError, match="RayBackend"):
        df.gptoss.map("Say {w}", backend="ray")


def test_a_tool_that_cannot_travel_is_refused_before_ray_starts(scripted: Any) -> None:
    pytest.importorskip("ray", reason="Ray Data is not installed")
    desk = threading.Lock()  # a connection-like object Ray cannot send to the replicas

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        with desk:
            return a + b

    with pytest.raises(gm.InvalidOptionError) as err:
        pd.DataFrame({"w": ["a"]}).gptoss.map("Say {w}", tools=[add],
                                              backend=gm.RayBackend())
    assert "functions.add cannot be sent to the Ray replicas" in str(err.value)
    assert "\n" not in str(err.value)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_bad_template_fails_before_ray_starts(scripted: Any) -> None:
    with pytest.raises(gm.TemplateError):
        pd.DataFrame({"w": ["a"]}).gptoss.map("Say {nope}", backend=gm.RayBackend())


def test_without_ray_the_error_says_how_to_install_it() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "import pandas as pd, gptoss_magics as gm\n"
            "try:\n"
            "    pd.DataFrame({'w': ['a']}).gptoss.map('Say {w}', backend=gm.RayBackend())\n"
            "except gm.MissingDependencyError as exc:\n"
            "    print('ERR', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERR RayBackend needs Ray Data" in proc.stdout
    assert "pip install 'gptoss-magics[ray]'" in proc.stdout


def test_sampling_travels_as_json() -> None:
    s = Sampling(max_tokens=7, temperature=0.5, seed=3, choice=("a", "b"),
                 reasoning_budget=4, logprobs=True)
    import json

    assert sampling_from_json(json.dumps(s.as_dict())) == s
    plain = Sampling()
    assert sampling_from_json(json.dumps(plain.as_dict())) == plain


def test_a_replica_refuses_other_weights(tmp_path: Any) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(gm.ModelFolderError) as err:
        check_fingerprint(str(tmp_path), "sha256:" + "0" * 64, "node-a")
    assert str(err.value).startswith(MISMATCH) and "node-a" in str(err.value)


def test_ray_errors_become_one_line() -> None:
    wrapped = RuntimeError(f"ray.exceptions.ActorDiedError: ...\n  File x\n"
                           f"gptoss_magics.errors.ModelFolderError: {MISMATCH} the replica on "
                           "h reads /m as sha256:1..., the driver's weights are sha256:2...")
    err = _clear(wrapped)
    assert isinstance(err, gm.ModelFolderError) and str(err).startswith(MISMATCH)
    ray_error = type("RayTaskError", (RuntimeError,), {"__module__": "ray.exceptions"})
    other = _clear(ray_error("Task failed\nbecause"))
    assert isinstance(other, gm.EngineDeadError) and "\n" not in str(other)
    bug = AttributeError("no attribute 'x'")
    assert _clear(bug) is bug  # a bug keeps its type and traceback
