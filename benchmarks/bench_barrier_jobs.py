"""Barrier fan-out: `barriers.compute` with `--jobs 2` on a local 2-worker pool against one process, same pairs.

The demo's setting (a star from 5 anchors of the default recipe, 3 held-outs: 18 pairs, 11 points, train
and test). One process runs with one thread; each of the 2 workers also runs with one thread
(OMP_NUM_THREADS=1), so on 2 cores the ideal ratio is 2×. Every repeat recomputes every pair
(`recompute`); the two ways alternate, so drift in the machine's load hits both. The pool's time includes
starting its workers (spawn + importing torch), which a user pays on every command. The numbers of both
ways are checked equal.

    OMP_NUM_THREADS=1 python benchmarks/bench_barrier_jobs.py [--repeats 3] [--width 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.registry import open_registry  # noqa: E402
from starcli.engine import recipes  # noqa: E402
from starcli.solutions import anchors as anchor_training  # noqa: E402
from starcli.runners.options import RunOptions  # noqa: E402
from starcli.solutions import barriers, stars  # noqa: E402


def numbers(result):
    return [(p["a"], p["b"], {k: v for k, v in p.items() if k not in ("seconds", "device")}) for p in result["pairs"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=None, help="MLP width (default: the recipe's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        reg = open_registry(Path(tmp))
        config = recipes.resolve("mnist1d-mlp", width=args.width, epochs=1)
        ids = [o.solution.id for o in anchor_training.train(reg, config, list(range(1, 9)), device="cpu")]
        star, _ = stars.build_star(reg, ids[:5], epochs=1, device="cpu")
        spec = barriers.BarrierSpec(star=star.id, held_out=ids[5:], points=11, splits=("train", "test"), recompute=True)

        def measured(run: RunOptions):
            plan = barriers.plan_barriers(reg, spec)
            computed = barriers.compute(reg, plan, run, "cpu")
            return barriers.finish(plan, computed), len(computed)

        one, two, reference = [], [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            single, n = measured(RunOptions())
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            fanned, m = measured(RunOptions(executor="local", jobs=2))
            two.append(time.perf_counter() - start)
            assert n == m == 18 and numbers(single) == numbers(fanned), "the batches' numbers differ"
            reference = reference or numbers(single)
            assert numbers(single) == reference
        ratio = statistics.median(one) / statistics.median(two)
        print(f"18 pairs x 11 points, train+test, MLP width {config['arch_kwargs']['width']}")
        print(f"one process (1 thread): {' '.join(f'{t:.2f}' for t in one)} s (median {statistics.median(one):.2f})")
        print(f"--jobs 2 (2 workers x 1 thread): {' '.join(f'{t:.2f}' for t in two)} s (median {statistics.median(two):.2f})")
        print(f"speed-up of --jobs 2: {ratio:.2f}x (ideal on 2 cores: 2x)")
        reg.close()


if __name__ == "__main__":
    main()
