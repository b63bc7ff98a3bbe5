"""The package's layering (docs/ARCHITECTURE.md), read from the source with `ast`, without importing it.

Every import statement of every module under src/graphprune counts: at the top, inside functions (the lazy
imports that keep torch out of the config code), under TYPE_CHECKING. An import names the module it reads:
`from graphprune.network import cost` is an import of graphprune.network.cost, `from graphprune.models import
build_model` one of the package graphprune.models. Importing a submodule also runs its package's `__init__`;
that implicit step is not an edge here (the subpackages' `__init__`s import nothing or their own torch-free
modules, but for methods/gat_ppo, whose `__init__` is the method).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "graphprune"

# Area (the first name below graphprune: a subpackage or a top-level module) -> the areas it must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "network": frozenset({"methods", "stages", "commands", "api", "cli"}),
    "data": frozenset({"network", "methods", "stages", "commands", "api", "cli"}),
    "models": frozenset({"network", "methods", "stages", "commands", "api", "cli"}),
    "methods": frozenset({"stages", "commands", "api", "cli"}),
    "stages": frozenset({"commands", "cli"}),
    # The top-level foundation: used by the layers above, it uses none of the pipeline, the API or the CLI.
    **{module: frozenset({"stages", "commands", "api", "cli"})
       for module in ("atomic", "checkpoint", "config", "errors", "paths", "recipe", "train")},
    # The search builder serves the search stage and the API, so it uses neither; `restore` drives dvc/snakemake.
    "search_setup": frozenset({"stages", "commands", "api", "cli"}),
    "restore": frozenset({"stages", "commands", "api", "cli"}),
    "prune_job": frozenset({"stages", "commands", "cli"}),  # the prune command's work, on top of the API
}
# The command line is only ever entered through pyproject's entry point (`graphprune = graphprune.cli:main`)
# or `python -m graphprune.cli`: no module imports it.
ENTRY_POINT = "cli"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package (a package is its `__init__.py`)."""
    modules = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body), by the rules of the docstring."""
    modules = module_files(src)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges[name].update(alias.name for alias in node.names if _ours(alias.name))
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                if not _ours(base):
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    edges[name].add(submodule if submodule in modules else base)
    return edges


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def area(module: str) -> str:
    """`graphprune.network.cost` -> "network"; `graphprune.api` -> "api"; the package itself -> ""."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for importer, imported in sorted(edges.items()):
        for target in sorted(imported):
            if area(target) == ENTRY_POINT and area(importer) != ENTRY_POINT:
                found.append(f"{importer} imports {target}: nothing imports the CLI but its entry point")
            elif area(target) in FORBIDDEN.get(area(importer), ()):
                found.append(f"{importer} imports {target}: {area(importer)} must not import {area(target)}")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in edges:
                continue
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(imports()) == []


def test_every_module_keeps_to_its_layer():
    assert layering_violations(imports()) == []


def test_the_layers_exist():
    """A rule about a subpackage that is not there would pass for nothing."""
    areas = {area(module) for module in module_files()}
    assert set(FORBIDDEN) | {ENTRY_POINT, "api", "commands"} <= areas


def test_one_builder_assembles_every_search():
    """The search stage, the API and the prune command's job assemble a search through `search_setup` alone, so
    their search images, calibration batches and method contexts cannot drift apart (tests/test_search_setup.py
    checks the images themselves)."""
    edges = imports()
    for user in ("graphprune.stages.search", "graphprune.api", "graphprune.prune_job"):
        assert "graphprune.search_setup" in edges[user], user
        assert "graphprune.network.search_eval" not in edges[user], f"{user} draws search images itself"


def test_modules_named_in_strings_exist():
    """Imports by name (`importlib.import_module`) break silently when a module moves: the method registry's
    index and the CLI's command list must name modules that are there."""
    from graphprune.cli import COMMANDS
    from graphprune.methods.index import METHOD_MODULES

    modules = module_files()
    assert set(METHOD_MODULES.values()) | set(COMMANDS) <= set(modules)


def test_the_rules_flag_violations(tmp_path):
    """The checks can fail: a synthetic package with a lazy upward import, a cycle and a CLI import."""
    package = tmp_path / PACKAGE
    for folder in ("network", "methods", "stages", "data"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("")
    (package / "network" / "cost.py").write_text(
        "from graphprune.network import latency\n\ndef f():\n    from graphprune.methods.base import x\n")
    (package / "network" / "latency.py").write_text("from . import cost\n")
    (package / "methods" / "base.py").write_text("import graphprune.network.cost\n")
    (package / "stages" / "search.py").write_text("from graphprune import cli\n")
    (package / "data" / "splits.py").write_text("if True:\n    from graphprune.network.cost import y\n")

    edges = imports(tmp_path)
    assert edges["graphprune.network.latency"] == {"graphprune.network.cost"}  # relative import resolved
    assert cycles(edges) == [["graphprune.methods.base", "graphprune.network.cost", "graphprune.network.latency"]]
    assert layering_violations(edges) == [
        "graphprune.data.splits imports graphprune.network.cost: data must not import network",
        "graphprune.network.cost imports graphprune.methods.base: network must not import methods",
        "graphprune.stages.search imports graphprune.cli: nothing imports the CLI but its entry point",
    ]
    assert cycles({"a": {"a"}}) == [["a"]]
