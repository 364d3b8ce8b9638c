"""The architecture as a test: one import name, data flowing one way, no cycles, nobody importing the CLI.

The graph is read from the source (every `import` statement, also those inside functions, and module names
given to `importlib` as strings), so a lazy import cannot hide a cycle or an import against the flow.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("tasks", "encoders", "probing", "experiments")
# The flow tasks -> encoders -> probing -> experiments: a layer imports only from layers before it.
RANK = {"tasks": 0, "encoders": 1, "probing": 2, "experiments": 3}
FORBIDDEN = {("probing", "encoders")}          # DESIGN.md: probing works on arrays, never on models or audio
CLI = "speechprobe.experiments.cli"
OLD_NAME = re.compile(r"^\s*(?:from|import)\s+(tasks|encoders|probing|experiments)\b", re.MULTILINE)


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] in FOLDERS:
        parts.insert(0, "speechprobe")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_files() -> dict[str, Path]:
    files = [*ROOT.glob("speechprobe/*.py")]
    for folder in FOLDERS:
        files += (ROOT / folder).rglob("*.py")
    return {_module_name(path): path for path in files if "__pycache__" not in path.parts}


MODULES = _package_files()


def _imports(path: Path, known: set[str]) -> set[str]:
    """Package modules this file imports (statements anywhere, and importlib's string arguments)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "speechprobe":
                found.add(name)
    return found


GRAPH = {name: _imports(path, set(MODULES)) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_the_graph_was_read() -> None:
    # guards the rest: a parser that finds nothing would pass every test below
    assert len(MODULES) > 60
    assert "speechprobe.probing.probe" in GRAPH["speechprobe.probing.sweep"]
    assert "speechprobe.encoders.ge2e" in GRAPH["speechprobe.encoders.registry"]   # a string, for importlib


def test_imports_follow_the_flow() -> None:
    against = []
    for module, targets in GRAPH.items():
        source = _layer(module)
        for target in targets:
            goal = _layer(target)
            if source and goal and (RANK[goal] > RANK[source] or (source, goal) in FORBIDDEN):
                against.append(f"{module} -> {target}")
    assert not against, "imports against tasks -> encoders -> probing -> experiments:\n" + "\n".join(sorted(against))


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: any component with two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_nothing_imports_the_cli() -> None:
    importers = sorted(module for module, targets in GRAPH.items() if CLI in targets)
    assert importers == ["speechprobe.__main__"]


@pytest.mark.parametrize("where", ["tests", "benchmarks", "speechprobe", *FOLDERS])
def test_only_the_speechprobe_name_is_imported(where: str) -> None:
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
                 for path in (ROOT / where).rglob("*.py")
                 if "__pycache__" not in path.parts and not any(part.startswith(".") for part in path.parts)
                 for match in OLD_NAME.finditer(path.read_text())]
    assert not offenders, "\n".join(offenders)


def test_readme_examples_import_speechprobe() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks
    assert not [match.group(0) for block in blocks for match in OLD_NAME.finditer(block)]
    for block in blocks:
        ast.parse(block)     # and every example is valid Python


def test_the_public_api_resolves() -> None:
    import speechprobe

    for name in speechprobe.__all__:
        value = getattr(speechprobe, name)
        assert value.__module__.startswith("speechprobe."), name


def test_the_static_imports_list_the_same_api() -> None:
    """`speechprobe/__init__.py` names its API twice (the lazy table, and imports for static tools): same names,
    same modules, so an editor never offers a name that fails at run time or misses one that works."""
    import speechprobe

    tree = ast.parse((ROOT / "speechprobe" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    static = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert static == speechprobe._API
