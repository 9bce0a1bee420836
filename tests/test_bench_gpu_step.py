"""benchmarks/bench_gpu_step.py runs end to end on the CPU (--dry-run: width 8, batch 4, 2 steps), so it is
known to work before a GPU is lent: every variant's step trains (all but `compiled`, which needs CUDA
graphs), and the table has what the GPU run reports."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_step_benchmark_dry_run_on_cpu():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_step.py"), "--dry-run"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    for variant in ("fp32", "tf32", "bf16", "nhwc", "nosync", "defaults", "loop"):
        assert variant in rows, out.stdout
    assert "compiled" not in rows
    assert "images/s" in out.stdout and "host ms/step" in out.stdout and "width 8" in out.stdout


def test_gpu_step_benchmark_refuses_an_unknown_variant():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_step.py"), "--dry-run", "--variants", "fp64"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "unknown variant(s) fp64" in out.stderr
