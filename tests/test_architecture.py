"""The import graph keeps the layout honest: no cycles, and every package imports only the layers below it."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Each package may import the ones listed (and itself); nothing else of components/ or jobs/.
ALLOWED = {
    "components.constants": set(),
    "components.errors": set(),
    "components.metrics": set(),
    "components.io": {"components.constants", "components.errors"},
    "components.contracts": {"components.constants", "components.errors", "components.io"},
    "components.prepare": {"components.constants", "components.errors", "components.io", "components.contracts"},
    "components.train": {
        "components.constants",
        "components.errors",
        "components.io",
        "components.contracts",
        "components.metrics",
    },
    "components.score": {"components.constants", "components.errors", "components.io", "components.contracts"},
    "components.analysts": {
        "components.constants",
        "components.errors",
        "components.io",
        "components.contracts",
        "components.metrics",
        "components.score",
    },
    "components.cloud": {
        "components.constants",
        "components.errors",
        "components.io",
        "components.contracts",
        "components.prepare",
        "components.train",
        "components.score",
    },
}


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for package in ("components", "jobs"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (at any depth of the file: lazy imports count too)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    imported.add(submodule if submodule in known else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {module for module in imported if module in known and module != name}
    return graph


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_each_package_imports_only_the_layers_below_it():
    crossings = [
        f"{module} imports {imported}"
        for module, imported_modules in import_graph().items()
        if module.startswith("components.")
        for imported in imported_modules
        if package_of(imported) != package_of(module) and package_of(imported) not in ALLOWED[package_of(module)]
    ]
    assert crossings == []


def test_entry_points_import_no_logic_from_each_other():
    graph = import_graph()
    shared = {"jobs", "jobs.entrypoint"}
    crossings = [
        f"{module} imports {imported}"
        for module, imported_modules in graph.items()
        for imported in imported_modules
        if imported.startswith("jobs") and imported not in shared and module != "jobs.cli"
    ]
    assert crossings == []
    assert not [
        module
        for module, imported in graph.items()
        if module.startswith("components") and any(i.startswith("jobs") for i in imported)
    ]
