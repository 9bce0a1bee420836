"""Barrier measurement: `barriers.measure` against a straightforward implementation, same pairs and settings.

The demo's setting: a star from 5 anchors and 3 held-outs of the default recipe (MNIST-1D MLP), so 18
pairs (3 star–held-out, 15 regular–held-out), 11 points, train and test splits. The anchors are trained
for a few epochs only: the cost of a barrier does not depend on how well the networks are trained.

The straightforward implementation (what research code usually does): for every pair and every t, a
deep copy of network A loaded with the interpolated state dict, BatchNorm re-estimated when present,
evaluation in mini-batches of the recipe's batch size under `torch.no_grad`, and the endpoints t = 0, 1
evaluated again for every pair. "naive, big batches" is the same with the fast path's batch size, to
separate that one gain from the others (in-place lerp into one network, endpoints once per solution,
`inference_mode`, losses summed on the device, one transaction for all results). The ablation times
the interior points alone with several t per vmapped pass. Target: ≥ 3× on the MNIST-1D MLP.

    python benchmarks/bench_barrier.py [--device cpu|cuda] [--batch-norm] [--recipe mnist1d-cnn --held-out 1]
        [--malloc-default]

Both implementations run under the allocator policy every `starlight` process applies (freed memory kept
for reuse, starcli/engine/allocator.py); --malloc-default leaves glibc's adaptive behaviour instead.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.registry import open_registry  # noqa: E402
from starcli.engine import allocator, data, devices, evaluation, interpolation, recipes
from starcli.solutions import anchors as anchor_training
from starcli.solutions import (
    barriers,  # noqa: E402
    records,
    stars,
)


def naive_measure(reg, plan, device, batch_size: int, points: int = 11) -> list:
    """Curves of every pair, one deep copy per point, nothing shared between pairs."""
    out = []
    for a, b, _ in plan:
        sol_a, sol_b = records.get(reg, a), records.get(reg, b)
        net_a, net_b = records.network(reg, sol_a, device), records.network(reg, sol_b, device)
        splits = {s: data.load_split(sol_a.dataset, s, device, cache_dir=reg.home / "datasets") for s in ("train", "test")}
        state_a, state_b = net_a.state_dict(), net_b.state_dict()
        curve = {s: ([], []) for s in splits}
        for i in range(points):
            t = i / (points - 1)
            net = copy.deepcopy(net_a)
            net.load_state_dict(
                {k: torch.lerp(v, state_b[k], t) if v.is_floating_point() else v for k, v in state_a.items()}
            )
            bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if bns and 0 < i < points - 1:
                for m in bns:
                    m.reset_running_stats()
                    m.momentum = None
                net.train()
                with torch.no_grad():
                    x = splits["train"].x
                    # Calibration batches as in the fast path's settings: they change the estimate.
                    for chunk in torch.tensor_split(x, math.ceil(len(x) / evaluation.EVAL_BATCH)):
                        net(chunk)
            net.eval()
            for s, split in splits.items():
                loss, correct = 0.0, 0
                with torch.no_grad():
                    for j in range(0, len(split.x), batch_size):
                        logits = net(split.x[j : j + batch_size])
                        yb = split.y[j : j + batch_size]
                        loss += F.cross_entropy(logits, yb, reduction="sum").item()
                        correct += (logits.argmax(1) == yb).sum().item()
                curve[s][0].append(loss / len(split.x))
                curve[s][1].append(100.0 * correct / len(split.x))
        out.append(curve)
    return out


def line_ablation(reg, plan, device, repeats: int) -> dict[str, float]:
    """Seconds for the interior points of all pairs, by number of t per pass (endpoints loaded once)."""
    from starcli.engine.interpolation import LineEvaluator

    first = records.get(reg, plan[0][0])
    splits = {s: data.load_split(first.dataset, s, device, cache_dir=reg.home / "datasets") for s in ("train", "test")}
    splits = {s: (sp.x, sp.y) for s, sp in splits.items()}
    states = {i: records.state_dict(reg, records.get(reg, i), device) for a, b, _ in plan for i in (a, b)}
    interior = [i / 10 for i in range(1, 10)]
    out = {}
    for t_batch in (1, 3, len(interior)):
        line = LineEvaluator(
            first.arch, first.arch_kwargs, device, splits, splits["train"][0], evaluation.EVAL_BATCH, t_batch, first.config
        )
        run = lambda: [line.curve(states[a], states[b], interior) for a, b, _ in plan]  # noqa: E731
        run()
        out[f"{line.t_batch} t per pass"] = timed(run, device, repeats)
    return out


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> float:
    """Median seconds of `repeats` runs (for the ablation, which runs after the interleaved comparison)."""
    return interleaved({"fn": fn}, device, repeats)["fn"]


def interleaved(fns: dict, device, repeats: int) -> dict[str, float]:
    """Median seconds per variant, the variants taking turns in every repeat (a shared machine's load
    then hits them alike). On a CPU the seconds are this process's CPU time (one thread: the work done,
    whatever else shares the cores; wall time on a loaded machine swung 7x between repeats); on a GPU,
    wall time."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = clock()
            fn()
            sync(device)
            times[name].append(clock() - start)
    if len(fns) > 1:
        print("seconds per repeat: " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--recipe", default=recipes.DEFAULT_RECIPE, help="e.g. mnist1d-cnn: the demo's CNN (BatchNorm).")
    parser.add_argument("--batch-norm", action="store_true", help="The same MLP with BatchNorm (calibration at every t).")
    parser.add_argument("--held-out", type=int, default=3, help="Held-out solutions (pairs: 6 per held-out).")
    parser.add_argument("--max-pairs", type=int, default=None, help="Time only the first N pairs (a loaded machine).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--malloc-default", action="store_true",
                        help="Leave glibc's adaptive allocator as it is (the CLI applies starcli/engine/allocator.py).")
    args = parser.parse_args()
    if not args.malloc_default:
        allocator.apply()  # as every `starlight` process does; both implementations run under it
    device = devices.resolve(args.device)
    overrides = {"arch_kwargs.batch_norm": True} if args.batch_norm else {}
    config = recipes.resolve(args.recipe, epochs=3, overrides=overrides)
    with tempfile.TemporaryDirectory() as home:
        reg = open_registry(home)
        seeds = list(range(1, 6 + args.held_out))
        ids = [o.solution.id for o in anchor_training.train(reg, config, seeds, device=str(device))]
        star_sol, _ = stars.build_star(reg, ids[:5], epochs=1, device=str(device))
        plan, _ = barriers.plan_pairs(reg, star_sol.id, ids[5:], None, "anchors")
        plan = plan[: args.max_pairs or None]

        def fast():
            if args.max_pairs:
                pairs = [(a, b) for a, b, _ in plan]
                return barriers.measure(reg, pairs=pairs, recompute=True, device=str(device), align="none")
            return barriers.measure(reg, star=star_sol.id, held_out=ids[5:], recompute=True, device=str(device), align="none")

        def fast_torch_calibration():
            interpolation.STREAM_CALIBRATION = False  # BatchNorm re-estimated by PyTorch's train-mode kernel
            try:
                return fast()
            finally:
                interpolation.STREAM_CALIBRATION = True

        result = fast()  # warm-up, and the numbers to check the naive ones against
        naive_small = naive_measure(reg, plan, device, config["batch_size"])
        for pair, curve in zip(result["pairs"], naive_small):
            assert max(abs(u - v) for u, v in zip(pair["train"]["loss"], curve["train"][0])) < 1e-4
        has_bn = evaluation.has_batchnorm(records.network(reg, records.get(reg, ids[0]), device))
        variants = {
            "naive": lambda: naive_measure(reg, plan, device, config["batch_size"]),
            "naive_big": lambda: naive_measure(reg, plan, device, evaluation.EVAL_BATCH),
            "fast": fast,
        }
        if has_bn:
            variants["fast_torch_calibration"] = fast_torch_calibration
        times = interleaved(variants, device, args.repeats)
        t_naive, t_naive_big, t_fast = times["naive"], times["naive_big"], times["fast"]
        # Networks with BatchNorm take one t per pass: no ablation to run.
        ablation = {} if has_bn else line_ablation(reg, plan, device, args.repeats)
        reg.close()
    kwargs = ", ".join(f"{k} {v}" for k, v in config["arch_kwargs"].items())
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load {os.getloadavg()[0]:.1f}; "
          f"{config['arch']} ({kwargs}){' + BatchNorm' if args.batch_norm else ''}; {len(plan)} pairs × 11 points, "
          f"train+test; medians of {args.repeats} interleaved repeats, "
          f"{'CPU' if device.type == 'cpu' else 'wall'} seconds")
    print(f"{'implementation':<44} {'seconds':>8} {'speed-up':>9}")
    print(f"{'naive (deep copy per point, batch ' + str(config['batch_size']) + ')':<44} {t_naive:>8.3f} {1.0:>9.2f}")
    print(f"{'naive, big batches (' + str(evaluation.EVAL_BATCH) + ')':<44} {t_naive_big:>8.3f} {t_naive / t_naive_big:>9.2f}")
    print(f"{'starlight barriers.measure (--recompute)':<44} {t_fast:>8.3f} {t_naive / t_fast:>9.2f}")
    if has_bn:
        t_plain_bn = times["fast_torch_calibration"]
        print(f"{'  the same, BN re-estimated by PyTorch kernel':<44} {t_plain_bn:>8.3f} {t_naive / t_plain_bn:>9.2f}")
    if ablation:
        print("\ninterior points only, by strategy (no BatchNorm):")
        for label, seconds in ablation.items():
            print(f"  {label:<42} {seconds:>8.3f}")
    print(f"speed-up over the straightforward implementation: {t_naive / t_fast:.1f}x "
          f"({t_naive_big / t_fast:.1f}x over its big-batch variant)")


if __name__ == "__main__":
    main()
