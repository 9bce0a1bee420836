"""The floor plan, as tests: a module's folder says what it touches (README, "Layout").

The import graph is read from the source with `ast` (every import, module level and function level),
so these hold whatever a test run happens to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder -> the package it installs as (pyproject: registry/ is starcli.registry).
PACKAGES = {"starcli": "starcli", "registry": "starcli.registry"}
REGISTRY = "starcli.registry"
PURE_TORCH = ("starcli.engine", "starcli.models", "starcli.alignment")
SQL = ("sqlmodel", "sqlalchemy")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = package.split(".") + list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, absolute, with `from X import Y` resolved to X.Y when Y is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):  # names read from the module itself, not only its submodules
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_module_graph_is_read_from_the_source():
    # A guard that reads nothing would pass vacuously.
    assert "starcli.engine.loop" in MODULES and "starcli.registry.store" in MODULES and len(MODULES) > 40
    assert "starcli.engine.data" in GRAPH["starcli.engine.training"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, PURE_TORCH)))
def test_engine_models_and_alignment_never_see_the_registry(module):
    forbidden = [
        i for i in GRAPH[module] if _within(i, (REGISTRY, "starcli.solutions", "starcli.experiments") + SQL)
    ]
    assert forbidden == [], f"{module} imports {forbidden}"


def test_sql_lives_only_in_the_registry_and_the_solutions_wing():
    outside = {
        m: sorted(i for i in GRAPH[m] if _within(i, SQL))
        for m in MODULES
        if not _within(m, (REGISTRY, "starcli.solutions"))
    }
    assert {m: v for m, v in outside.items() if v} == {}


def test_the_registry_stands_alone():
    leaks = {
        m: sorted(i for i in GRAPH[m] if _within(i, ("starcli",)) and not _within(i, (REGISTRY,)))
        for m in MODULES
        if _within(m, (REGISTRY,))
    }
    assert {m: v for m, v in leaks.items() if v} == {}


def test_reports_lay_out_numbers_and_never_open_the_registry():
    leaks = {
        m: sorted(i for i in GRAPH[m] if _within(i, (REGISTRY, "starcli.solutions", "starcli.experiments") + SQL))
        for m in MODULES
        if _within(m, ("starcli.reports",))
    }
    assert {m: v for m, v in leaks.items() if v} == {}


def test_nothing_imports_the_cli_back():
    # Only `python -m starcli` runs it; the command modules register themselves on the app of their package.
    assert [m for m, imports in GRAPH.items() if "starcli.cli" in imports] == ["starcli.__main__"]


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` (node -> successors) as a path that returns to its start, or []."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str]:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = walk(nxt, path + [nxt])
                if found:
                    return found
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done:
            found = walk(start, [start])
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_cycles():
    internal = {m: {i for i in imports if i in MODULES and i != m} for m, imports in GRAPH.items()}
    assert find_cycle(internal) == []


RUNNERS = "starcli.runners"
CLUSTER_LIBRARIES = ("ray", "submitit")


def _imported_by_name(path: Path) -> set[str]:
    """Modules imported by a string: `require("ray", ...)`, `importlib.import_module("submitit")`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("require", "import_module") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def test_the_runners_wing_knows_jobs_only_by_their_protocol():
    # Below solutions/: the kinds of work import the runners, never the reverse.
    upward = {
        m: sorted(i for i in GRAPH[m] if _within(i, ("starcli.solutions", "starcli.experiments", "starcli.commands")))
        for m in MODULES
        if _within(m, (RUNNERS,))
    }
    assert len(upward) >= 5 and {m: v for m, v in upward.items() if v} == {}


def test_only_the_runners_wing_imports_ray_or_submitit():
    users = {
        m for m, path in MODULES.items()
        if any(_within(i, CLUSTER_LIBRARIES) for i in GRAPH[m] | _imported_by_name(path))
    }
    # The guard reads something: the runners do import them.
    assert {"starcli.runners.slurm", "starcli.runners.ray_tasks"} <= users
    assert sorted(m for m in users if not _within(m, (RUNNERS,))) == []


def _declared_flags(path: Path) -> set[str]:
    """Flags a module declares with `typer.Option(...)`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "Option":
            found.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return found


def test_commands_take_the_executor_options_only_from_the_one_bundle():
    import inspect

    from starcli.cli import app  # every command module loaded
    from starcli.commands import common

    flags = set(common.EXECUTOR_FLAGS)
    assert flags == {"--executor", "--jobs", "--partition", "--time", "--gpus-per-job", "--slurm-cluster", "--ray-address"}
    declared = {m: _declared_flags(p) & flags for m, p in MODULES.items() if _within(m, ("starcli.commands",))}
    assert declared["starcli.commands.common"] == flags  # the bundle, read from the source
    assert {m: sorted(v) for m, v in declared.items() if v and m != "starcli.commands.common"} == {}
    # And every command that has one of them got it from the bundle.
    names = {"executor", "jobs", "partition", "time", "gpus_per_job", "slurm_cluster", "ray_address"}
    using = {info.callback.__name__: info.callback for info in app.registered_commands
             if names & set(inspect.signature(info.callback).parameters)}
    assert {"train", "star", "barrier", "sweep", "demo"} <= set(using)
    assert [name for name, f in using.items() if not getattr(f, "executor_options", None)] == []
