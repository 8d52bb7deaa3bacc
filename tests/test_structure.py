"""The package's shape: no import cycle, no private name imported across modules, few imports
inside functions (each with its reason in a comment), and short functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lab5"
MAX_FUNCTION_LINES = 50
MAX_LOCAL_IMPORTS = 20
# The simulator's physics loop steps the world frame by frame; splitting it would scatter
# one simulation over helpers that share all its state.
LONG_FUNCTIONS_ALLOWED = {"lab5/sim/world.py:simulate_states"}


def modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


def imported(node: ast.AST, current: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(module, names) of an import statement, relative imports resolved."""
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        parts = current.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return [(base, [a.name for a in node.names])]


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, tree) in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for mod, names in imported(node, name, path.name == "__init__.py"):
                    for target in [mod] + [f"{mod}.{n}" for n in names]:
                        if target in mods and target != name:
                            edges[name].add(target)
    return edges


def test_no_import_cycle() -> None:
    edges, state, cycles = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_imported_from_another_module() -> None:
    bad = []
    for name, (path, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for mod, names in imported(node, name, path.name == "__init__.py"):
                    if mod.startswith("lab5"):
                        bad += [f"{path.name}: {n} from {mod}" for n in names if n.startswith("_")]
    assert not bad, bad


def local_imports() -> list[tuple[Path, int, bool]]:
    """(file, line, has a comment on that line or the line above) of each import in a function."""
    out = []
    for _, (path, tree) in modules().items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        here, above = lines[node.lineno - 1], lines[node.lineno - 2]
                        out.append((path, node.lineno, "#" in here or above.strip().startswith("#")))
    return out


def test_few_imports_inside_functions_each_with_its_reason() -> None:
    found = local_imports()
    assert len(found) <= MAX_LOCAL_IMPORTS, [f"{p.name}:{n}" for p, n, _ in found]
    uncommented = [f"{p.name}:{n}" for p, n, ok in found if not ok]
    assert not uncommented, f"imports inside functions without a comment saying why: {uncommented}"


def test_functions_are_short() -> None:
    long = []
    for _, (path, tree) in modules().items():
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = fn.end_lineno - fn.lineno + 1
                if n > MAX_FUNCTION_LINES and f"{rel}:{fn.name}" not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{rel}:{fn.name} ({n} lines)")
    assert not long, long
