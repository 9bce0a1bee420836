"""How often does each interval cover the true star/regular ratio, and how often does it say "yes" when the
star is no better? A simulated null: true ratio 1, every replicate shifted by its own effect (its anchor set
and star seed) and every held-out by its own noise, both with standard deviation `--sd`.

    OMP_NUM_THREADS=1 python benchmarks/study_interval_coverage.py [--runs 2000] [--sd 0.15]

Prints, per design (replicates × held-outs), the coverage of the 95% interval and the rate of a false "yes"
(the interval entirely below 1; nominal 2.5%) for the two-stage percentile bootstrap (replicates, then
held-outs) and for the t-interval over per-replicate ratios that starlight uses with several replicates
(starcli/engine/evidence.py). This is why the replicate, not the held-out, is the unit there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.engine import evidence  # noqa: E402
from starcli.engine.evidence import Replicate  # noqa: E402

DESIGNS = [(3, 5), (3, 6), (5, 6), (10, 6)]


def simulate(replicates: int, held_outs: int, runs: int, sd: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    cover = {"bootstrap": 0, "t": 0}
    yes = {"bootstrap": 0, "t": 0}
    for _ in range(runs):
        reps = []
        for _ in range(replicates):
            effect = rng.normal(0, sd)
            regular = 1.0 + rng.normal(0, sd, size=held_outs)
            star = 1.0 + effect + rng.normal(0, sd, size=held_outs)
            reps.append(Replicate(tuple(star), tuple(regular)))
        boot = evidence.percentile_interval(evidence.bootstrap(reps, draws=1_000, seed=int(rng.integers(1 << 30)))["ratio"])
        t = evidence.compare(reps)["ratio_ci"]
        for name, ci in (("bootstrap", boot), ("t", t)):
            if ci is not None:
                cover[name] += ci[0] <= 1.0 <= ci[1]
                yes[name] += ci[1] < 1.0
    return {f"{k} coverage": v / runs for k, v in cover.items()} | {f"{k} false yes": v / runs for k, v in yes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--sd", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| replicates × held-outs | bootstrap coverage | bootstrap false yes | t coverage | t false yes |")
    print("|---|---|---|---|---|")
    for r, h in DESIGNS:
        out = simulate(r, h, args.runs, args.sd, args.seed)
        print(f"| {r} × {h} | {out['bootstrap coverage']:.1%} | {out['bootstrap false yes']:.1%} | "
              f"{out['t coverage']:.1%} | {out['t false yes']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
