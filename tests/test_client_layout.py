"""The client package's layout holds: every module imports, no two modules import each other in a
circle (counting lazy and TYPE_CHECKING imports too), and imports point down the layers
cli -> reports | load -> client proper -> traces."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import vmxsim_client

PACKAGE = "vmxsim_client"

# What each layer may import (itself included). The client proper is every module directly in
# vmxsim_client/ (client, connection, wire, errors, ...); traces are the readers beneath it all.
ALLOWED = {
    "cli": {"cli", "reports", "load", "client", "traces"},
    "reports": {"reports", "client", "traces"},
    "load": {"load", "client", "traces"},
    "client": {"client", "traces"},
    "traces": {"traces"},
}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, with its source file."""
    found = {PACKAGE: Path(vmxsim_client.__file__)}
    for info in pkgutil.walk_packages(vmxsim_client.__path__, f"{PACKAGE}."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        if spec.origin.endswith(".py"):  # not the C extension (traces/_scan)
            found[info.name] = Path(spec.origin)
    return found


def _layer(module: str) -> str:
    """``cli``, ``reports``, ``load`` or ``traces`` for a module in that folder, else ``client``."""
    folder = module.split(".")[1] if "." in module else ""
    return folder if folder in ALLOWED and folder != "client" else "client"


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if name in known]
            targets.update(submodules or [base])
    return {target for target in targets if target in known and target != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_client_module_imports() -> None:
    for name in _modules():
        importlib.import_module(name)


def test_layout_has_the_concept_folders() -> None:
    layers = {_layer(name) for name in _modules()}
    assert layers == set(ALLOWED)
    assert "vmxsim_client.cli.entry" in _modules()


def test_no_import_cycles_in_the_client_package() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_imports_point_down_the_layers() -> None:
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if _layer(target) not in ALLOWED[_layer(source)]
    )
    assert wrong == []


def test_the_graph_sees_relative_and_lazy_imports() -> None:
    graph = _graph()
    assert "vmxsim_client.reports.charts" in graph["vmxsim_client.reports.write"]
    # entry imports its cmd_* modules by name (COMMANDS, issue 15.4); its relative imports show
    assert "vmxsim_client.cli.conventions" in graph["vmxsim_client.cli.entry"]
    # cmd_compare imports the report writer inside a function
    assert "vmxsim_client.reports.write" in graph["vmxsim_client.cli.cmd_compare"]
    assert "vmxsim_client.client" in graph["vmxsim_client.load.sharding"]


def test_public_import_paths_keep_working() -> None:
    from vmxsim_client.cli import main, run
    from vmxsim_client.client import Client
    from vmxsim_client.load import LoadPlan, ShardedClient, local_servers, run_load
    from vmxsim_client.reports import collect, write_report

    assert callable(main) and callable(run) and callable(local_servers)
    assert Client.__name__ == "Client" and ShardedClient.__name__ == "ShardedClient"
    assert callable(run_load) and LoadPlan.__name__ == "LoadPlan"
    assert callable(collect) and callable(write_report)
