"""The package's layout contract (../shared/DESIGN.md "Code layout"): layers import only downwards, no
import cycle (imports inside functions and TYPE_CHECKING blocks count), no module over 450 lines, and
the run directory's file names spelt in moe_unlearn/rundir.py alone."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "moe_unlearn"
# Top to bottom; a module may import its own layer (without cycles) and the layers below it.
LAYERS = [
    ["moe_unlearn", "moe_unlearn.__main__", "moe_unlearn.cli"],
    ["moe_unlearn.run"],
    ["moe_unlearn.serving"],
    ["moe_unlearn.unlearning"],
    ["moe_unlearn.audit"],
    ["moe_unlearn.training"],
    ["moe_unlearn.models"],
    ["moe_unlearn.rundir", "moe_unlearn.storage"],
    ["moe_unlearn.data", "moe_unlearn.config"],
    ["moe_unlearn.errors", "moe_unlearn.faults"],
]
MAX_LINES = 450
# Run-directory names as paths: a file name literal, or a folder joined with `/`.
RUN_DIR_NAMES = re.compile(
    r"""["'](registry\.db|manifest\.json|config\.yaml|progress\.json)["']"""
    r"""|/\s*["'](versions|current|experts|router|audits|logs|lock)["']"""
)


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file."""
    mods = modules()
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "moe_unlearn":
                    graph[name].add(t)
    return graph


def layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def test_every_import_goes_to_the_same_layer_or_below():
    graph = import_graph()
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer(t) < layer(m))
    assert not upward, upward


def test_no_import_cycle_not_even_through_imports_inside_functions():
    graph = import_graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_module_is_longer_than_a_sitting():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_run_directory_layout_is_spelt_in_rundir_alone():
    spelt = [
        f"{p.relative_to(PACKAGE.parent)}: {m.group(0)}"
        for name, p in modules().items()
        if name != "moe_unlearn.rundir"
        for m in RUN_DIR_NAMES.finditer(p.read_text())
    ]
    assert not spelt, spelt


def test_the_checks_see_function_level_imports():
    """The graph must include an import made inside a function (the kind that hid the old cycles)."""
    graph = import_graph()
    assert "moe_unlearn.training.trainer" in graph["moe_unlearn.training.build"]  # imported lazily there
