"""Test set-up: two tiers, and the fixtures both share.

* The fast tier (``make test-fast``, i.e. ``pytest -m fast``): every test that needs neither
  the real vLLM engine, nor the built tiny model, nor vLLM itself, nor a browser. The
  surfaces (magics, maps, widgets, displays) run on a
  :class:`~gptoss_magics.engine.ScriptedEngine` (the ``scripted`` fixture). It never
  imports vLLM: when only fast tests run, a test that imports it fails, naming itself.
* The full suite (``make test``): also one real vLLM engine on the tiny model for the
  whole session (the ``engine`` fixture), kernels, notebooks and the browser.

Tests are marked here from what they use, so that no file has to remember to:
``engine`` (uses the ``engine`` fixture), ``slow`` (builds the tiny model through
``tiny_path``), ``vllm`` (imports vLLM itself, in-process or in a child), ``browser``
(under tests/browser); every other test is ``fast``.

Every test run gets its own cache folder (tiny model, result cache) and its own
temporary folder (vLLM leaves IPC sockets there), both under one session folder;
child processes (kernels, the offline test) inherit them through the environment.
"""

from __future__ import annotations

import _thread
import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

if TYPE_CHECKING:
    from gptoss_magics.engine import ScriptedEngine
    from gptoss_magics.settings import GptOssSettings

_ROOT = Path(os.environ.get("GPTOSS_TEST_ROOT") or tempfile.mkdtemp(prefix="gptoss-tests-"))
os.environ["GPTOSS_MAGICS_CACHE"] = str(_ROOT / "cache")
os.environ["TMPDIR"] = str(_ROOT / "tmp")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
(_ROOT / "tmp").mkdir(parents=True, exist_ok=True)
tempfile.tempdir = None  # re-read TMPDIR


# The run's folder (3.5 GB with its expanded models) goes when the run ends, so that
# repeated runs do not fill the disk; a folder named by GPTOSS_TEST_ROOT stays. Registered
# first, so it runs after every other exit hook.
if not os.environ.get("GPTOSS_TEST_ROOT"):
    atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

#: the model the shared engine runs (override with GPTOSS_TEST_MODEL, e.g. tiny-random)
TEST_MODEL = os.environ.get("GPTOSS_TEST_MODEL", "tiny")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

#: files whose tests import vLLM itself (never in the fast tier); better: mark them `vllm`
_IMPORTS_VLLM = {"test_vllm_plugin.py": ("test_vllm_loads_the_plugin_in_a_fresh_process",
                                         "test_parser_ends_reasoning_only_at_the_final_channel")}
#: markers that keep a test out of the fast tier
_NOT_FAST = ("engine", "slow", "vllm", "browser")
_HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------- tiers
def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "lifecycle: unloads and reloads the shared engine (runs last)",
        "vllm: imports vLLM itself, in this process or a child (not in the fast tier)",
        "browser: drives JupyterLab in a browser (tests/browser)",
        "fast: set by conftest on every test outside engine/slow/vllm/browser",
        "scripted(**kwargs): ScriptedEngine arguments for the `scripted` fixture",
    ):
        config.addinivalue_line("markers", line)


def _uses_shared(item: pytest.Item, name: str) -> bool:
    """True when ``item`` uses this conftest's fixture ``name`` (not a module's own)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get(name, ()) if info is not None else ()
    code = getattr(defs[-1].func, "__code__", None) if defs else None
    return code is not None and Path(code.co_filename).resolve() == Path(__file__).resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test's tier; tests that unload and reload the shared engine run last."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if _HERE / "browser" in path.parents:
            item.add_marker(pytest.mark.browser)
        if _uses_shared(item, "engine"):
            item.add_marker(pytest.mark.engine)
        if _uses_shared(item, "tiny_path"):
            item.add_marker(pytest.mark.slow)  # builds the tiny model: tens of seconds
        if getattr(item, "originalname", item.name) in _IMPORTS_VLLM.get(path.name, ()):
            item.add_marker(pytest.mark.vllm)
        if not any(item.get_closest_marker(m) for m in _NOT_FAST):
            item.add_marker(pytest.mark.fast)
    items.sort(key=lambda item: item.get_closest_marker("lifecycle") is not None)


class _Tier:
    fast_only = False  # every selected test is fast: vLLM must stay out of the process
    reported = False


def pytest_collection_finish(session: pytest.Session) -> None:
    _Tier.fast_only = bool(session.items) and all(
        item.get_closest_marker("fast") for item in session.items)


@pytest.fixture(autouse=True)
def _fast_tier_imports_no_vllm(request: pytest.FixtureRequest) -> Iterator[None]:
    """When only fast tests run, fail the first test after which vLLM is imported."""
    yield
    if _Tier.fast_only and not _Tier.reported and "vllm" in sys.modules:
        _Tier.reported = True
        pytest.fail(f"{request.node.nodeid} imported vllm: the fast tier must not (use the "
                    "scripted fixture, or mark the test engine or vllm)", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The fast tier fails as a whole when vLLM was imported."""
    if _Tier.fast_only and "vllm" in sys.modules:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("!", "fast tier: vllm was imported (see the failing test)",
                               red=True)


# ---------------------------------------------------------------------- helpers
def _wait_until(predicate: Callable[[], Any], timeout: float = 60.0,
                message: str = "") -> None:
    """Poll ``predicate`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for "
                        f"{message or getattr(predicate, '__name__', 'a condition')}",
                        pytrace=False)
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(predicate, timeout=60)``: poll until true, fail on timeout."""
    return _wait_until


# ---------------------------------------------------------------------- real engine
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


# ---------------------------------------------------------------------- settings
@pytest.fixture
def fresh_settings() -> Iterator[GptOssSettings]:
    """The settings singleton, restored to its values after the test."""
    from gptoss_magics.settings import settings

    s = settings()
    saved = {name: getattr(s, name) for name in s.trait_names() if s.trait_metadata(
        name, "config")}
    yield s
    for name, value in saved.items():
        setattr(s, name, value)


# ---------------------------------------------------------------------- scripted engine
@pytest.fixture
def scripted(request: pytest.FixtureRequest, fresh_settings: GptOssSettings,
             tmp_path: Path) -> Iterator[ScriptedEngine]:
    """A :class:`ScriptedEngine` served as the session's model for this test (whatever
    was loaded before comes back afterwards), with a result cache of its own.

    ``@pytest.mark.scripted(step_s=0.02, ...)`` passes arguments to the engine; its
    ``requests`` record what the surfaces sent."""
    from gptoss_magics.engine import ScriptedEngine
    from gptoss_magics.session import using

    marker = request.node.get_closest_marker("scripted")
    fresh_settings.cache_dir = str(tmp_path / "cache")
    eng = ScriptedEngine(**(marker.kwargs if marker else {}))
    try:
        with using(eng, "scripted"):
            yield eng
    finally:
        eng.close()


# ---------------------------------------------------------------------- IPython
class Recorder(DisplayPublisher):
    """A display publisher that records every display and update with its time; it can
    press Ctrl-C (KeyboardInterrupt in the main thread) at the first streamed text."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, dict[str, Any], dict[str, Any], bool]] = []
        self.interrupt_at_first_text = False

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None,
                source: Any = None, *, transient: Any = None, update: bool = False,
                **kwargs: Any) -> None:  # type: ignore[override]
        self.events.append((time.perf_counter(), data, metadata or {}, update))
        if self.interrupt_at_first_text and update and data.get("text/plain", "").strip():
            self.interrupt_at_first_text = False
            _thread.interrupt_main()

    def updates(self) -> list[dict[str, Any]]:
        """The data of every update of a display, in order."""
        return [data for _, data, _, update in self.events if update]

    def last(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The data and metadata of the last display or update."""
        _, data, meta, _ = self.events[-1]
        return data, meta


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """A fresh IPython shell for this test (its own user namespace), the process's
    current one while the test runs, with gptoss_magics loaded and its displays recorded
    in ``ip.display_pub`` (a :class:`Recorder`)."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config)
    shell.display_pub = Recorder()
    shell.extension_manager.load_extension("gptoss_magics")
    try:
        yield shell
    finally:
        InteractiveShell.clear_instance()
        # its exit handler would reset it with a gc.collect() at interpreter exit, once
        # per shell made: close its history now and let it go instead
        atexit.unregister(shell.atexit_operations)
        if shell.history_manager is not None:
            shell.history_manager.close()
