"""Whole-process wall time of commands that should start in about a second.

Each command runs as its own `python -m starcli` process, `--repeat` times after one warm-up (so the
page cache is warm, as for a user's second command); the figure is the median wall time, with the
median CPU time (user + sys of the child) beside it, since on a loaded machine wall time also counts
the wait for a core. The home holds two demo-recipe MLPs (2 epochs each) and one cached barrier pair.

    python benchmarks/bench_startup.py [--repeat 5] [--home DIR]

Target: ≤ 1.5 s each for `--help`, a cached `barrier`, `align` of two MLPs and `spec --arch mlp`. The
last row, `python -c "import torch"`, is the floor under every command that has to compute with tensors.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "--help": ["--help"],
    "barrier (cached)": ["barrier", "--pair", "1", "2", "--points", "5"],
    "align (registered)": ["align", "2", "--to", "1"],
    # A new matching order each run (the seed is part of the alignment's key): weight matching computed.
    "align (computed)": ["align", "2", "--to", "1", "--seed", "{n}"],
    "spec --arch mlp": ["spec", "--arch", "mlp"],
    # The floor under every command that computes: the interpreter and `import torch`, nothing else.
    "python -c 'import torch'": None,
}


def run(home: Path, args: list[str] | None) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    argv = [sys.executable, "-c", "import torch"] if args is None else [sys.executable, "-m", "starcli", "--home", str(home), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {out.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--home", type=Path, default=None, help="Reuse a home made by an earlier run.")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-startup-"))
    if not (home / "registry.db").exists():
        print(f"setting up {home}: two MLPs and one barrier pair", file=sys.stderr)
        run(home, ["train", "--seed", "1-2", "--epochs", "2", "--set", "arch_kwargs.width=64"])
        run(home, ["barrier", "--pair", "1", "2", "--points", "5"])
    load = os.getloadavg()[0]
    print(f"{'command':<18} {'wall median':>12} {'cpu median':>11}   (n={args.repeat}, load {load:.1f}, {os.cpu_count()} cores)")
    runs = 0

    def fresh(cmd: list[str] | None) -> list[str] | None:
        nonlocal runs
        runs += 1
        return None if cmd is None else [a.format(n=runs) for a in cmd]

    for name, cmd in COMMANDS.items():
        run(home, fresh(cmd))  # warm-up: page cache, and `align` registers its solution the first time
        walls, cpus = zip(*(run(home, fresh(cmd)) for _ in range(args.repeat)))
        print(f"{name:<18} {statistics.median(walls):>10.2f} s {statistics.median(cpus):>9.2f} s")


if __name__ == "__main__":
    main()
