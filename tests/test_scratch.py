"""A test run leaves no scratch behind: its folder holds the expanded models (3.5 GB), and
runs that each left one filled a 250 GB disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_test_run_removes_its_scratch_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GPTOSS_TEST_ROOT"}
    env["TMPDIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_scratch.py", "-k", "the_inner_run"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    assert not list(tmp_path.glob("gptoss-tests-*")), list(tmp_path.iterdir())


def test_the_inner_run_writes_into_its_scratch_folder(test_root: Path) -> None:
    (test_root / "cache" / "something").mkdir(parents=True)
    assert test_root.name.startswith("gptoss-tests-") or os.environ.get("GPTOSS_TEST_ROOT")
