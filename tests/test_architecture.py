"""The package import graph: no package-level cycles, and the simulation stays behind its narrow interface.

Imports are read from the source with ``ast`` (function-level imports count too; imports under
``if TYPE_CHECKING:`` do not, since they never run). Units of the graph: each subpackage of qlab
(``qlab.sim``, ``qlab.instruments`` …), each top-level module (``qlab.lab``, ``qlab.types`` …),
``qlab.drivers`` and ``qlab.gui``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folders and the import names they install under (pyproject's package-dir).
SOURCES = {"qlab": ROOT / "qlab", "qlab.drivers": ROOT / "drivers", "qlab.gui": ROOT / "gui"}

# The only modules outside qlab/sim/ that may import qlab.sim, and why.
SIM_IMPORTERS_ALLOWED = {
    "qlab.catalogue": "names each model's simulator",
    "qlab.instruments.factory": "builds simulated instruments and the simulated lab",
    "qlab.cli": "`qlab sim serve` starts a simulator",
    "qlab.bench": "benchmarks generate streams from the simulated lab",
    "qlab.network.emulator": "`qlab network emulate` serves the whole network's simulated lab (nodes never import it)",
}


def _module_files() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([prefix, *parts])] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every qlab module this module imports at run time (resolved to the deepest known module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("qlab"):
                        found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("qlab"):
                    for alias in child.names:  # `from qlab import optics` names a module
                        sub = f"{target}.{alias.name}"
                        found.add(sub if sub in known else target)
            visit(child)

    visit(tree)
    return {r for r in (resolve(n) for n in found) if r is not None}


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts[:2] in (["qlab", "drivers"], ["qlab", "gui"]):
        return ".".join(parts[:2])
    if len(parts) == 1:
        return "qlab"
    sub = ".".join(parts[:2])
    return sub


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    files = _module_files()
    known = set(files)
    edges: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], list[str]] = defaultdict(list)
    for mod, path in files.items():
        for dep in _imports(mod, path, known):
            a, b = _unit(mod), _unit(dep)
            if a != b and b != "qlab":  # qlab/__init__ holds only the version
                edges[a].add(b)
                why[(a, b)].append(f"{mod} -> {dep}")
    return edges, why


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    nodes = set(edges) | {w for ws in edges.values() for w in ws}
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return out


def test_no_package_level_import_cycles():
    edges, why = _graph()
    cycles = _cycles(edges)
    detail = []
    for comp in cycles:
        for a in comp:
            for b in comp:
                if b in edges.get(a, ()):
                    detail.append(f"  {a} -> {b}: {why[(a, b)][:3]}")
    assert not cycles, "package-level import cycles:\n" + "\n".join(detail)


def test_simulation_is_imported_only_by_its_factory_catalogue_and_simulators():
    files = _module_files()
    known = set(files)
    offenders = []
    for mod, path in files.items():
        if mod == "qlab.sim" or mod.startswith("qlab.sim."):
            continue
        is_simulator = mod.startswith("qlab.drivers.") and mod.endswith("_sim")
        if is_simulator or mod in SIM_IMPORTERS_ALLOWED:
            continue
        sim_deps = sorted(d for d in _imports(mod, path, known) if d == "qlab.sim" or d.startswith("qlab.sim."))
        if sim_deps:
            offenders.append(f"{mod} imports {sim_deps}")
    assert not offenders, "imports of qlab.sim outside the simulation:\n" + "\n".join(offenders)


def test_graph_reader_sees_real_imports():
    """Guard against a reader that finds nothing (which would make the two tests above pass vacuously)."""
    edges, why = _graph()
    assert "qlab.instruments" in edges["qlab.procedures"] or "qlab.stream" in edges["qlab.procedures"]
    assert "qlab.types" in edges["qlab.stream"]
    assert any(a == "qlab.drivers" for a, _ in why)


def test_procedures_analysis_qkd_and_gui_do_not_reach_into_the_simulation():
    """``lab.sim`` exists for tests and the factory; code that must run unchanged on hardware never reads it."""
    files = _module_files()
    layers = ("qlab.procedures", "qlab.analysis", "qlab.qkd", "qlab.stream", "qlab.storage", "qlab.gui")
    offenders = []
    for mod, path in files.items():
        if not mod.startswith(layers):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "sim":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "reads of `.sim` (simulation state) outside the simulation:\n" + "\n".join(offenders)
