"""The allocator policy (starcli/engine/allocator.py): glibc keeps freed memory for reuse in every starlight
process and the processes it starts; where memory comes from never changes what is computed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _python(code: str, **env: str) -> str:
    """Run `code` in a fresh interpreter (the policy is per process) with `env` on top; its stdout."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "STARLIGHT_MALLOC"))}
    done = subprocess.run([sys.executable, "-c", code], env=dict(environ, PYTHONPATH=str(ROOT), **env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not GLIBC, reason="the policy is glibc's mallopt; elsewhere it does nothing")
def test_the_policy_takes_effect_here_and_in_the_processes_started_after_it():
    out = _python(
        "import os, subprocess, sys\n"
        "from starcli.engine import allocator\n"
        "print(allocator.apply(), allocator.apply())\n"  # idempotent
        "child = 'import os; print(os.environ.get(\"MALLOC_MMAP_THRESHOLD_\"), os.environ.get(\"MALLOC_TRIM_THRESHOLD_\"))'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True).stdout.strip())\n"
    )
    applied, child = out.strip().splitlines()
    assert applied == "True True"
    assert child == f"{32 << 20} {256 << 20}"


def test_starlight_malloc_default_leaves_the_allocator_alone():
    out = _python("import os\nfrom starcli.engine import allocator\n"
                  "print(allocator.apply(), os.environ.get('MALLOC_MMAP_THRESHOLD_'))", STARLIGHT_MALLOC="default")
    assert out.strip() == "False None"


def test_a_bad_starlight_malloc_is_one_line_and_a_usage_error(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "STARLIGHT_"))}
    done = subprocess.run([sys.executable, "-m", "starcli", "--home", str(tmp_path / "home"), "list"],
                          env=dict(environ, PYTHONPATH=str(ROOT), STARLIGHT_MALLOC="off"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: $STARLIGHT_MALLOC must be policy or default (glibc's own behaviour), got 'off'\n"
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_a_bn_barrier_is_the_same_bits_with_and_without_the_policy(reg, tiny_config, home):
    """The demo CNN's barrier (BatchNorm re-estimated on 4,000 rows at each t: the allocations the policy is
    for), measured by two `starlight barrier` processes, one with glibc's own behaviour: equal, float for float."""
    from starcli.engine import recipes
    from starcli.solutions import anchors

    config = recipes.resolve("mnist1d-cnn", width=8, epochs=1, overrides={"arch_kwargs.depth": 2})
    a, b = (o.solution.id for o in anchors.train(reg, config, [1, 2]))
    reg.close()
    results = []
    for env in ({}, {"STARLIGHT_MALLOC": "default"}):
        out = _python(
            "import sys\nfrom starcli.cli import main\n"
            f"sys.exit(main(['--home', {str(home)!r}, 'barrier', '--pair', '{a}', '{b}', '--points', '5', '--recompute', '--json']))",
            **env)
        results.append(json.loads(out)["pairs"][0])
    assert results[0]["train"]["loss"] == results[1]["train"]["loss"]
    assert results[0]["test"] == results[1]["test"]
