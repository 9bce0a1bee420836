"""Cost of a Starlight step against a plain training step of the same model and batch.

Both loops are the project's own (`training.fit` and `starlight.fit_star`) over the same batches: one epoch
of STEPS steps, run alternately REPEATS times; the table shows the median time per step. The star step
adds drawing an anchor and a t, `torch._foreach_lerp` of the parameters, `functional_call`, and the
(1−t) factor in the backward pass. Target: ratio ≤ 1.2.

    python benchmarks/bench_star_step.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli import models
from starcli.engine import (
    data,
    devices,  # noqa: E402
    recipes,
    starlight,
    training,
)

# (label, recipe, overrides): the demo's MLP, a wider deeper MLP, and a small CIFAR ResNet-18 with BatchNorm.
CASES = [
    ("mnist1d mlp (default recipe)", "mnist1d-mlp", {}),
    ("mnist1d mlp 1024x2", "mnist1d-mlp", {"arch_kwargs.width": 1024, "arch_kwargs.depth": 2}),
    ("cifar resnet18 width 16 (BN)", "cifar10-resnet18", {"arch_kwargs.width": 16}),
]


def synthetic_split(config: dict, n: int, device: torch.device) -> data.Split:
    """Random inputs of the dataset's shape: the cost of a step does not depend on the values."""
    from starcli.engine import data

    info = data.info(config["dataset"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *info.shape, generator=g)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    return data.Split(x.to(device), y.to(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_step(run, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return (time.perf_counter() - start) / steps


def bench(label: str, recipe: str, overrides: dict, device: torch.device, steps: int, repeats: int) -> dict:
    config = recipes.resolve(recipe, overrides=dict(overrides, epochs=1))
    split = synthetic_split(config, steps * config["batch_size"], device)
    anchors = []
    for seed in range(5):
        torch.manual_seed(100 + seed)
        net = models.create(config["arch"], **config["arch_kwargs"])
        anchors.append({k: v.to(device) for k, v in net.state_dict().items()})
    sampling = starlight.TSampling.parse("uniform")
    plain = lambda: training.fit(config, 0, device, split)  # noqa: E731
    starred = lambda: starlight.fit_star(config, anchors, 0, device, split, sampling)  # noqa: E731
    plain(), starred()  # warm-up: allocator, kernels, lazy imports
    plain_times, star_times = [], []
    for _ in range(repeats):
        plain_times.append(time_per_step(plain, steps, device))
        star_times.append(time_per_step(starred, steps, device))
    p, s = statistics.median(plain_times), statistics.median(star_times)
    return {"model": label, "batch": config["batch_size"], "plain ms/step": p * 1e3, "star ms/step": s * 1e3, "ratio": s / p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="Only the default MLP, fewer repeats.")
    args = parser.parse_args()
    device = devices.resolve(args.device)
    cases = CASES[:1] if args.quick else CASES
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'model':<30} {'batch':>5} {'plain ms/step':>14} {'star ms/step':>13} {'ratio':>6}")
    for label, recipe, overrides in cases:
        heavy = "resnet" in label and device.type == "cpu"
        r = bench(label, recipe, overrides, device, steps=8 if heavy else 64, repeats=3 if heavy or args.quick else 7)
        print(f"{r['model']:<30} {r['batch']:>5} {r['plain ms/step']:>14.3f} {r['star ms/step']:>13.3f} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    main()
