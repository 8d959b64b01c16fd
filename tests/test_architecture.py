"""The house rules: no import loops, a pure diffusion core, light imports, a short runner."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "uadbench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    """uadbench modules ``path`` imports anywhere (module level or in functions), bar TYPE_CHECKING
    blocks; ``from package import submodule`` is an edge to the submodule only."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("uadbench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uadbench") and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            names = [a.name for a in node.names if f"{node.module}.{a.name}" not in subs]
            out |= subs | ({node.module} if names else set())
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # an edge to a module, or to the package of an imported name; the package face itself is lazy
        graph[name] = {m for m in _imports(path, set(modules)) if m in modules and m != "uadbench"} - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_diffusion_core_does_not_know_the_method_contract():
    for path in (PACKAGE / "diffusion").glob("*.py"):
        if path.name == "method.py":
            continue
        bad = {m for m in _imports(path) if m.startswith(("uadbench.method", "uadbench.training", "uadbench.run.runner"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_runner_is_short_and_reads_as_steps():
    path = PACKAGE / "run" / "runner.py"
    assert len(path.read_text().splitlines()) < 300
    long = [(name, n) for name, n in _functions(path) if n > 60]
    assert not long, f"functions over 60 lines in runner.py: {long}"


@pytest.mark.parametrize("module", ["uadbench", "uadbench.grid", "uadbench.report", "uadbench.records", "uadbench.run.runner"])
def test_light_modules_do_not_import_torch_or_mlflow(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"import {module} loaded {out}"


def test_package_face_resolves_every_export():
    import uadbench

    for name in uadbench.__all__:
        assert getattr(uadbench, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        uadbench.nope  # noqa: B018
