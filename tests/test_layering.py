"""Imports go one way: only the engine package imports vLLM or torch, only the cluster
package imports Ray, and importing the package (or its engine layer) imports none of them."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gptoss_magics"
ENGINE = PACKAGE / "engine"
CLUSTER = PACKAGE / "cluster"
HEAVY = {"vllm", "torch"}


def heavy_imports(path: Path, heavy: set[str] = HEAVY) -> list[str]:
    """``line: module`` for each vLLM/torch import in ``path``, at any depth (also inside
    functions, and ``importlib.import_module``/``__import__`` with a literal name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(
                node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        found += [f"{node.lineno}: {name}" for name in names
                  if name.split(".")[0] in heavy]
    return found


def _outside_engine() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if ENGINE not in p.parents and "__pycache__" not in p.parts)


def test_the_checker_finds_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(textwrap.dedent("""
        import os
        import torch.nn
        from vllm import LLM
        from .vllm import nothing
        def later():
            import vllm.inputs as inputs
            importlib.import_module("torch")
    """))
    assert heavy_imports(sample) == [
        "3: torch.nn", "4: vllm", "7: vllm.inputs", "8: torch"]


def test_the_engine_package_is_where_vllm_is_imported() -> None:
    inside = [p for p in ENGINE.rglob("*.py") if heavy_imports(p)]
    assert ENGINE / "_compat.py" in inside  # the checker sees the real imports


@pytest.mark.parametrize("path", _outside_engine(),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_vllm_or_torch_import_outside_the_engine(path: Path) -> None:
    assert heavy_imports(path) == [], (
        f"{path.relative_to(PACKAGE)} imports vLLM/torch: move that code into "
        "gptoss_magics/engine/")


def test_only_the_cluster_package_imports_ray() -> None:
    inside = [p for p in CLUSTER.rglob("*.py") if heavy_imports(p, {"ray"})]
    assert CLUSTER / "backend.py" in inside  # the checker sees the real imports
    outside = {str(p.relative_to(PACKAGE)): heavy_imports(p, {"ray"})
               for p in PACKAGE.rglob("*.py") if CLUSTER not in p.parents}
    assert {k: v for k, v in outside.items() if v} == {}


def test_importing_the_package_and_its_engine_loads_neither() -> None:
    code = textwrap.dedent("""
        import sys
        import gptoss_magics
        import gptoss_magics.engine
        import gptoss_magics.cluster
        from gptoss_magics import RayBackend
        from gptoss_magics.engine import Engine, ScriptedEngine, Sampling, VllmEngine
        RayBackend(replicas=2)
        print("HEAVY", sorted(m for m in ("vllm", "torch", "ray") if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout
