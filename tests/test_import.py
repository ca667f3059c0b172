"""Importing the package, or loading the extension, pulls in neither vLLM nor torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = (
    "import sys\n"
    "{body}\n"
    "heavy = sorted(m for m in ('vllm', 'torch', 'transformers', 'ray') if m in sys.modules)\n"
    "print('HEAVY', heavy)\n"
)


def _run(body: str) -> str:
    proc = subprocess.run([sys.executable, "-c", CHECK.format(body=body)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_is_light() -> None:
    assert "HEAVY []" in _run("import gptoss_magics")


def test_load_ext_is_light() -> None:
    body = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance()\n"
            "ip.run_line_magic('load_ext', 'gptoss_magics')\n"
            "assert 'gptoss' in ip.magics_manager.magics['cell']")
    assert "HEAVY []" in _run(body)


PUBLIC = [
    "CancelledError", "EngineAlreadyLoadedError", "EngineDeadError", "EngineLoadError",
    "EngineNotLoadedError", "GptOssError", "GptOssSettings", "GptOssWarning",
    "InvalidOptionError", "MapJob", "MapPlan", "MissingDependencyError", "ModelCheck",
    "ModelFolderError", "ModelNotFoundError", "Reply", "Reproduction", "RequestError",
    "RowError", "StorageError", "TemplateError", "Turn", "UNSET", "__version__",
    "check_model", "compare_efforts", "complete", "complete_batch", "effort_panel",
    "is_loaded", "last_result", "load", "reproduce", "settings", "status", "stream", "unload",
    "FitPlan", "ManifestCheck", "check_manifest", "plan_fit", "write_manifest",
    "Cascade", "EvaluationResult", "evaluate",
    "FunctionTool", "PythonTool", "ToolCall", "function_tool", "UnsupportedHardwareError",
    "RayBackend",
]


def test_public_names_are_pinned() -> None:
    import gptoss_magics

    # adding or removing a public name is a decision: change PUBLIC with it
    assert sorted(gptoss_magics.__all__) == sorted(PUBLIC)
    assert len(set(gptoss_magics.__all__)) == len(gptoss_magics.__all__)
    for name in gptoss_magics.__all__:
        assert hasattr(gptoss_magics, name), name


def test_every_deliberate_error_is_a_gptoss_error() -> None:
    import gptoss_magics as gm

    for name in PUBLIC:
        obj = getattr(gm, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and \
                not issubclass(obj, Warning):
            assert issubclass(obj, gm.GptOssError), name
    assert issubclass(gm.InvalidOptionError, ValueError)
