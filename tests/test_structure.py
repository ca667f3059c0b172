"""The shape of the package: small modules and functions, imports one way, no cycles.

Read from the sources with ``ast`` (nothing is imported). A limit may be broken only by
an entry in ``EXCEPTIONS`` with its one-line reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gptoss_magics"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: "module" or "module:function" -> why it may be longer
EXCEPTIONS: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts)


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_modules_are_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    if _name(path) in EXCEPTIONS:
        return
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines"


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_functions_are_short(path: Path) -> None:
    tree = ast.parse(path.read_text())
    long = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > MAX_FUNCTION_LINES and f"{_name(path)}:{node.name}" not in EXCEPTIONS:
                long.append(f"{node.name} ({size} lines)")
    assert not long, f"{_name(path)}: {', '.join(long)}"


def _imports(path: Path) -> set[str]:
    """Package modules imported by ``path`` (at module level or inside functions)."""
    me = _dotted(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("gptoss_magics"):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("gptoss_magics"))
    type_only = _type_checking_imports(path)
    return {m for m in out - type_only if m != me}


def _type_checking_imports(path: Path) -> set[str]:
    """Modules imported only under ``if TYPE_CHECKING:`` (they never run)."""
    found: set[str] = set()
    package = _dotted(path).rpartition(".")[0] if path.name != "__init__.py" else _dotted(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for sub in node.body:
                if isinstance(sub, ast.ImportFrom) and sub.level:
                    base = package.split(".")[: len(package.split(".")) - sub.level + 1]
                    mod = ".".join(base + ([sub.module] if sub.module else []))
                    found.add(mod)
                    found.update(f"{mod}.{a.name}" for a in sub.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_dotted(p): p for p in _modules()}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for dep in _imports(path):
            while dep not in modules and "." in dep:
                dep = dep.rpartition(".")[0]
            if dep in modules and dep != name and not name.startswith(dep + "."):
                deps.add(dep)
        graph[name] = deps
    return graph


def test_no_import_cycles() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its own submodules is not a cycle
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_surfaces_sit_above_the_engine() -> None:
    """The engine package imports nothing from the layers above it."""
    graph = _graph()
    above = ("prompting", "session", "frame", "magics", "widgets", "sweep", "audit", "live",
             "options", "models")
    for name, deps in graph.items():
        if name.startswith("gptoss_magics.engine"):
            bad = [d for d in deps if d.split(".")[1] in above]
            assert not bad, f"{name} imports {bad}"
