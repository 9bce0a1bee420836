"""`--compile`: where torch.compile pays for the training step, and what it costs to start.

For each recipe, anchor training (`training.fit`) runs eager and compiled, interleaved, `--repeats`
times, one thread. Two figures per recipe:
  - start-up: the compiled run's first epoch minus the eager run's first epoch (compiling, in a fresh
    inductor cache, so the C++ kernels are built as on a user's first run);
  - steady state: the median seconds of an epoch after the first, eager / compiled (> 1: compiling pays).

    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py [--epochs 4] [--repeats 2] [--device cpu]

On a GPU (`--device cuda`) the same comparison runs with the CUDA defaults (bf16 and channels_last for
the convnets); `--recipes` picks others (e.g. cifar10-resnet18 with --data-dir, or its FakeData stand-in
is not wired here: use bench_gpu_step.py for the ResNet).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# A fresh inductor cache: the first compiled run pays the full compile, as on a user's machine.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-compile-inductor-"))
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.engine import devices, recipes, training  # noqa: E402
from starcli.engine.data import load_split  # noqa: E402


def epoch_times(config: dict, device: torch.device, split) -> list[float]:
    """Wall seconds of each epoch of one `fit` (the first includes compiling, when compiled)."""
    stamps = [time.perf_counter()]

    def on_epoch(*_):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    training.fit(config, 1, device, split, on_epoch=on_epoch)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="mnist1d-mlp,mnist1d-cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    device = devices.resolve(args.device)
    home = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    print(f"device {device}, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}, {args.epochs} epochs, {args.repeats} repeats")
    for name in args.recipes.split(","):
        eager = recipes.resolve(name, epochs=args.epochs, device=args.device)
        compiled = recipes.resolve(name, epochs=args.epochs, device=args.device, compile_step=True)
        split = load_split(eager["dataset"], "train", device, cache_dir=home / "datasets")
        runs: dict[str, list[list[float]]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for label, config in (("eager", eager), ("compiled", compiled)):
                runs[label].append(epoch_times(config, device, split))
        first_extra = runs["compiled"][0][0] - runs["eager"][0][0]
        steady = {k: statistics.median(t for r in v for t in r[1:]) for k, v in runs.items()}
        print(
            f"{name:<16} compile start-up {first_extra:6.1f} s   epoch eager {steady['eager']:.3f} s, "
            f"compiled {steady['compiled']:.3f} s: {steady['eager'] / steady['compiled']:.2f}x"
        )


if __name__ == "__main__":
    main()
