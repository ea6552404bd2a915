"""Imports inside src/dcdgan flow one way: the module graph, function-level imports included, has no cycle.

An import inside a function hides a cycle from Python (it runs late) but not from a reader: the two modules
still need each other. So the graph is read with ``ast`` from every ``import`` statement anywhere in a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dcdgan

PACKAGE = Path(dcdgan.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its __init__)."""
    names = {}
    for file in root.rglob("*.py"):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = file
    return names


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name lives in (``dcdgan.nets.build_generator`` -> ``dcdgan.nets``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports, at any depth of the file (functions, conditionals)."""
    modules = module_names(root)
    graph = {}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                targets.update(_owner(alias.name, modules) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x, from ..nets import y
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:  # `from dcdgan import scan` imports the module dcdgan.scan
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in modules else _owner(source, modules))
        targets.discard(None)
        targets.discard(name)
        graph[name] = {t for t in targets if t.startswith(root.name)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    # The check itself: a cycle hidden in a function body, through a relative import, is found.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.high import g\n    return g\n")
    (package / "high.py").write_text("from . import low\n\ndef g():\n    return low\n")
    (package / "side.py").write_text("import pkg.low\n")
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.low": {"pkg.high"}, "pkg.high": {"pkg.low"}, "pkg.side": {"pkg.low"}}
    assert find_cycle(graph) == ["pkg.high", "pkg.low", "pkg.high"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
