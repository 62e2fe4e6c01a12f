"""The project's import graph, read from the source (every ``import`` statement, function-level ones too):
what tests/test_imports.py checks for cycles and tests/test_dvc_deps.py compares with dvc.yaml's deps."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("semcolor", "pipeline")
_MODULE_STRING = re.compile(r"^(semcolor|pipeline)(\.\w+)+(:\w+)?$")


@functools.cache
def package_modules() -> dict[str, Path]:
    """Dotted name -> file of every module and package under semcolor/ and pipeline/."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name an ``import`` statement anywhere in the file may refer to (relative ones resolved),
    and every string naming a project module (``"semcolor.models.psc"``, ``"semcolor.sources.sbd:Sbd"``)."""
    names: set[str] = set()
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            # a registry that imports by name (importlib.import_module("semcolor.models.psc"),
            # "semcolor.sources.voc2012:Voc2012"): the module runs as surely as an import statement
            names.add(node.value.partition(":")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a submodule's import of its own parent package excluded:
    Python imports the parent first, so that edge can never be the first import of a cycle)."""
    modules = package_modules()

    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {project_module(name) for name in imported_names(path, module)}
        graph[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def transitive_imports(graph: dict[str, set[str]], module: str) -> set[str]:
    """``module`` and every project module importing it can import, with the packages above each (importing
    ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(graph.get(current, ()))
    return seen
