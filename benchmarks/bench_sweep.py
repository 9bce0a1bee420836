"""A whole sweep end to end from an empty registry: wall and CPU time, with the machine's load.

Runs `starlight sweep NAME` as a real process (the command a user types) in a fresh temporary home,
and reports its wall time, the CPU time of the process and all its workers (user + system), and the
load average sampled every few seconds while it ran. CPU time says what the work cost whatever else
shares the cores; wall time is what it took here, under that load. Issue 11's target: width-mnist1d
on 2 idle cores within 6 minutes.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--sweep width-mnist1d] [--jobs 2] [--keep DIR]

--keep DIR keeps the report folder (summary.md, CSVs, figures) in DIR; --home DIR uses (and keeps) that
registry instead of a temporary one. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="width-mnist1d")
    parser.add_argument("--jobs", type=int, default=2, help="--jobs of the sweep (local workers); 1: in one process")
    parser.add_argument("--keep", type=Path, help="copy the report folder here")
    parser.add_argument("--home", type=Path, help="registry to use (must be empty for the benchmark); kept")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    out = home / "report"
    command = [sys.executable, "-m", "starcli", "--home", str(home), "--quiet", "sweep", args.sweep,
               "--device", "cpu", "--out", str(out), "--json"]
    if args.jobs > 1:
        command += ["--jobs", str(args.jobs)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)

    loads = [load_average()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(5.0):
            loads.append(load_average())

    threading.Thread(target=sample, daemon=True).start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    done.set()
    loads.append(load_average())
    if proc.returncode != 0:
        sys.exit(f"the sweep failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if args.keep:
        shutil.copytree(out, args.keep, dirs_exist_ok=True)
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({
        "sweep": args.sweep,
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),  # the process and every worker it waited for
        "sweep_wall_s": result["wall_seconds"],  # as the sweep measured itself (no interpreter start-up)
        "computed": result["computed"],
        "load_min_median_max": [round(min(loads), 2), round(statistics.median(loads), 2), round(max(loads), 2)],
        "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
