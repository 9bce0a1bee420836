"""Cost of the default star preset's re-alignment: every anchor weight-matched to the star at the start
of every epoch (`starlight.realign_all`), one anchor after another vs on threads, against an epoch; and of
re-aligning only every K epochs (`star --realign-every K`).

Anchors: the default recipe (MNIST-1D MLP) trained for a few epochs on the real data; the star: their
aligned mean (the preset's start). Per anchor count, interleaved and repeated, medians:
- a plain epoch (`training.fit`, one epoch) and a star epoch without re-alignment (`fit_star`, one epoch),
- re-aligning all anchors one after another (workers 1) and on threads (workers = the cores here).
Then, per anchor count and K in --every, whole runs of --run-epochs epochs, interleaved and repeated:
a plain training (`training.fit`) against a star that re-aligns every K epochs (`fit_star(realign_every=K)`),
the anchors re-aligned on W threads for each W in --workers (1: one after another; `star` gives a star
trained alone the cores its torch threads leave free), with the wall seconds spent inside re-alignment
(`realign_all`'s calls) clocked in the run:
star run / plain run (the per-epoch ratio, re-alignment amortised over K) and re-alignment's share of the
star run; and, in a K = 1 run, how many re-alignments after the first changed an anchor's permutation. Both stars here are Algorithm 1's core (random start, no own-loss term), as in the first table.
Targets (issue 25): star epoch with re-alignment ≤ 1.3× a plain epoch at 5 anchors; re-alignment ≤ 10%
of the star epoch at 20 anchors. Equal results are tests/test_star.py's business (bit for bit); what K > 1
does to the star is benchmarks/study_realign_every.py's.

    OMP_NUM_THREADS=1 python benchmarks/bench_realign.py [--anchors 5,20] [--repeats 5] [--every 1,5,10]
        [--run-epochs 10] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.alignment import align_state  # noqa: E402
from starcli.engine import data, recipes, starlight, training  # noqa: E402
from starcli.engine.interpolation import average  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", default="5,20", help="Anchor counts, comma-separated.")
    parser.add_argument("--epochs", type=int, default=5, help="Epochs each anchor is trained for.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", default="1,5,10", help="K values of the whole-run comparison, comma-separated.")
    parser.add_argument("--run-epochs", type=int, default=10, help="Epochs of each whole run (a multiple of every K).")
    parser.add_argument("--workers", default=None,
                        help="Re-alignment threads of the whole runs, comma-separated (default: 1 and the cores here).")
    args = parser.parse_args()
    counts = [int(n) for n in args.anchors.split(",")]
    device = torch.device("cpu")
    config = recipes.resolve(recipes.DEFAULT_RECIPE, epochs=args.epochs)
    one_epoch = dict(config, epochs=1)
    with tempfile.TemporaryDirectory() as cache:
        split = data.load_split(config["dataset"], "train", device, cache_dir=Path(cache))
    kwargs = config["arch_kwargs"]
    anchors = [
        {k: v.detach().clone() for k, v in training.fit(config, seed, device, split).state_dict().items()}
        for seed in range(1, max(counts) + 1)
    ]

    def realign(a, b):
        return align_state(config["arch"], kwargs, a, b, seed=0)

    sampling = starlight.TSampling.parse("uniform")
    workers = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {workers} cores for threads, "
          f"load {os.getloadavg()[0]:.1f} at start; {config['arch']} {kwargs}, {len(split.x)} samples, "
          f"batch {config['batch_size']}; medians of {args.repeats} interleaved repeats")
    print(f"{'anchors':>7} {'plain ep':>9} {'star ep':>8} {'realign 1':>10} {f'realign {workers}':>10} "
          f"{'star+re/plain':>14} {'threads':>8} {'realign share':>14}")
    for n in counts:
        group = anchors[:n]
        star = average([group[0]] + [realign(group[0], a) for a in group[1:]])
        variants = {
            "plain": lambda: training.fit(one_epoch, 0, device, split),
            "star": lambda: starlight.fit_star(one_epoch, group, 0, device, split, sampling),
            "seq": lambda: starlight.realign_all(realign, star, group, workers=1),
            "threads": lambda: starlight.realign_all(realign, star, group, workers=workers),
        }
        for fn in variants.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        m = {k: statistics.median(v) for k, v in times.items()}
        print(f"{n:>7} {m['plain']:>9.3f} {m['star']:>8.3f} {m['seq']:>10.3f} {m['threads']:>10.3f} "
              f"{(m['star'] + m['threads']) / m['plain']:>14.2f} {m['seq'] / m['threads']:>7.2f}x "
              f"{m['threads'] / (m['star'] + m['threads']):>13.0%}")
    print(f"load {os.getloadavg()[0]:.1f} after the per-epoch table")
    every_k(args, counts, anchors, realign, config, device, split, sampling)
    print(f"load {os.getloadavg()[0]:.1f} at the end")


def every_k(args, counts, anchors, realign, config, device, split, sampling) -> None:
    """Whole runs: plain training vs stars re-aligning every K epochs on W threads, re-alignment clocked
    inside the run (the wall time of `realign_all`'s calls, whatever the threads)."""
    ks = [int(k) for k in args.every.split(",")]
    cores = len(os.sched_getaffinity(0))
    workers = sorted({int(w) for w in args.workers.split(",")}) if args.workers else sorted({1, cores})
    run = dict(config, epochs=args.run_epochs)
    print(f"\nwhole runs of {args.run_epochs} epochs; medians of {args.repeats} interleaved repeats")
    print(f"{'anchors':>7} {'K':>3} {'W':>2} {'plain run':>10} {'star run':>9} {'realign':>8} {'star/plain':>11} "
          f"{'realign share':>14}")
    for n in counts:
        group = anchors[:n]
        spent = [0.0]
        untimed = starlight.realign_all

        def timed_all(*a, **kw):
            start = time.perf_counter()
            out = untimed(*a, **kw)
            spent[0] += time.perf_counter() - start
            return out

        def star_run(k, w):
            spent[0] = 0.0
            starlight.realign_all = timed_all  # fit_star calls it through the module: clock every call
            try:
                start = time.perf_counter()
                starlight.fit_star(run, group, 0, device, split, sampling, realign=realign, realign_every=k,
                                   realign_workers=w)
                return time.perf_counter() - start, spent[0]
            finally:
                starlight.realign_all = untimed

        # Warm-up, and why K matters little or much: how many of the re-alignments after the first leave an
        # anchor permuted otherwise than the previous one did (at K = 1: every epoch's, anchor by anchor).
        seen: list[dict] = []

        def recording(a, b):
            out = realign(a, b)
            seen.append(out)
            return out

        starlight.fit_star(run, group, 0, device, split, sampling, realign=recording)
        changed = sum(any(not torch.equal(seen[i][k], seen[i - n][k]) for k in seen[i]) for i in range(n, len(seen)))
        print(f"{n:>7}   re-alignments after epoch 0 that permuted an anchor otherwise than the epoch before: "
              f"{changed} of {len(seen) - n}")
        plain, stars_ = [], {(k, w): [] for k in ks for w in workers}
        for _ in range(args.repeats):
            start = time.perf_counter()
            training.fit(run, 0, device, split)
            plain.append(time.perf_counter() - start)
            for k, w in stars_:
                stars_[k, w].append(star_run(k, w))
        p = statistics.median(plain)
        for (k, w), runs in stars_.items():
            total = statistics.median(t for t, _ in runs)
            inside = statistics.median(r for _, r in runs)
            share = statistics.median(r / t for t, r in runs)
            print(f"{n:>7} {k:>3} {w:>2} {p:>10.3f} {total:>9.3f} {inside:>8.3f} {total / p:>11.2f} {share:>13.0%}")


if __name__ == "__main__":
    main()
