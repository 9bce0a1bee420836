"""One anchor of the default recipe (`starlight train`, mnist1d-mlp) on idle cores, then while another
CPU-bound process runs on the same cores: a python process doing float32 matrix multiplies with torch's
default threads (one per core). Target: the loaded run takes at most 2× the idle one (torch's default
intra-op threads made it 51×; the thread policy, engine/threads.py, gives each process one thread).

Each run is the whole CLI in a fresh process and a fresh $STARLIGHT_HOME (nothing cached), so the
figure includes start-up, training, evaluation and registration.

    python benchmarks/bench_shared_machine.py [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = (
    "import torch\n"
    "a = torch.randn(1024, 1024)\n"
    "while True:\n"
    "    a = (a @ a).clamp_(-1, 1)\n"
)


def train_once(seed: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the policy's own default
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as home:
        env["STARLIGHT_HOME"] = home
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "starcli", "train", "--seed", str(seed)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    idle = train_once(args.seed)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's default: a thread per core
    busy = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
    try:
        time.sleep(3)  # let it import torch and start multiplying
        loaded = train_once(args.seed)
        load = os.getloadavg()[0]
    finally:
        busy.kill()
        busy.wait()
    print(f"idle: {idle:.1f} s   beside a busy torch process: {loaded:.1f} s   ratio {loaded / idle:.2f}×   "
          f"(load during: {load:.2f})")


if __name__ == "__main__":
    main()
