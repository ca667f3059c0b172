"""Test set-up: one real vLLM engine on the tiny model for the whole session.

Every test run gets its own cache folder (tiny model, result cache) and its own
temporary folder (vLLM leaves IPC sockets there), both under one session folder;
child processes (kernels, the offline test) inherit them through the environment.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(os.environ.get("GPTOSS_TEST_ROOT") or tempfile.mkdtemp(prefix="gptoss-tests-"))
os.environ["GPTOSS_MAGICS_CACHE"] = str(_ROOT / "cache")
os.environ["TMPDIR"] = str(_ROOT / "tmp")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
(_ROOT / "tmp").mkdir(parents=True, exist_ok=True)
tempfile.tempdir = None  # re-read TMPDIR

#: the model the shared engine runs (override with GPTOSS_TEST_MODEL, e.g. tiny-random)
TEST_MODEL = os.environ.get("GPTOSS_TEST_MODEL", "tiny")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that unload and reload the shared engine run last."""
    items.sort(key=lambda item: item.get_closest_marker("lifecycle") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lifecycle: unloads and reloads the shared engine")


@pytest.fixture(scope="session")
def test_root() -> Path:
    """The folder holding this run's cache and temporary files."""
    return _ROOT


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """The embedded tiny model, built once for the session."""
    from gptoss_magics.tiny import build_tiny

    return build_tiny(TEST_MODEL)


@pytest.fixture(scope="session")
def engine(tiny_path: Path) -> Iterator[dict]:
    """The real vLLM engine on the tiny model, loaded once per test session."""
    import gptoss_magics as gm

    if not gm.is_loaded():
        gm.load(TEST_MODEL)
    yield gm.status()
    if gm.is_loaded():
        gm.unload()


@pytest.fixture
def count_requests(engine: dict, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Number of prompts in each engine submission made during the test."""
    from gptoss_magics.session import current

    eng = current().engine
    calls: list[int] = []
    original = eng.submit

    def submit(prompts, sampling, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(prompts))
        return original(prompts, sampling, **kw)

    monkeypatch.setattr(eng, "submit", submit)
    return calls


@pytest.fixture
def fresh_settings() -> Iterator[object]:
    """The settings singleton, restored to its values after the test."""
    from gptoss_magics.settings import settings

    s = settings()
    saved = {name: getattr(s, name) for name in s.trait_names() if s.trait_metadata(
        name, "config")}
    yield s
    for name, value in saved.items():
        setattr(s, name, value)
