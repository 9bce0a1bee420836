"""Which star settings make the star a real solution that still connects well? (issue 10)

For each task (the demo's MLP, the MNIST-1D CNN at two widths), 8 anchors (seeds 1–8) are trained
with the task's recipe; stars are built from anchors 1–5 under each setting, and their barriers measured
against held-outs 6–8 beside the regular (anchor × held-out) baseline, weight-matched, on the training
split (11 points). Everything lives in one registry (--home), so a rerun answers finished work from it.

Protocol (settings are chosen on validation seeds and reported on fresh ones): the 34 settings were compared on
the VALIDATION seeds (anchors 1-5, held-outs 6-8; the default). The chosen setting is then reported on fresh
seeds the choice never saw, with replicates and a CI — `--confirm` runs REPLICATES replicates, each with its
own anchors and held-outs from seed 1001 on (5 anchors + 6 held-outs per replicate, star seed = replicate),
and prints the pooled star/regular ratio with its hierarchical-bootstrap CI (engine/evidence.py):

    OMP_NUM_THREADS=1 python benchmarks/study_star_quality.py --task cnn32 --setting mean-init+mu1 --confirm 3

Per row: the star's train loss / its anchors' mean (condition a: ≤ 1.5), the star–held-out train-loss
barrier / the regular one (condition b: ≤ 0.5), and the mean over pairs of max_t L(t) for both kinds of
segment (condition c: star < regular). One process, one thread:

    OMP_NUM_THREADS=1 python benchmarks/study_star_quality.py [--home DIR] [--task mlp ...] [--setting NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.engine import recipes
from starcli.progress import Reporter  # noqa: E402
from starcli.solutions import anchors as anchor_training
from starcli.solutions import (
    barriers,  # noqa: E402
    stars,
)

ANCHORS, HELD_OUT = [1, 2, 3, 4, 5], [6, 7, 8]  # the validation seeds the settings were chosen on
# Fresh seeds for --confirm: replicate r uses anchors CONFIRM_FROM + 11r … +4 and held-outs +5 … +10.
CONFIRM_FROM, CONFIRM_ANCHORS, CONFIRM_HELD_OUT = 1001, 5, 6
TASKS = {  # name: (recipe, width override or None)
    "mlp": ("mnist1d-mlp", None),
    "cnn32": ("mnist1d-cnn", None),
    "cnn8": ("mnist1d-cnn", 8),
}
# name: build_star keyword arguments. "demo" is what `starlight demo` built before the study. The
# own-loss-phase rows of docs/results/star-quality.md came from an own_epochs option that changed nothing
# (it ran where the cosine schedule's lr is ~0) and was not kept; their settings are gone from here.
SETTINGS = {
    "demo": dict(realign=True),
    "no-align": dict(),
    "mu1": dict(realign=True, mu_star=1.0),
    "k4": dict(realign=True, samples_per_step=4),
    "beta": dict(realign=True, t_sampling="beta:0.5,0.5"),
    "mean-init": dict(realign=True, init="anchor-mean"),
    "mean-init+mu1": dict(realign=True, init="anchor-mean", mu_star=1.0),
    "2x-epochs": dict(realign=True, epochs_factor=2),
    # Second round, after the first showed (a) and (b) trading off through mu_star on the MLP:
    "mu0.3": dict(realign=True, mu_star=0.3),
    "mu0.5": dict(realign=True, mu_star=0.5),
    "beta22": dict(realign=True, t_sampling="beta:2,2"),
    "mu0.3+beta22": dict(realign=True, mu_star=0.3, t_sampling="beta:2,2"),
    "mean-init+mu0.3": dict(realign=True, init="anchor-mean", mu_star=0.3),
    "4x-epochs": dict(realign=True, epochs_factor=4),
    "4x+mean-init+mu1": dict(realign=True, init="anchor-mean", mu_star=1.0, epochs_factor=4),
    "4x+mean-init+mu0.3": dict(realign=True, init="anchor-mean", mu_star=0.3, epochs_factor=4),
}


def settings_for(name: str, config: dict) -> dict:
    """build_star kwargs; epoch counts scale with the recipe's."""
    kw = dict(SETTINGS[name])
    epochs = config["epochs"] * kw.pop("epochs_factor", 1)
    if epochs != config["epochs"]:
        kw["epochs"] = epochs
    return kw


def peak(pairs: list[dict], kind: str) -> float:
    return statistics.fmean(max(p["train"]["loss"]) for p in pairs if p["kind"] == kind)


def confirm(reg, task: str, setting: str, replicates: int, reporter) -> dict:
    """The chosen setting on fresh seeds: `replicates` replicates, pooled with a CI (see the module docstring)."""
    from starcli.engine.barriers import compare_pairs
    from starcli.engine.evidence import describe

    recipe, width = TASKS[task]
    config = recipes.resolve(recipe, width=width)
    results = []
    for r in range(replicates):
        first = CONFIRM_FROM + r * (CONFIRM_ANCHORS + CONFIRM_HELD_OUT)
        seeds = list(range(first, first + CONFIRM_ANCHORS + CONFIRM_HELD_OUT))
        sols = [o.solution for o in anchor_training.train(reg, config, seeds, device="cpu", reporter=reporter)]
        anchors, held = sols[:CONFIRM_ANCHORS], sols[CONFIRM_ANCHORS:]
        sol, _ = stars.build_star(reg, [a.id for a in anchors], device="cpu", reporter=reporter, seed=r,
                                  **settings_for(setting, config))
        results.append(barriers.measure(reg, star=sol.id, held_out=[h.id for h in held], align="weight",
                                        splits=("train",), device="cpu", reporter=reporter))
    found = compare_pairs([res["pairs"] for res in results], ("train",))["train"]
    solutions = sum(bool(res["summary"]["verdict"]["star_is_solution"]) for res in results)
    return {"task": task, "setting": setting, "replicates": replicates, "stars_that_are_solutions": solutions,
            "evidence": found, "text": describe(found, "train")}


def run(reg, task: str, setting: str, reporter, anchor_seeds=ANCHORS, held_out=HELD_OUT) -> dict:
    recipe, width = TASKS[task]
    config = recipes.resolve(recipe, width=width)
    outcomes = anchor_training.train(reg, config, anchor_seeds + held_out, device="cpu", reporter=reporter)
    sols = [o.solution for o in outcomes]
    anchors, held = sols[: len(anchor_seeds)], sols[len(anchor_seeds) :]
    kw = settings_for(setting, config)
    start = time.perf_counter()
    sol, _ = stars.build_star(reg, [a.id for a in anchors], device="cpu", reporter=reporter, **kw)
    build = time.perf_counter() - start
    result = barriers.measure(
        reg, star=sol.id, held_out=[h.id for h in held], align="weight", splits=("train",), device="cpu", reporter=reporter
    )
    s = result["summary"]
    anchor_loss = statistics.fmean(a.metrics["train_loss"] for a in anchors)
    row = {
        "task": task,
        "setting": setting,
        "kwargs": kw,
        "star_train_loss": sol.metrics["train_loss"],
        "anchor_train_loss": anchor_loss,
        "loss_ratio": sol.metrics["train_loss"] / anchor_loss,
        "star_barrier": s["star-held-out"]["train"]["loss_barrier"]["mean"],
        "regular_barrier": s["regular-held-out"]["train"]["loss_barrier"]["mean"],
        "barrier_ratio": s["ratio"]["train"]["loss_barrier"],
        "star_peak": peak(result["pairs"], "star-held-out"),
        "regular_peak": peak(result["pairs"], "regular-held-out"),
        "star_train_acc": sol.metrics["train_acc"],
        "star_test_acc": sol.metrics["test_acc"],
        "anchor_train_acc": statistics.fmean(a.metrics["train_acc"] for a in anchors),
        "anchor_test_acc": statistics.fmean(a.metrics["test_acc"] for a in anchors),
        "anchor_seconds": statistics.fmean(a.wall_seconds for a in anchors),
        "star_seconds": sol.wall_seconds,
        "row_seconds": build,
    }
    row["a"] = row["loss_ratio"] <= 1.5
    row["b"] = row["barrier_ratio"] is not None and row["barrier_ratio"] <= 0.5
    row["c"] = row["star_peak"] < row["regular_peak"]
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| task | setting | star L | anchors L | ratio (a ≤1.5) | star–HO barrier | regular barrier | ratio (b ≤0.5) "
        "| peak star / regular (c) | star train / test acc % | anchors train / test acc % | star s | a b c |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    yes = {True: "✓", False: "✗"}
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['setting']} | {r['star_train_loss']:.4f} | {r['anchor_train_loss']:.4f} | {r['loss_ratio']:.2f} "
            f"| {r['star_barrier']:.4f} | {r['regular_barrier']:.4f} | {r['barrier_ratio']:.2f} "
            f"| {r['star_peak']:.3f} / {r['regular_peak']:.3f} | {r['star_train_acc']:.1f} / {r['star_test_acc']:.1f} "
            f"| {r['anchor_train_acc']:.1f} / {r['anchor_test_acc']:.1f} | {r['star_seconds']:.0f} "
            f"| {yes[r['a']]} {yes[r['b']]} {yes[r['c']]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/star-quality-home", help="the study's STARLIGHT_HOME (reused on rerun)")
    parser.add_argument("--task", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--setting", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default="star-quality.jsonl", help="rows are appended here, one JSON per line")
    parser.add_argument("--render", action="store_true", help="print the table of the rows in --out and stop")
    parser.add_argument("--confirm", type=int, metavar="REPLICATES",
                        help="report each --setting on fresh seeds (from 1001) with this many replicates and a CI")
    args = parser.parse_args()
    if args.render:
        print(table([json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]))
        return
    os.environ["STARLIGHT_HOME"] = args.home
    torch.set_num_threads(1)
    from starcli.registry import open_registry

    reg = open_registry(Path(args.home))
    reporter = Reporter()
    if args.confirm:
        for task in args.task:
            for setting in args.setting:
                row = confirm(reg, task, setting, args.confirm, reporter)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{task} {setting} on fresh seeds: {row['stars_that_are_solutions']} of {row['replicates']} stars are "
                      f"solutions; {row['text']}", flush=True)
        return
    rows = []
    for task in args.task:
        for setting in args.setting:
            row = run(reg, task, setting, reporter)
            rows.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(table([row]).splitlines()[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
