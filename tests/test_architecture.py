"""The layers of ARCHITECTURE.md, checked on every module's imports (AST, all levels).

Imports inside functions count as much as module-level ones: a lazy import hides a
cycle from Python, not from the design. Only ``if TYPE_CHECKING:`` blocks are skipped
(they never run). A lazy import of a project module says why it is lazy, in a comment
on its line or the line above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (pyproject's package-dir).
ROOTS = {
    "fedsim": "fedsim",
    "clients": "fedsim.clients",
    "strategies": "fedsim.strategies",
    "fairness": "fedsim.fairness",
}

BASE, PURE, GLUE, ORCHESTRATION = 0, 1, 2, 3
#: Layer of each module (longest matching prefix wins). Arrows point down or sideways.
#: BASE: facts every layer shares (errors, config types, record keys, seed streams,
#: file names and formats). PURE: maths, data and rendering, without Flower or Ray.
#: GLUE: Flower glue, strategies, engines. ORCHESTRATION: runs, CLI, reports, deploy.
LAYERS: dict[str, int] = {
    "fedsim.errors": BASE,
    "fedsim.version": BASE,
    "fedsim.config": BASE,
    "fedsim.seeds": BASE,
    "fedsim.plugins": BASE,
    "fedsim.results": BASE,
    "fedsim.server_files": BASE,
    "fedsim.procs": BASE,
    "fedsim.clients": BASE,  # the package __init__
    "fedsim.clients.keys": BASE,
    "fedsim.clients.checks": BASE,
    "fedsim.strategies": BASE,
    "fedsim.fairness": BASE,
    "fedsim.clients.losses": PURE,
    "fedsim.clients.attacks": PURE,
    "fedsim.clients.objective": PURE,
    "fedsim.clients.models": PURE,
    "fedsim.clients.optim": PURE,
    "fedsim.clients.training": PURE,
    "fedsim.clients.faults": PURE,
    "fedsim.clients.vectorized": PURE,
    "fedsim.clients.fairness_penalty": PURE,
    "fedsim.clients.cohort": GLUE,
    "fedsim.state": BASE,
    "fedsim.strategies.fairfed_weights": PURE,
    "fedsim.strategies.fairfed": GLUE,
    "fedsim.strategies.state": GLUE,
    "fedsim.fairness.pid_large": PURE,
    "fedsim.fairness.aglfop_program": PURE,
    "fedsim.fairness.aglfop_feasible": PURE,
    "fedsim.fairness.report_tables": PURE,
    "fedsim.fairness.report_bounds": PURE,
    "fedsim.strategies.principal": PURE,
    "fedsim.strategies.screening_rules": PURE,
    "fedsim.fairness.information": PURE,
    "fedsim.fairness.metrics": PURE,
    "fedsim.fairness.pid": PURE,
    "fedsim.fairness.pid_tables": PURE,
    "fedsim.fairness.roc": PURE,
    "fedsim.fairness.aglfop": PURE,
    "fedsim.fairness.accounting": PURE,
    "fedsim.fairness.client_metrics": PURE,
    "fedsim.fairness.figures": PURE,
    "fedsim.fairness.frontier_grid": PURE,
    "fedsim.fairness.plots": PURE,
    "fedsim.fairness.report": PURE,
    "fedsim.data": PURE,
    "fedsim.clients.app": GLUE,
    "fedsim.strategies.fedld": GLUE,
    "fedsim.strategies.fairness_accounting": GLUE,
    "fedsim.strategies.records": GLUE,
    "fedsim.strategies.registry": GLUE,
    "fedsim.strategies.screening": GLUE,
    "fedsim.strategies.wrapper": GLUE,
    "fedsim.engine": GLUE,
    "fedsim.runtime": GLUE,
    "fedsim.summary": GLUE,
    # The ServerApp/ClientApp of `flwr run`: it runs a whole run and writes its results
    # folder (frontier included), the job of the orchestration layer.
    "fedsim.flower_app": ORCHESTRATION,
    "fedsim.model_bound": ORCHESTRATION,
    "fedsim": ORCHESTRATION,  # the package __init__: fedsim.run, fedsim.resume
    "fedsim.runner": ORCHESTRATION,
    "fedsim.rundir": ORCHESTRATION,
    "fedsim.preflight": ORCHESTRATION,
    "fedsim.sinks": ORCHESTRATION,
    "fedsim.checkpoint": ORCHESTRATION,
    "fedsim.study": ORCHESTRATION,
    "fedsim.bounds": ORCHESTRATION,
    "fedsim.report_run": ORCHESTRATION,
    "fedsim.report_figures": ORCHESTRATION,
    "fedsim.predictions": ORCHESTRATION,
    "fedsim.progress": ORCHESTRATION,
    "fedsim.cli": ORCHESTRATION,
    "fedsim.deploy": ORCHESTRATION,
}
#: Neither Flower nor Ray below the glue layer.
RUNTIME_PACKAGES = ("flwr", "ray")
#: Cycles someone else is removing, with the owner; each must still exist (so the entry
#: goes when the cycle does).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
    return mods


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name ``name``'s module imports, at any level, relative ones resolved."""
    tree = ast.parse(path.read_text("utf-8"))
    skipped = _type_checking_nodes(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` imports pkg.module
                full = f"{base}.{alias.name}"
                names.add(full if full in MODULES else base)
    return names


def project_imports(name: str) -> set[str]:
    """The project modules ``name`` imports (the longest module prefix of each name)."""
    found = set()
    for imported in imported_names(name, MODULES[name]):
        parts = imported.split(".")
        for k in range(len(parts), 0, -1):
            candidate = ".".join(parts[:k])
            if candidate in MODULES:
                if candidate != name:
                    found.add(candidate)
                break
    return found


GRAPH = {name: project_imports(name) for name in MODULES}


#: Entries that name a package's ``__init__`` only, not the modules below it: a new
#: module in these packages needs its own entry.
INIT_ONLY = {"fedsim", "fedsim.clients", "fedsim.strategies", "fedsim.fairness"}


def layer_of(name: str) -> int:
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYERS and (prefix == name or prefix not in INIT_ONLY):
            return LAYERS[prefix]
    raise KeyError(f"{name} has no layer: add it to LAYERS in tests/test_architecture.py")


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the strongly connected components of size > 1."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_are_counted() -> None:
    # fedsim/__init__.py imports the runner only inside fedsim.run().
    assert "fedsim.runner" in GRAPH["fedsim"]


def test_no_import_cycles_among_the_project_modules() -> None:
    cycles = [c for c in strongly_connected(GRAPH) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, [sorted(c) for c in cycles]
    still = {frozenset(c) for c in strongly_connected(GRAPH)}
    assert KNOWN_CYCLES <= still, "a known cycle is gone: remove it from KNOWN_CYCLES"


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{name} ({layer_of(name)}) -> {target} ({layer_of(target)})"
        for name, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, upward


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer_of(n) in (BASE, PURE)), ids=str)
def test_base_and_maths_modules_import_neither_flower_nor_ray(name: str) -> None:
    names = imported_names(name, MODULES[name])
    offenders = sorted(n for n in names if n.split(".")[0] in RUNTIME_PACKAGES)
    assert not offenders, f"{name} imports {offenders}"


#: Why an import may wait until a function runs: start-up time of a heavy package, an
#: optional dependency, or a known cycle (see KNOWN_CYCLES). A lazy import's comment
#: names one of these.
LAZY_REASONS = (
    "start-up",
    "torch",
    "flwr",
    "ray",
    "cvxpy",
    "matplotlib",
    "pandas",
    "sklearn",
    "optional",
    "cycle",
)


def lazy_imports_without_reason(source: str) -> list[int]:
    """Lines of function-level imports of ``fedsim`` modules whose comment gives no reason.

    The comment sits on the import's first line or on the line just above it.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    skipped = _type_checking_nodes(tree)
    bad = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = ["fedsim" if node.level else node.module or ""]
            else:
                continue
            if not any(t == "fedsim" or t.startswith("fedsim.") for t in targets):
                continue
            line = lines[node.lineno - 1]
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            comment = line[line.index("#") :] if "#" in line else ""
            if above.startswith("#"):
                comment += above
            if not any(reason in comment.lower() for reason in LAZY_REASONS):
                bad.append(node.lineno)
    return bad


def test_the_lazy_import_check_wants_a_reason_on_the_line_or_above() -> None:
    source = (
        "def f():\n"
        "    from fedsim import runner\n"  # line 2: no reason
        "    from fedsim import deploy  # pandas: start-up\n"
        "    # torch: start-up\n"
        "    from fedsim.clients import models\n"
        "    import json\n"  # not a project module
        "    from fedsim import study  # lazy\n"  # line 7: a comment, but no reason
    )
    assert lazy_imports_without_reason(source) == [2, 7]


@pytest.mark.parametrize("name", sorted(MODULES), ids=str)
def test_lazy_project_imports_say_why_they_are_lazy(name: str) -> None:
    bad = lazy_imports_without_reason(MODULES[name].read_text("utf-8"))
    assert not bad, (
        f"{MODULES[name]}: function-level import(s) at line(s) {bad} need a comment naming "
        f"why (one of {', '.join(LAZY_REASONS)}) on the line or the line above, or move to "
        "module level"
    )


def test_every_layer_entry_names_a_module_that_exists() -> None:
    stale = sorted(name for name in LAYERS if name not in MODULES)
    assert not stale, f"LAYERS names modules that do not exist: {stale}"
