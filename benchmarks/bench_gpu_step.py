"""Training steps of `cifar_resnet18` on CUDA with synthetic CIFAR-shaped data: images per second before
and after, and as a fraction of the GPU's bf16 dense peak.

"before" is the step as the loop ran it until now: fp32, NCHW inputs, no cudnn.benchmark, the batch's
indices and flip-crop draws made on the CPU and copied every step, and two blocking reads per step
(`isfinite` as a bool, `loss.item()`). "after" is `loop.run_epochs` as it is now: the epoch's shuffle and
draws uploaded once, the loss summed on the device and read once per epoch, cudnn.benchmark, and
the precision policy's CUDA defaults (engine/precision.py: bf16 autocast and channels_last, as
`recipes.resolve(..., device="cuda")` records them). Both train the same network on the same data.

    python benchmarks/bench_gpu_step.py [--epochs 3] [--n 8192] [--batch-size 512] [--peak-tflops 989]
    python benchmarks/bench_gpu_step.py --device cpu --steps 2   # smoke check: both paths run

Without CUDA (and without --device cpu) it says so and exits 0. The FLOP count per image is measured with torch's FLOP counter on
one forward pass (training ≈ 3× forward).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli import models  # noqa: E402
from starcli.engine import data, evaluation, loop, recipes  # noqa: E402
from starcli.engine.data import Split  # noqa: E402

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) by device name.
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "B200": 2250.0}


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def flops_per_image(model: torch.nn.Module, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(8, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return 3 * counter.get_total_flops() / 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def before(config, split: Split, device: torch.device, epochs: int) -> float:
    """The old loop's step, kept here only to measure against."""
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(1)
    model = models.create(config["arch"], **config["arch_kwargs"]).to(device)
    opt = loop.build_optimizer(model.parameters(), config)
    model.train()
    sync(device)
    start = time.perf_counter()
    for epoch in range(epochs):
        g = loop.epoch_generator(1, epoch)
        for idx in loop.batches(len(split.x), config["batch_size"], g):
            xb = data.augment(split.x[idx.to(device)], "flip-crop", g)
            loss = torch.nn.functional.cross_entropy(model(xb), split.y[idx.to(device)])
            if not torch.isfinite(loss):
                raise SystemExit("diverged")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
    sync(device)
    return epochs * len(split.x) / (time.perf_counter() - start)


def after(config, split: Split, device: torch.device, epochs: int) -> float:
    torch.manual_seed(1)
    model = loop.prepare_model(models.create(config["arch"], **config["arch_kwargs"]), device, config)
    opt = loop.build_optimizer(model.parameters(), config)

    def step_loss(x, y):
        outputs = model(x)
        return torch.nn.functional.cross_entropy(outputs, y), evaluation.correct_count(outputs, y)

    sync(device)
    start = time.perf_counter()
    loop.run_epochs(model, opt, dict(config, epochs=epochs), 1, device, split, step_loss, "bench", "")
    sync(device)
    return epochs * len(split.x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n", type=int, default=8192, help="Synthetic training images.")
    parser.add_argument("--batch-size", type=int, default=None, help="Default 512 on CUDA, 16 on the CPU.")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: by device name).")
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke check).")
    parser.add_argument("--steps", type=int, default=None, help="Steps per epoch (sets --n to steps × batch size).")
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 16 if args.device == "cpu" else 512
    if args.steps is not None:
        args.n = args.steps * args.batch_size
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (run this on a GPU machine, or --device cpu --steps 2 to check it runs)")
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(args.n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (args.n,), generator=g).to(device))
    # before: the config as resolved until now (fp32, contiguous); after: as resolved for CUDA now.
    base = recipes.resolve("cifar10-resnet18", batch_size=args.batch_size, device="cpu")
    fast = recipes.resolve("cifar10-resnet18", batch_size=args.batch_size, device="cuda")
    assert (fast["precision"], fast.get("memory_format")) == ("bf16", "channels_last")
    flops = flops_per_image(models.create(base["arch"], **base["arch_kwargs"]).to(device), device)
    peak = args.peak_tflops or (peak_for(name) if device.type == "cuda" else None)
    before(base, split, device, 1), after(fast, split, device, 1)  # warm-up: cuDNN autotuning, allocator
    rows = [("before (fp32, per-step syncs)", before(base, split, device, args.epochs)),
            ("after (bf16, channels_last, no syncs)", after(fast, split, device, args.epochs))]
    print(f"{name}: cifar_resnet18, batch {args.batch_size}, {flops / 1e9:.2f} GFLOP per training image")
    for label, ips in rows:
        frac = f", {100 * ips * flops / (peak * 1e12):.1f}% of {peak:.0f} TFLOP/s bf16 peak" if peak else ""
        print(f"{label:<40} {ips:>10,.0f} images/s{frac}")
    print(f"speed-up {rows[1][1] / rows[0][1]:.2f}×")


if __name__ == "__main__":
    main()
