"""How far the demo CNN's BN barrier runs from this CPU's floor: the arithmetic at the machine's matrix
multiply peak.

Issue 25 asked for BN barriers ≥ 3× the paper's loop and CNN seeds that stack ≥ 1.5×, both on the premise
that the demo CNN (`mnist1d-cnn`: four 1-D convolutions of 32 channels over 40 positions, BatchNorm, a
10-way head) ran at a small fraction of the CPU's peak. This measures that premise, in one process,
interleaved and repeated (medians), one torch thread:

1. the peak: float32 matrix products (`torch.mm`, n×n·n×n for n in 128, 256, 512), GFLOP/s;
2. each convolution of the CNN as the fast path runs it (`F.conv1d`, rows per chunk as `LineEvaluator`
   picks them on a CPU, and the recipe's batch 128), against the same product as an explicit
   unfold + matmul (im2col), GFLOP/s;
3. one interior point of a BN barrier as `barriers.measure` computes it (`LineEvaluator.curve` at one t:
   lerp, BatchNorm re-estimated on the 4,000 training samples, train and test evaluated), against the
   time its multiply-adds (2 per MAC: convolutions and head, one calibration pass and one evaluation pass)
   take at the peak: the floor. Elementwise work (BatchNorm, ReLU, pooling) is left out of the floor, so
   the true floor is higher than the one printed;
4. one training step of one seed (batch 128, forward, backward, SGD), against its floor: three times the
   forward's multiply-adds (the backward's products for inputs and for weights) at the peak. Stacking
   seeds (one kernel for several seeds' convolutions) can at best bring a step down to that floor, so
   step / floor bounds what it could gain.

A convolution at the peak's rate leaves no arithmetic to save by packing seeds or t into bigger kernels:
what is left above the floor is the calibration's and evaluation's elementwise passes.

It runs under the allocator policy every `starlight` process applies (starcli/engine/allocator.py: freed
memory reused rather than faulted in again); --malloc-default leaves glibc's adaptive behaviour.

    OMP_NUM_THREADS=1 python benchmarks/bench_conv_floor.py [--repeats 7] [--malloc-default]
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
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli import models  # noqa: E402
from starcli.engine import allocator, data, recipes  # noqa: E402
from starcli.engine.interpolation import LineEvaluator  # noqa: E402


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions taking turns in every repeat (after a warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def per_call(fn, calls: int):
    """`fn` called `calls` times: one timing long enough for the clock at small sizes."""
    def many():
        for _ in range(calls):
            fn()
    return many


def im2col_conv(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """conv1d as unfold + matmul: the explicit product a convolution kernel stands for."""
    cols = F.pad(x, (padding, padding)).unfold(2, weight.shape[2], 1)  # (N, C_in, L, K)
    cols = cols.permute(0, 2, 1, 3).reshape(x.shape[0] * x.shape[2], -1)  # (N·L, C_in·K)
    return (cols @ weight.reshape(weight.shape[0], -1).t()).reshape(x.shape[0], x.shape[2], -1).transpose(1, 2)


def forward_flops(net: nn.Module, length: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one sample's forward pass: convolutions and linear layers."""
    flops = 0
    for m in net.modules():
        if isinstance(m, nn.Conv1d):
            flops += 2 * length * m.out_channels * m.in_channels * m.kernel_size[0] // m.groups
        elif isinstance(m, nn.Linear):
            flops += 2 * m.in_features * m.out_features
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--malloc-default", action="store_true", help="Leave glibc's adaptive allocator as it is.")
    args = parser.parse_args()
    if not args.malloc_default:
        allocator.apply()
    torch.manual_seed(0)
    device = torch.device("cpu")
    config = recipes.resolve("mnist1d-cnn")
    with tempfile.TemporaryDirectory() as cache:
        train = data.load_split(config["dataset"], "train", device, cache_dir=Path(cache))
        test = data.load_split(config["dataset"], "test", device, cache_dir=Path(cache))
    length = train.x.shape[-1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), allocator "
          f"{'glibc default' if args.malloc_default else 'policy'}, load {os.getloadavg()[0]:.1f} at "
          f"start; {config['arch']} {config['arch_kwargs']}; {len(train.x)} train + {len(test.x)} test samples; "
          f"medians of {args.repeats} interleaved repeats")

    # 1. The peak: float32 products of square matrices.
    mats = {n: (torch.randn(n, n), torch.randn(n, n)) for n in (128, 256, 512)}
    calls = {n: max(1, (512 // n) ** 3) for n in mats}
    peak_times = interleaved({n: per_call(lambda a=a, b=b: torch.mm(a, b), calls[n]) for n, (a, b) in mats.items()},
                             args.repeats)
    rates = {n: 2 * n**3 * calls[n] / peak_times[n] / 1e9 for n in mats}
    peak = max(rates.values())
    print("\nmatrix product peak (GFLOP/s): " + ", ".join(f"{n}³ {r:.1f}" for n, r in rates.items()))

    # 2. Each convolution at the evaluator's chunk rows and at the recipe's batch.
    splits = {"train": (train.x, train.y), "test": (test.x, test.y)}
    line = LineEvaluator(config["arch"], config["arch_kwargs"], device, splits, train.x, config=config)
    convs = [m for m in line.net.modules() if isinstance(m, nn.Conv1d)]
    shapes = {(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs}
    print(f"\nconvolutions (GFLOP/s; the evaluator's CPU chunk: {line.rows} rows)")
    print(f"{'C_in→C_out, k':>14} {'rows':>5} {'conv1d':>8} {'% peak':>7} {'im2col':>8} {'conv1d/im2col':>14}")
    for c_in, c_out, k, pad in sorted(shapes):
        weight = torch.randn(c_out, c_in, k)
        for rows in (line.rows, config["batch_size"]):
            x = torch.randn(rows, c_in, length)
            assert torch.allclose(F.conv1d(x, weight, padding=pad), im2col_conv(x, weight, pad), atol=1e-4)
            n = max(1, 4096 // rows)
            t = interleaved({"conv": per_call(lambda x=x, w=weight, p=pad: F.conv1d(x, w, padding=p), n),
                             "im2col": per_call(lambda x=x, w=weight, p=pad: im2col_conv(x, w, p), n)}, args.repeats)
            flops = 2 * rows * length * c_out * c_in * k * n
            conv, col = flops / t["conv"] / 1e9, flops / t["im2col"] / 1e9
            print(f"{f'{c_in}→{c_out}, {k}':>14} {rows:>5} {conv:>8.1f} {conv / peak:>6.0%} {col:>8.1f} "
                  f"{t['im2col'] / t['conv']:>13.2f}x")

    # 3. One interior point of a BN barrier against its floor.
    state_a = {k: v.clone() for k, v in models.create(config["arch"], **config["arch_kwargs"]).state_dict().items()}
    state_b = {k: v.clone() for k, v in models.create(config["arch"], **config["arch_kwargs"]).state_dict().items()}
    point = interleaved({"point": lambda: line.curve(state_a, state_b, [0.5])}, args.repeats)["point"]
    per_sample = forward_flops(line.net, length)
    samples = len(train.x) + len(train.x) + len(test.x)  # calibration pass, then train and test evaluated
    floor = per_sample * samples / (peak * 1e9)
    print(f"\none BN barrier point (lerp, BatchNorm re-estimated on {len(train.x)} samples, {len(train.x)} + "
          f"{len(test.x)} evaluated): {point * 1e3:.1f} ms; its multiply-adds ({per_sample * samples / 1e9:.2f} "
          f"GFLOP) at the {peak:.1f} GFLOP/s peak: {floor * 1e3:.1f} ms; measured / floor {point / floor:.2f}x")

    # 4. One seed's training step against its floor.
    net = models.create(config["arch"], **config["arch_kwargs"]).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    xb, yb = train.x[: config["batch_size"]], train.y[: config["batch_size"]]

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), yb).backward()
        optimizer.step()

    steps = 20
    step_time = interleaved({"step": per_call(step, steps)}, args.repeats)["step"] / steps
    step_floor = 3 * per_sample * len(xb) / (peak * 1e9)
    print(f"one training step, batch {len(xb)}: {step_time * 1e3:.2f} ms; three times its forward's multiply-adds at "
          f"the peak: {step_floor * 1e3:.2f} ms; step / floor {step_time / step_floor:.2f}x (the most any stacking "
          f"of seeds could gain)")
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
