"""The import graph of our packages, read from the source with ``ast``, and the layering rule.

Used by tests/test_layering.py (the rule holds) and scripts/architecture.py (the picture in
docs/architecture.md).  Every import counts, also one inside a function: a lazy import is
still a dependency, it only moves the failure to later.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Bottom to top (docs/architecture.md).  A package may import only packages of lower layers;
# packages of one layer do not import each other.  tests/ sits above all of them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("contracts", ("contracts",)),
    ("node agent, scheduler, web guard", ("keys_manager", "placement", "webguard")),
    ("services", ("functions", "template", "local_provider", "gateway_plugin", "planner",
                  "scorer")),
    ("harness", ("benchmark",)),
    ("front door", ("quart_faas",)),
    ("checks", ("checks",)),
)
RANK = {pkg: i for i, (_, pkgs) in enumerate(LAYERS) for pkg in pkgs}
# folders that ship alone into a function image (faas-cli copies the template and the
# handler folder, nothing else): at load time they import nothing of ours
SELF_CONTAINED = ("functions/stage", "template/quart-python")


def packages(root: Path = REPO) -> list[str]:
    """Top-level folders holding Python code of ours (tests excluded)."""
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.name in ("tests", "deploy", "scripts", "examples"):
            continue
        if p.is_dir() and ((p / "__init__.py").is_file() or any(p.rglob("*.py"))):
            out.append(p.name)
    return out


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)  # dotted name -> file
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    top_level: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @property
    def package_edges(self) -> dict[tuple[str, str], int]:
        """(from package, to package) -> how many module-to-module imports."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for a, targets in self.edges.items():
            for b in targets:
                if a.split(".")[0] != b.split(".")[0]:
                    out[(a.split(".")[0], b.split(".")[0])] += 1
        return dict(out)

    def lines(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for name, path in self.modules.items():
            out[name.split(".")[0]] += path.read_text().count("\n")
        return dict(out)


def _dotted(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement asks for (``from a import b`` gives ``a.b``, which
    ``_resolve`` turns into ``a`` when ``b`` is not a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [f"{mod}.{a.name}" for a in node.names] + [mod]


def build(root: Path = REPO, pkgs: Iterable[str] | None = None) -> Graph:
    g = Graph()
    for pkg in pkgs if pkgs is not None else packages(root):
        for path in sorted((root / pkg).rglob("*.py")):
            g.modules[_dotted(root, path)] = path
    for module, path in g.modules.items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            wanted = _targets(node, module, path.name == "__init__.py")
            names = wanted[:-1] if isinstance(node, ast.ImportFrom) else wanted
            for name in names:
                target = _resolve(g.modules, name)
                if target and target != module:
                    g.edges[module].add(target)
                    if id(node) in top:
                        g.top_level[module].add(target)
                elif target is None and name.split(".")[0] == "tests":
                    g.edges[module].add(".".join(name.split(".")[:2]))
    return g


def _resolve(modules: Mapping[str, Path], name: str) -> str | None:
    """The deepest module of ours that ``name`` is or lies in, None for anything else."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def back_edges(g: Graph) -> list[str]:
    """Imports that go sideways or up the layers, or into tests/."""
    out = []
    for a in sorted(g.edges):
        for b in sorted(g.edges[a]):
            pa, pb = a.split(".")[0], b.split(".")[0]
            if pa == pb:
                continue
            if pb == "tests" or RANK.get(pb, sys.maxsize) >= RANK.get(pa, -1):
                out.append(f"{a} -> {b}")
    return out


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    nodes = set(edges) | {b for bs in edges.values() for b in bs}
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def self_contained_violations(g: Graph, root: Path = REPO) -> list[str]:
    """Load-time imports of our packages from the folders that ship alone."""
    out = []
    for module, path in g.modules.items():
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(SELF_CONTAINED):
            continue
        own = module.rpartition(".")[0] if path.name != "__init__.py" else module
        for target in sorted(g.top_level.get(module, ())):
            if not target.startswith(own):
                out.append(f"{rel} -> {target}")
    return out
