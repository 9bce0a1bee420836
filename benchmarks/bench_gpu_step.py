"""Training steps of `cifar_resnet18` on CUDA, synthetic CIFAR-shaped data: each change to the step
measured on its own, at the recipe's batch (128) and at 512, against the GPU's bf16 dense peak.

Variants (one process, interleaved per batch size after a warm-up each; `--variants` picks some):
  fp32         the reference: fp32 with TF32 off, NCHW, a blocking read per step (`isfinite` as a
               bool and `loss.item()`, as the loop did until issue 10)
  tf32         the reference with TF32 matrix products and convolutions
  bf16         the reference under bf16 autocast
  nhwc         the reference with channels_last weights and inputs
  nosync       the reference without the per-step reads (losses summed on the device, read once)
  defaults     bf16 + channels_last + no syncs: what `recipes.resolve(..., device="cuda")` trains with
  compiled     defaults + torch.compile(mode="reduce-overhead"): the step replayed as CUDA graphs
  loop         `loop.run_epochs` as the CUDA config resolves (the project's own loop: shuffle and
               flip-crop draws uploaded once per epoch), to check `defaults` measures what runs
All variants shuffle on the device and flip-crop every batch with the project's `data.augment`, so they
differ only in the change named. Per variant: images/s, wall ms per step, host ms per step (the Python
loop's time to issue the steps, before the final synchronisation: when it is close to the wall, the step
is launch-bound), and the share of the bf16 dense peak that the FLOP count implies. The floor line is
the FLOPs of one step at peak: no implementation beats it.

Several seeds per GPU: `benchmarks/gpu_suite.sh` starts 1, 2 and 4 processes of `--variants defaults` at
once and adds their images/s (`--json` prints one line per variant for it).

    python benchmarks/bench_gpu_step.py [--batch-sizes 128,512] [--epochs 2] [--n 8192] [--variants ...]
    python benchmarks/bench_gpu_step.py --dry-run     # CPU: every variant's step runs twice, tiny batch

Without CUDA (and without --dry-run or --device cpu) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
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
# variant -> (precision, channels_last, per-step syncs, compile mode)
VARIANTS = {
    "fp32": ("fp32", False, True, None),
    "tf32": ("tf32", False, True, None),
    "bf16": ("bf16", False, True, None),
    "nhwc": ("fp32", True, True, None),
    "nosync": ("fp32", False, False, None),
    "defaults": ("bf16", True, False, None),
    "compiled": ("bf16", True, False, "reduce-overhead"),
    "loop": None,
}


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def flops_per_image(model: torch.nn.Module, device: torch.device) -> float:
    """Training FLOPs per image: torch's FLOP counter on one forward pass, times 3 (forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(8, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return 3 * counter.get_total_flops() / 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32(enabled: bool):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Trainer:
    """One variant's network, optimizer and step, built once and run for whole epochs."""

    def __init__(self, variant: str, config: dict, split: Split, device: torch.device):
        self.variant, self.config, self.split, self.device = variant, config, split, device
        torch.manual_seed(1)
        torch.backends.cudnn.benchmark = device.type == "cuda"
        self.model = models.create(config["arch"], **config["arch_kwargs"]).to(device)
        if variant == "loop":
            self.model = loop.prepare_model(self.model, device, config)
        else:
            precision, self.nhwc, self.syncs, mode = VARIANTS[variant]
            self.precision = precision
            if self.nhwc:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.forward = torch.compile(self.model, mode=mode, dynamic=False) if mode else self.model
        self.optimizer = loop.build_optimizer(self.model.parameters(), config)
        self.model.train()
        self.epoch = 0

    def run(self, epochs: int) -> tuple[float, float, int]:
        """(wall seconds, host seconds to issue the steps, steps) for `epochs` epochs of the split."""
        sync(self.device)
        start = time.perf_counter()
        if self.variant == "loop":
            steps = self._loop(epochs)
        else:
            with tf32(self.precision == "tf32"):
                steps = sum(self._epoch() for _ in range(epochs))
        issued = time.perf_counter()
        sync(self.device)
        return time.perf_counter() - start, issued - start, steps

    def _loop(self, epochs: int) -> int:
        def step_loss(x, y):
            outputs = self.model(x)
            return torch.nn.functional.cross_entropy(outputs, y), evaluation.correct_count(outputs, y)

        config = dict(self.config, epochs=self.epoch + epochs)
        loop.run_epochs(self.model, self.optimizer, config, 1, self.device, self.split, step_loss, "bench", "", start=self.epoch)
        self.epoch += epochs
        return epochs * -(-len(self.split.x) // self.config["batch_size"])

    def _epoch(self) -> int:
        g = loop.epoch_generator(1, self.epoch)
        self.epoch += 1
        x_all, y_all = self.split.x, self.split.y
        order = torch.randperm(len(x_all), generator=g).to(self.device)  # one upload per epoch
        total = torch.zeros((), device=self.device)
        steps = 0
        for idx in order.split(self.config["batch_size"]):
            xb = data.augment(x_all[idx], "flip-crop", g)
            if self.nhwc:
                xb = xb.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast(self.device.type, torch.bfloat16) if self.precision == "bf16" else contextlib.nullcontext()
            with autocast:
                loss = torch.nn.functional.cross_entropy(self.forward(xb).float(), y_all[idx])
            if self.syncs and not torch.isfinite(loss):
                raise SystemExit(f"{self.variant}: diverged")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.syncs:
                loss.item()
            else:
                total += loss.detach()
            steps += 1
        if not self.syncs and not torch.isfinite(total):
            raise SystemExit(f"{self.variant}: diverged")
        return steps


def measure(batch: int, variants: list[str], args, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    n = args.steps * batch if args.steps else args.n
    split = Split(torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device))
    # The reference configs resolve as on the CPU (fp32, contiguous); the loop's as on CUDA (bf16, NHWC).
    base = recipes.resolve("cifar10-resnet18", batch_size=batch, device="cpu", overrides=args.overrides)
    cuda = recipes.resolve("cifar10-resnet18", batch_size=batch, device="cuda", overrides=args.overrides)
    trainers = {v: Trainer(v, cuda if v == "loop" else base, split, device) for v in variants}
    for trainer in trainers.values():
        trainer.run(args.warmup)  # cuDNN autotuning, the allocator, compilation and CUDA-graph capture
    times: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v, trainer in trainers.items():
            times[v].append(trainer.run(args.epochs))
    rows = []
    for v in variants:
        wall = statistics.median(t[0] for t in times[v])
        host = statistics.median(t[1] for t in times[v])
        steps = times[v][0][2]
        rows.append({"variant": v, "batch": batch, "images_per_s": args.epochs * n / wall,
                     "wall_ms_per_step": 1e3 * wall / steps, "host_ms_per_step": 1e3 * host / steps})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated, of {', '.join(VARIANTS)}.")
    parser.add_argument("--epochs", type=int, default=2, help="Epochs per timed repeat.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed repeats per variant (interleaved); median.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed epochs per variant first.")
    parser.add_argument("--n", type=int, default=8192, help="Synthetic training images.")
    parser.add_argument("--steps", type=int, default=None, help="Steps per epoch (sets --n to steps × batch).")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: by device name).")
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke check).")
    parser.add_argument("--width", type=int, default=None, help="ResNet width (default: the recipe's, 64).")
    parser.add_argument("--dry-run", action="store_true",
                        help="On the CPU: width 8, batch 4, 2 steps, one epoch, every variant but `compiled` (CUDA graphs).")
    parser.add_argument("--json", action="store_true", help="One JSON line per variant and batch size.")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.dry_run:
        args.device, args.batch_sizes, args.steps, args.epochs, args.repeats, args.warmup = "cpu", "4", 2, 1, 1, 1
        args.width = 8
        variants = [v for v in variants if v != "compiled"]
    args.overrides = {"arch_kwargs.width": args.width} if args.width else {}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (run this on a GPU machine, or --dry-run to check it runs)")
        return
    if device.type == "cpu":  # autocast bf16 and channels_last on the CPU: a smoke check, not a measurement
        variants = [v for v in variants if v != "compiled"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    base = recipes.resolve("cifar10-resnet18", device="cpu", overrides=args.overrides)
    flops = flops_per_image(models.create(base["arch"], **base["arch_kwargs"]).to(device), device)
    peak = args.peak_tflops or (peak_for(name) if device.type == "cuda" else None)
    if not args.json:
        print(f"{name}, torch {torch.__version__}: cifar_resnet18 width {base['arch_kwargs']['width']}, "
              f"{flops / 1e9:.2f} GFLOP per training image"
              f"{f', bf16 dense peak {peak:.0f} TFLOP/s' if peak else ''}; medians of {args.repeats} × {args.epochs} epochs")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        rows = measure(batch, variants, args, device)
        floor_ms = 1e3 * batch * flops / (peak * 1e12) if peak else None
        reference = next((r["images_per_s"] for r in rows if r["variant"] == "fp32"), None)
        if not args.json:
            print(f"\nbatch {batch}" + (f" (floor at peak: {floor_ms:.3f} ms per step)" if floor_ms else ""))
            print(f"{'variant':<10} {'images/s':>10} {'× fp32':>7} {'wall ms/step':>13} {'host ms/step':>13} {'% of peak':>10}")
        for r in rows:
            r["peak_percent"] = 100 * r["images_per_s"] * flops / (peak * 1e12) if peak else None
            r["vs_fp32"] = r["images_per_s"] / reference if reference else None
            if args.json:
                print(json.dumps(dict(r, device=name)))
                continue
            share = f"{r['peak_percent']:>9.1f}%" if peak else f"{'-':>10}"
            ratio = f"{r['vs_fp32']:>7.2f}" if reference else f"{'-':>7}"
            print(f"{r['variant']:<10} {r['images_per_s']:>10,.0f} {ratio} {r['wall_ms_per_step']:>13.3f} "
                  f"{r['host_ms_per_step']:>13.3f} {share}")


if __name__ == "__main__":
    main()
