"""What re-aligning the anchors only every K epochs (`star --realign-every K`) does to the star, on replicates.

`--realign-every K` makes a star epoch cheaper (benchmarks/bench_realign.py) but builds another star, so
its effect on star quality is measured here before anyone relies on it (issue 25, item 3). Task: the
default recipe (mnist1d-mlp, width 256), anchors and held-outs trained for --epochs (default 40, a tenth
of the recipe's 400: 8 minutes with 4 replicates on the 2-core machine at load 8-11; `--epochs 400
--replicates 3`, the recipe, took 13; the star trains as long as its anchors). --replicates replicates,
with disjoint seeds: replicate r uses anchors SEED_FROM + 10r +
0..ANCHORS-1 and held-outs the next HELD_OUTS seeds, star seed r. Per replicate and per K in --every, one
star (the default preset, `--realign-every K`) from the same anchors; then train-loss barriers, weight-
matched, 11 points (`barrier --star S --held-out H`: the star to each held-out and the regular baseline,
the mean of its anchors to that held-out).

Reported, each as evidence.compare over replicates (a t-interval over the per-replicate ratios, df = R − 1):
- star/regular for each K: does the star still connect better than its anchors at that K;
- star(K)/star(1): the barrier of the K-star over the every-epoch star, to the same held-outs (paired: same
  anchors, held-outs and star seed), i.e. the effect of K itself;
plus the stars' train loss against their anchors' (still a solution?) and their wall seconds as recorded.

Everything runs through the CLI (`starlight --home HOME ... --json`) in its own registry, so a rerun
answers finished work from it:

    OMP_NUM_THREADS=1 python benchmarks/study_realign_every.py --home /tmp/study-realign-every \
        --out docs/results/realign-every
    OMP_NUM_THREADS=1 python benchmarks/study_realign_every.py --home /tmp/study-realign-every-400 \
        --epochs 400 --replicates 3 --out docs/results/realign-every-400-epochs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.engine import evidence  # noqa: E402
from starcli.engine.evidence import Replicate  # noqa: E402
from study_cli import fmt_ci, per_held_out, replicate_seeds, starlight  # noqa: E402  (this folder)

ANCHORS, HELD_OUTS, SEED_FROM = 4, 3, 501


def seeds(r: int) -> tuple[list[int], list[int]]:
    return replicate_seeds(r, ANCHORS, HELD_OUTS, SEED_FROM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/study-realign-every", help="the study's own registry")
    parser.add_argument("--out", default="docs/results/realign-every", help="folder for the CSVs and study.json")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the anchors, held-outs and stars")
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--every", default="1,10", help="the K values, comma-separated; the first is the reference")
    args = parser.parse_args()
    ks = [int(k) for k in args.every.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load = [os.getloadavg()[0]]

    every = [s for r in range(args.replicates) for group in seeds(r) for s in group]
    trained = starlight(args.home, "train", "--seed", ",".join(map(str, every)), "--epochs", str(args.epochs))
    by_seed = {m["seed"]: m for m in trained}
    print(f"trained {len(every)} solutions ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    rows, pairs_rows = [], []
    for r in range(args.replicates):
        anchors, held = seeds(r)
        a_ids = [by_seed[s]["id"] for s in anchors]
        h_ids = [by_seed[s]["id"] for s in held]
        row = {"replicate": r, "anchors": a_ids, "held_outs": h_ids,
               "anchors_train_loss": sum(by_seed[s]["metrics"]["train_loss"] for s in anchors) / ANCHORS}
        for k in ks:
            star = starlight(args.home, "star", "--anchors", ",".join(map(str, a_ids)), "--seed", str(r),
                             "--realign-every", str(k))
            res = starlight(args.home, "barrier", "--star", str(star["id"]), "--held-out", ",".join(map(str, h_ids)),
                            "--splits", "train")
            s, g = per_held_out(res, h_ids)
            row[f"star_{k}"], row["regular"] = s, g
            row[f"star_id_{k}"] = star["id"]
            row[f"star_train_loss_{k}"] = star["metrics"]["train_loss"]
            row[f"star_test_acc_{k}"] = star["metrics"]["test_acc"]
            row[f"star_seconds_{k}"] = star.get("wall_seconds")
            for h, sv, gv in zip(h_ids, s, g):
                pairs_rows.append({"replicate": r, "every": k, "held_out": h, "star": sv, "regular": gv})
        rows.append(row)
        load.append(os.getloadavg()[0])
        print(f"replicate {r} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    summary = {}
    for k in ks:
        summary[f"star/regular K={k}"] = evidence.compare([Replicate(tuple(x[f"star_{k}"]), tuple(x["regular"])) for x in rows])
    for k in ks[1:]:
        summary[f"star K={k} / star K={ks[0]}"] = evidence.compare(
            [Replicate(tuple(x[f"star_{k}"]), tuple(x[f"star_{ks[0]}"])) for x in rows])
        # The star's own train loss, K over the reference, one paired observation per replicate.
        summary[f"train loss K={k} / K={ks[0]}"] = evidence.compare(
            [Replicate((x[f"star_train_loss_{k}"],), (x[f"star_train_loss_{ks[0]}"],)) for x in rows])

    with open(out / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["replicate", "every", "held_out", "star", "regular"])
        w.writeheader()
        w.writerows(pairs_rows)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["comparison", "ratio", "ci_low", "ci_high", "replicate_ratios", "difference", "diff_ci_low",
                    "diff_ci_high", "verdict_below_1"])
        for name, s in summary.items():
            ci, dci = s["ratio_ci"] or [None, None], s["difference_ci"] or [None, None]
            w.writerow([name, s["ratio"], *ci, " ".join(f"{v:.4f}" for v in s.get("replicate_ratios", [])),
                        s["difference"], *dci, s["connects_better"]])
    wall = time.perf_counter() - start
    meta = {"epochs": args.epochs, "every": ks, "anchors": ANCHORS, "held_outs": HELD_OUTS, "wall_seconds": round(wall, 1),
            "load_1min": [round(v, 1) for v in load],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
            "python": platform.python_version(), "replicates": rows,
            "summary": {name: {k: s[k] for k in ("ratio", "ratio_ci", "replicate_ratios", "difference", "difference_ci",
                                                  "connects_better", "interval") if k in s} for name, s in summary.items()}}
    (out / "study.json").write_text(json.dumps(meta, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name}: {fmt_ci(s)}  per replicate {[round(v, 3) for v in s.get('replicate_ratios', [])]}  "
              f"difference {s['difference']:+.4f}  below 1: {s['connects_better']}")
    for k in ks:
        secs = [x[f"star_seconds_{k}"] for x in rows if x[f"star_seconds_{k}"] is not None]
        print(f"K={k}: star train loss {statistics.mean(x[f'star_train_loss_{k}'] for x in rows):.4f} (anchors "
              f"{statistics.mean(x['anchors_train_loss'] for x in rows):.4f}), test acc "
              f"{statistics.mean(x[f'star_test_acc_{k}'] for x in rows):.1f}%, star wall median "
              f"{statistics.median(secs) if secs else float('nan'):.1f} s")
    print(f"wall {wall:.0f} s, load {load[0]:.1f} at start, {max(load):.1f} at most")


if __name__ == "__main__":
    main()
