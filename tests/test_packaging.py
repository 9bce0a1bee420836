"""One installable package: the built wheel holds starcli only, under a distribution name of our own."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [path] = out.glob("*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package_and_a_free_distribution_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.startswith("starlight_landscapes-")
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"starcli"}
    [top_level] = [n for n in names if n.endswith("top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["starcli"]


@pytest.mark.slow
def test_the_registry_and_recipes_install_inside_it_with_every_package_of_the_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"starcli/registry/store.py", "starcli/recipes/mnist1d-mlp.toml", "starcli/recipes/sweeps/width-mnist1d.toml"} <= names
    source = {p.parent.relative_to(ROOT / "starcli") for p in (ROOT / "starcli").rglob("__init__.py")}
    assert all(f"starcli/{d.as_posix()}/__init__.py".replace("/./", "/") in names for d in source if str(d) != ".")


def test_a_folder_named_registry_or_recipes_in_the_working_directory_shadows_nothing(tmp_path):
    (tmp_path / "registry").mkdir()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "registry" / "__init__.py").write_text("raise ImportError('the wrong registry')\n")
    done = subprocess.run(
        [sys.executable, "-m", "starcli", "--home", str(tmp_path / "h"), "list"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0 and "no solutions registered yet" in done.stderr, done.stderr
