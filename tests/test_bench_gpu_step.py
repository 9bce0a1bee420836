"""benchmarks/bench_gpu_step.py runs end to end on the CPU (--device cpu --steps 2), so it is known to
work before a GPU is lent: both the old step and the loop with the CUDA config's defaults train."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_step_benchmark_smoke_on_cpu():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_step.py"), "--device", "cpu", "--steps", "2", "--epochs", "1"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "before (fp32, per-step syncs)" in out.stdout and "after (bf16, channels_last, no syncs)" in out.stdout
    assert "images/s" in out.stdout and "speed-up" in out.stdout
