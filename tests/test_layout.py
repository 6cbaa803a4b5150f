"""The layout docs/architecture.md draws: imports run downwards only, no cycles, a core that imports none of
ours, short files. A static scan of every import statement (lazy ones inside functions included)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower rank = lower layer; a package may import packages of a strictly lower rank only.
RANK = {"codec": 0, "photos": 1, "teacher": 2, "student": 2, "profiling": 2, "training": 3, "evaluation": 3,
        "distill": 4, "export": 4, "benchmarks": 5, "pipeline": 6}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in RANK:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (resolved to the longest known module name)."""
    edges = {}
    for mod, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")[: len(mod.split(".")) - node.level + (path.name == "__init__.py")]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    targets.add(name)
        edges[mod] = targets
    return edges


def _package(mod: str) -> str:
    return mod.split(".")[0]


def test_imports_run_downwards():
    edges = _imports(_modules())
    wrong = []
    for mod, targets in edges.items():
        # A package's command line (its __main__) is a thin layer on top of it: it may use training.
        cli = mod.endswith("__main__")
        for t in targets:
            a, b = _package(mod), _package(t)
            if a != b and RANK[b] >= RANK[a] and not (cli and RANK[b] <= RANK["training"]):
                wrong.append(f"{mod} -> {t}")
    assert not wrong, wrong


def test_the_core_imports_nothing_of_ours():
    edges = _imports(_modules())
    outside = sorted(f"{m} -> {t}" for m, ts in edges.items() if _package(m) == "codec"
                     for t in ts if _package(t) != "codec")
    assert not outside, outside
    # Nor loads one by name: every dynamic import in the core names a module of the core.
    for path in (ROOT / "codec").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
                arg = ast.unparse(node.args[0])
                assert arg.strip("f'\"").startswith("codec."), f"{path.name}: {arg}"


def test_no_import_cycle_between_files():
    edges = _imports(_modules())
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for t in edges[node]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[node] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_no_long_files():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
