"""The suite's own thread policy (tests/conftest.py): one torch intra-op thread per pytest-xdist worker, two in a
serial run, and an $OMP_NUM_THREADS already set is kept.

Each case runs pytest on a one-test file beside a copy of tests/conftest.py, as `make test` runs the suite. The
bug this holds: under xdist the controller imported conftest, set its serial default (2) and its workers
inherited it, so `make test` ran two workers of two spinning OpenMP threads each on two cores (the suite took
about 1.5 times the CPU it takes with one thread per worker)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

PROBE = """
import os
import torch

def test_probe():
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write(f"{os.environ['OMP_NUM_THREADS']} {torch.get_num_threads()}\\n")
"""


def _threads(tmp_path: Path, *args: str, omp: str | None = None) -> set[str]:
    """The '$OMP_NUM_THREADS torch-threads' each process that ran the probe saw."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    env["PROBE_OUT"] = str(tmp_path / "seen.txt")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args,
         str(tmp_path / "test_probe.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return set((tmp_path / "seen.txt").read_text().splitlines())


@pytest.mark.slow
def test_each_xdist_worker_runs_one_torch_thread(tmp_path):
    # -n 1: one worker is enough to see what a worker inherits from its controller (each worker is a process
    # with its own torch start, so fewer workers are cheaper and test the same).
    assert _threads(tmp_path, "-n", "1") == {"1 1"}


@pytest.mark.slow
def test_a_serial_run_takes_two_threads_and_a_given_count_is_kept(tmp_path):
    assert _threads(tmp_path / "serial") == {"2 2"}
    # (a count above the core count would be capped by torch: 1 is the count a serial run would not pick itself)
    assert _threads(tmp_path / "given", omp="1") == {"1 1"}
