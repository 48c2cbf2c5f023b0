"""Every project module imports on its own, the module-level imports have no cycle, and the layers
hold: ``envs`` <- ``marl`` <- ``psro`` <- ``experiments`` (a module may import its own layer and the
ones to its left, never one to its right -- not even inside a function).

The import graph comes from the source (``ast``), not from importing: an edge ``a -> b`` for each
``import b`` / ``from b import x`` / ``from . import b`` in module ``a``. Edges to a package that
contains the importing module are left out (``from envs import spaces`` inside ``envs.core`` runs
no ``envs/__init__`` code that is not already running), and so are imports under
``if TYPE_CHECKING:`` (never executed). Two cycle checks: one over module-level imports (including
those in class bodies and module-level ``if``/``try`` blocks) -- such a cycle makes the import order
matter -- and one that also counts imports inside functions, which hide a cycle rather than remove
it; each cycle is reported once, in the first check that sees it. The layer check counts both.

Each module is also imported by itself in a fresh interpreter (one driver process that loads the
third-party libraries once, then forks a child per module), so a module that only imports when
something else was imported first shows up here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "envs",
    "marl",
    "psro",
    "experiments",
)  # in layer order: each may import the ones before
LAYER = {p: i for i, p in enumerate(PACKAGES)}


@dataclass(frozen=True)
class Import:
    src: str  # the importing module
    dst: str  # the imported project module
    line: int
    in_function: bool

    @property
    def where(self) -> str:
        return f"{_path(self.src)}:{self.line}"


def _discover() -> dict[str, Path]:
    """module name -> source file, for every module under PACKAGES (found on disk, not imported)."""
    import pkgutil

    found: dict[str, Path] = {}

    def walk(path: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(path)]):
            name = f"{prefix}.{info.name}"
            if info.ispkg:
                found[name] = path / info.name / "__init__.py"
                walk(path / info.name, name)
            else:
                found[name] = path / f"{info.name}.py"

    for pkg in PACKAGES:
        found[pkg] = ROOT / pkg / "__init__.py"
        walk(ROOT / pkg, pkg)
    return found


@cache
def modules() -> dict[str, Path]:
    return _discover()


def _path(module: str) -> str:
    return str(modules()[module].relative_to(ROOT))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement in ``module`` runs (ancestor packages left out)."""
    known = modules()
    is_pkg = known[module].name == "__init__.py"
    named: list[str] = []
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        named = [origin]
        named += [
            f"{origin}.{alias.name}" for alias in node.names if f"{origin}.{alias.name}" in known
        ]
    out: list[str] = []
    for name in named:
        parts = name.split(".")
        if parts[0] not in LAYER:
            continue
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            target = ".".join(parts[:i])
            if target not in known or target == module:
                continue
            if module.startswith(target + "."):  # an enclosing package: already running
                continue
            out.append(target)
    return list(dict.fromkeys(out))


@cache
def imports() -> tuple[Import, ...]:
    """Every project import of every module, with its line and whether it sits in a function."""
    found: list[Import] = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node: ast.AST, in_function: bool, module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child.test):
                    for sub in child.orelse:  # the else branch does run
                        visit(ast.Module(body=[sub], type_ignores=[]), in_function)
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for dst in _targets(module, child):
                        found.append(Import(module, dst, child.lineno, in_function))
                    continue
                inner = in_function or isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                )
                visit(child, inner)

        visit(tree, False)
    return tuple(found)


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _shortest_cycle(graph: dict[str, set[str]], start: str, allowed: set[str]) -> list[str]:
    """The shortest cycle start -> ... -> start inside ``allowed`` (breadth-first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & allowed):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if nxt not in parent:
                    parent[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return []


def import_cycles(functions: bool = False) -> list[str]:
    """One line per cycle: each module with the file:line of its import of the next one.

    ``functions``: count imports inside functions too (marked ``in a function``).
    """
    edges: dict[tuple[str, str], Import] = {}
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in sorted(imports(), key=lambda i: (i.in_function, i.line)):
        if functions or not imp.in_function:
            graph[imp.src].add(imp.dst)
            edges.setdefault((imp.src, imp.dst), imp)
    lines: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for comp in _sccs(graph):
        members = set(comp)
        for start in comp:
            cycle = _shortest_cycle(graph, start, members)
            # the same cycle from another start: rotate so the smallest module leads
            i = cycle.index(min(cycle[:-1]))
            canon = tuple(cycle[i:-1] + cycle[:i])
            if canon in seen:
                continue
            seen.add(canon)
            ring = [*canon, canon[0]]
            hops = [_hop(edges[a, b]) for a, b in zip(ring, ring[1:], strict=False)]
            lines.append(" -> ".join([*hops, ring[-1]]))
    return lines


def _hop(imp: Import) -> str:
    return f"{imp.src} ({imp.where}{', in a function' if imp.in_function else ''})"


def layer_violations() -> list[str]:
    out = []
    for imp in imports():
        src_layer, dst_layer = LAYER[imp.src.split(".")[0]], LAYER[imp.dst.split(".")[0]]
        if dst_layer > src_layer:
            kind = "in a function" if imp.in_function else "at module level"
            out.append(f"{imp.where}: {imp.src} imports {imp.dst} ({kind})")
    return sorted(set(out))


def test_the_walk_finds_every_package():
    found = modules()
    for pkg in PACKAGES:
        assert pkg in found
    assert "psro.solvers.nash" in found and "envs.examples.highway_intersection" in found
    assert len(imports()) > len(found)  # the parser sees the imports


def test_the_graph_tools_find_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _sccs(graph) == [["a", "b", "c"]]
    assert _shortest_cycle(graph, "b", {"a", "b", "c"}) == ["b", "c", "a", "b"]


def test_no_module_level_import_cycles():
    """A cycle of module-level imports: which module sees the other half-initialised depends on
    which one is imported first."""
    cycles = import_cycles()
    assert not cycles, "module-level import cycles:\n  " + "\n  ".join(cycles)


def test_no_import_cycles_anywhere():
    """Not even through an import inside a function (the usual way round a cycle, not a fix)."""
    cycles = [c for c in import_cycles(functions=True) if "in a function" in c]
    assert not cycles, "import cycles through imports in functions:\n  " + "\n  ".join(cycles)


def test_imports_follow_the_layer_order():
    bad = layer_violations()
    order = " <- ".join(PACKAGES)
    assert not bad, f"imports against the layer order {order}:\n  " + "\n  ".join(bad)


_DRIVER = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback
    modules, third_party = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    for name in third_party:  # loaded once, before forking (not project code)
        try:
            importlib.import_module(name)
        except Exception:
            pass
    results, running = {}, {}

    def reap():
        pid, status = os.wait()
        name, path = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        with open(path) as f:
            text = f.read()
        os.unlink(path)
        results[name] = None if code == 0 else (text or f"exit status {code}")

    tmp = os.environ.get("TMPDIR", "/tmp")
    for i, name in enumerate(modules):
        while len(running) >= 2:
            reap()
        path = os.path.join(tmp, f"import-check-{os.getpid()}-{i}.txt")
        open(path, "w").close()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                importlib.import_module(name)
            except BaseException:
                with open(path, "w") as f:
                    f.write(traceback.format_exc(limit=-6))
                code = 1
            os._exit(code)
        running[pid] = (name, path)
    while running:
        reap()
    print(json.dumps(results))
    """
)


def _third_party() -> list[str]:
    """The top-level non-project packages the project imports at module level (to load once)."""
    names: set[str] = set()
    for path in modules().values():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    stdlib = set(sys.stdlib_module_names)
    return sorted(
        n for n in names if n.split(".")[0] not in LAYER and n.split(".")[0] not in stdlib
    )


def test_every_module_imports_on_its_own():
    """Each module in a process of its own (forked from one that holds only third-party code)."""
    names = sorted(modules())
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(names), json.dumps(_third_party())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(results) == names
    failed = {name: err for name, err in results.items() if err is not None}
    assert not failed, "modules that fail to import on their own:\n" + "\n".join(
        f"--- {name} ({_path(name)})\n{err}" for name, err in sorted(failed.items())
    )
