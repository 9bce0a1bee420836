"""The instruments of issue 22 used on the star: REPAIR, curved paths and a plane (docs/results/instruments-on-the-star.md).

Task: MNIST-1D MLPs without BatchNorm (recipe mnist1d-mlp, 2 hidden layers, so that REPAIR has something to
correct: on one hidden layer it equals `rescale`), small enough that the whole study runs in a few minutes on
two CPU cores. REPLICATES replicates, each with its own anchors, held-outs and star (`starlight star`, the
default preset); replicate r uses anchors SEED_FROM + 10r + 0..ANCHORS-1, held-outs the next HELD_OUTS seeds,
star seed r. Then, per replicate:

(a) train-loss barriers star–held-out and regular (anchor–held-out), weight-matched, 11 points, under
    `--renorm none` and `--renorm repair`: REPAIR's effect on each kind of barrier (repaired / plain), and the
    star/regular ratio under each policy;
(b) a trained Bézier curve (`starlight curve`) between the replicate's first anchor and its first held-out:
    its barrier against the straight line's and against the star's barrier to that held-out;
(c) replicate 0 only: the plane through star / first anchor / first held-out (a figure).

Every summary is evidence.compare over replicates (a t-interval over the per-replicate ratios, df = R − 1),
worded from its CI. Everything runs through the CLI (`starlight --home HOME ... --json`) in its own
registry, so a rerun answers finished work from it:

    OMP_NUM_THREADS=1 python benchmarks/study_instruments.py --home /tmp/study-instruments \
        --out docs/results/instruments-on-the-star
    OMP_NUM_THREADS=1 python benchmarks/study_instruments.py --home /tmp/study-instruments-30 --epochs 30 \
        --out docs/results/instruments-on-the-star-30-epochs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.engine import evidence  # noqa: E402
from starcli.engine.evidence import Replicate  # noqa: E402
from study_cli import fmt_ci, per_held_out, replicate_seeds, starlight  # noqa: E402  (this folder)

REPLICATES, ANCHORS, HELD_OUTS, SEED_FROM = 3, 4, 3, 301
WIDTH, DEPTH = 64, 2
RENORMS = ("none", "repair")


def seeds(r: int) -> tuple[list[int], list[int]]:
    return replicate_seeds(r, ANCHORS, HELD_OUTS, SEED_FROM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/study-instruments", help="the study's own registry")
    parser.add_argument("--out", default="docs/results/instruments-on-the-star", help="folder for the CSVs and figure")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train the anchors and held-outs this many epochs (default: the recipe's 400); the star follows them")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    net = ["--width", str(WIDTH), "--set", f"arch_kwargs.depth={DEPTH}"]
    if args.epochs is not None:
        net += ["--epochs", str(args.epochs)]

    every = [s for r in range(REPLICATES) for group in seeds(r) for s in group]
    trained = starlight(args.home, "train", "--seed", ",".join(map(str, every)), *net)
    by_seed = {m["seed"]: m for m in trained}

    rows, pairs_rows = [], []
    for r in range(REPLICATES):
        anchors, held = seeds(r)
        a_ids = [by_seed[s]["id"] for s in anchors]
        h_ids = [by_seed[s]["id"] for s in held]
        star = starlight(args.home, "star", "--anchors", ",".join(map(str, a_ids)), "--seed", str(r))
        row = {"replicate": r, "star": star["id"], "anchors": a_ids, "held_outs": h_ids,
               "star_train_loss": star["metrics"]["train_loss"], "star_test_acc": star["metrics"]["test_acc"],
               "anchors_train_loss": sum(by_seed[s]["metrics"]["train_loss"] for s in anchors) / ANCHORS,
               "anchors_test_acc": sum(by_seed[s]["metrics"]["test_acc"] for s in anchors) / ANCHORS}
        for renorm in RENORMS:
            res = starlight(args.home, "barrier", "--star", str(star["id"]), "--held-out", ",".join(map(str, h_ids)),
                            "--align", "weight", "--renorm", renorm, "--splits", "train")
            s, g = per_held_out(res, h_ids)
            row[f"star_{renorm}"], row[f"regular_{renorm}"] = s, g
            for h, sv, gv in zip(h_ids, s, g):
                pairs_rows.append({"replicate": r, "renorm": renorm, "held_out": h, "star": sv, "regular": gv})
        curve = starlight(args.home, "curve", str(a_ids[0]), str(h_ids[0]), "--bend", "bezier", "--splits", "train")
        row["curve_pair"] = f"{a_ids[0]}-{h_ids[0]}"
        row["curve"] = curve["result"]["barriers"]["curve"]["train"]["loss_barrier"]
        row["line"] = curve["result"]["barriers"]["line"]["train"]["loss_barrier"]
        row["star_to_curve_held_out"] = row["star_none"][0]
        if r == 0:
            plane = starlight(args.home, "plane", str(star["id"]), str(a_ids[0]), str(h_ids[0]), "--splits", "train",
                              "--plot", str(out / "plane-star-anchor-heldout.png"))
            row["plane"] = {k: plane.get(k) for k in ("subject", "settings_hash")} if isinstance(plane, dict) else None
        rows.append(row)
        print(f"replicate {r}: star {star['id']} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    # (a) REPAIR's effect on each kind of barrier, and star/regular under each policy: compare over replicates.
    summary = {}
    for kind in ("star", "regular"):
        summary[f"repair/none {kind}"] = evidence.compare(
            [Replicate(tuple(x[f"{kind}_repair"]), tuple(x[f"{kind}_none"])) for x in rows])
    for renorm in RENORMS:
        summary[f"star/regular {renorm}"] = evidence.compare(
            [Replicate(tuple(x[f"star_{renorm}"]), tuple(x[f"regular_{renorm}"])) for x in rows])
    # (b) one curve per replicate: curve/line and star/curve, each replicate one paired observation.
    summary["curve/line"] = evidence.compare([Replicate((x["curve"],), (x["line"],)) for x in rows])
    summary["star/line"] = evidence.compare([Replicate((x["star_to_curve_held_out"],), (x["line"],)) for x in rows])
    summary["star/curve"] = evidence.compare([Replicate((x["star_to_curve_held_out"],), (x["curve"],)) for x in rows])

    with open(out / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["replicate", "renorm", "held_out", "star", "regular"])
        w.writeheader()
        w.writerows(pairs_rows)
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["replicate", "curve_pair", "line", "curve", "star_to_curve_held_out"])
        w.writeheader()
        w.writerows({k: x[k] for k in w.fieldnames} for x in rows)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["comparison", "ratio", "ci_low", "ci_high", "replicate_ratios", "difference", "diff_ci_low",
                    "diff_ci_high", "verdict_below_1"])
        for name, s in summary.items():
            ci, dci = s["ratio_ci"] or [None, None], s["difference_ci"] or [None, None]
            w.writerow([name, s["ratio"], *ci, " ".join(f"{v:.4f}" for v in s.get("replicate_ratios", [])),
                        s["difference"], *dci, s["connects_better"]])
    wall = time.perf_counter() - start
    meta = {"epochs": args.epochs or "recipe", "wall_seconds": round(wall, 1), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", "python": platform.python_version(),
            "replicates": rows}
    (out / "study.json").write_text(json.dumps(meta, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name}: {fmt_ci(s)}  per replicate {[round(v, 3) for v in s.get('replicate_ratios', [])]}  "
              f"difference {s['difference']:+.4f}  below 1: {s['connects_better']}")
    for x in rows:
        print(f"replicate {x['replicate']}: star train loss {x['star_train_loss']:.4f} vs anchors "
              f"{x['anchors_train_loss']:.4f}; test acc {x['star_test_acc']:.1f} vs {x['anchors_test_acc']:.1f}; "
              f"curve {x['curve_pair']}: line {x['line']:.4f}, curve {x['curve']:.4f}, star {x['star_to_curve_held_out']:.4f}")
    print(f"wall {wall:.0f} s")


if __name__ == "__main__":
    main()
