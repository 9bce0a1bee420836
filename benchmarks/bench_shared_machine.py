"""One anchor of the default recipe on idle cores vs on cores another CPU-bound process is using.

The case issue 11 measured: with torch's default intra-op threads, one default anchor took 51× longer
on a shared 2-core machine than with one thread, because every matrix multiply waits for threads that
do not get a core. starlight's thread policy gives small models one intra-op thread by default. This
runs `starlight train` as a user would — OMP_NUM_THREADS unset, so the policy decides — in a fresh home
each time (the generated dataset copied in, so no run pays for making it), alternately on idle cores and
beside a competitor: a second Python process multiplying 1024×1024 matrices with as many torch threads
as there are cores, started before and stopped after the run. Variants are interleaved and repeated;
the figure is the ratio of median wall times. Target: ≤ 2× (was 51×).

    python benchmarks/bench_shared_machine.py [--repeat 2] [--epochs N]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMPETITOR = (
    "import os, torch\n"
    "torch.set_num_threads(os.cpu_count())\n"
    "a = torch.randn(1024, 1024)\n"
    "while True:\n"
    "    a = (a @ a).tanh_()\n"
)


def environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    env.pop("OMP_NUM_THREADS", None)  # the thread policy, not the caller, picks the threads
    env.pop("MKL_NUM_THREADS", None)
    return env


def train(work: Path, datasets: Path, epochs: int | None) -> float:
    home = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(datasets, home / "datasets")
    cmd = [sys.executable, "-m", "starcli", "--home", str(home), "--quiet", "train", "--seed", "1", "--device", "cpu"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    start = time.perf_counter()
    out = subprocess.run(cmd, env=environment(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"train failed: {out.stderr.strip().splitlines()[-1:]}")
    shutil.rmtree(home, ignore_errors=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (default: the recipe's)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    try:
        # One short run makes and caches the dataset; every measured run starts from a copy of it.
        warm = work / "warm"
        subprocess.run([sys.executable, "-m", "starcli", "--home", str(warm), "--quiet", "train", "--seed", "1",
                        "--epochs", "1", "--device", "cpu"], env=environment(), check=True, capture_output=True)
        idle, shared, loads = [], [], []
        for _ in range(args.repeat):
            idle.append(train(work, warm / "datasets", args.epochs))
            competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=environment())
            try:
                time.sleep(2.0)  # let it import torch and start multiplying
                shared.append(train(work, warm / "datasets", args.epochs))
                loads.append(os.getloadavg()[0])
            finally:
                competitor.kill()
                competitor.wait()
            time.sleep(2.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "idle_s": [round(t, 1) for t in idle],
        "shared_s": [round(t, 1) for t in shared],
        "ratio": round(statistics.median(shared) / statistics.median(idle), 2),
        "load_1min_after_shared_runs": [round(x, 2) for x in loads],
        "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
