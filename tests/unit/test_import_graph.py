"""The project's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` and ``from ... import`` counts, at module level or inside a function: a
function-level import is a dependency all the same, only a later one. Two rules hold:

* no cycle, among ``functions/``, ``infra/`` and ``layers/`` modules;
* ``functions/shared`` depends on no capability package (``functions.<name>`` other than
  ``shared``): every function's code zip holds ``functions/shared/`` and its own package only
  (layers/build.py), so shared code that reached into another package would not import in
  Lambda.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("functions", "infra", "layers")
SHARED = "functions.shared"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The modules an import statement names (absolute; a ``from`` import's names too, which
    may be submodules)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        yield base
        yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}: for each name an import statement gives, the
    longest project module it names (``from functions.inference import logic`` is
    ``functions.inference.logic``)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py"):
                target = name
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle
    through its modules, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted((_one_cycle(graph, c) for c in components), key=lambda c: c[0])


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path from the component's first module back to itself, within the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_the_graph_sees_module_level_and_function_level_imports() -> None:
    graph = import_graph()
    # module level: the handler imports its logic
    assert "functions.preprocess.logic" in graph["functions.preprocess.handler"]
    # inside a function (the CLI imports the inference handler when it predicts)
    assert "functions.inference.handler" in graph["infra.cli"]
    # and the helpers find a cycle where there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_there_is_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_functions_shared_imports_no_capability_package() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == SHARED or module.startswith(f"{SHARED}.")
        for target in targets
        if target.startswith("functions.")
        and not (target == SHARED or target.startswith(f"{SHARED}."))
    )
    assert not wrong, "functions/shared depends on a capability package:\n" + "\n".join(wrong)


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one module that are not project packages."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found - set(PACKAGES)


def test_the_retrain_function_reaches_no_dataframe_library() -> None:
    # Its layer is promote's (boto3 over the base pydantic and numpy; layers/resolve.py): it
    # reads a version's manifest and builds the run input (functions/shared/runs.py)
    graph, modules = import_graph(), project_modules()
    reached, frontier = set(), ["functions.retrain.handler"]
    while frontier:
        module = frontier.pop()
        if module not in reached:
            reached.add(module)
            frontier += graph[module]
    assert "functions.shared.runs" in reached  # the walk does see what it reads
    heavy = {"pandas", "pyarrow", "scipy", "sklearn"}
    wrong = sorted(
        f"{m} imports {sorted(third_party_imports(modules[m]) & heavy)}"
        for m in reached
        if third_party_imports(modules[m]) & heavy
    )
    assert not wrong, wrong


def test_row_hash_needs_numpy_only() -> None:
    # training and evaluate share it; it may be reached from any function's code
    imported = third_party_imports(project_modules()["functions.shared.row_hash"])
    assert imported - {"__future__", "collections", "json", "numpy"} == set()
