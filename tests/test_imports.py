"""Every module of the distribution imports, so a fast run (`make test-fast`, which leaves the end-to-end tests
out) still loads each of them: a syntax error or a broken import anywhere fails in seconds."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder → the package it installs as (pyproject.toml maps registry/ and recipes/ under starcli).
FOLDERS = {"starcli": "starcli", "registry": "starcli.registry", "recipes": "starcli.recipes"}
# Optional extras a module may need; without the extra its import is skipped, not failed.
EXTRAS = {"mlflow", "wandb", "tensorboard", "torch.utils.tensorboard", "ray", "submitit", "s3fs", "psycopg", "pandas"}


def modules() -> list[str]:
    out = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            elif parts[-1] == "__main__":
                continue  # importing it runs the CLI; the tests that run `python -m starcli` (tests/faults.py) cover it
            out.append(".".join([package, *parts]))
    return out


MODULES = modules()


def test_the_source_tree_was_found():
    assert len(MODULES) >= 90 and "starcli.engine.loop" in MODULES and "starcli.registry.database" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (e.name in EXTRAS or e.name.split(".")[0] in EXTRAS):
            pytest.skip(f"{name} needs the optional extra that provides {e.name}")
        raise
