"""Barrier curves of MLPs with the first layer's outputs computed once per solution vs the plain path
(every t through the whole network): an MNIST-shaped 784-input MLP and MNIST-1D's 40 inputs.

One pair, 9 interior points, train and test splits of --n random inputs each, width 256, one thread.

    python benchmarks/bench_first_layer.py [--n 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli import models  # noqa: E402
from starcli.engine import interpolation  # noqa: E402
from starcli.engine.interpolation import LineEvaluator  # noqa: E402


def timed(ev: LineEvaluator, a, b, ts, repeat: int) -> float:
    ev.curve(a, b, ts)  # warm-up
    best = float("inf")
    for _ in range(repeat):
        ev._first_outputs = []  # each repetition pays for the first layer again, as a new pair would
        start = time.perf_counter()
        ev.curve(a, b, ts)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ts = [i / 10 for i in range(1, 10)]
    for inputs in (784, 40):
        kwargs = {"num_classes": 10, "in_chans": 1, "input_size": inputs, "width": 256, "depth": 1}
        states = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            states.append(models.create("mlp", **kwargs).state_dict())
        g = torch.Generator().manual_seed(0)
        splits = {s: (torch.randn(args.n, 1, inputs, generator=g), torch.randint(0, 10, (args.n,), generator=g))
                  for s in ("train", "test")}
        fast = LineEvaluator("mlp", kwargs, torch.device("cpu"), splits, None)
        fast.first = interpolation._wide_first_layer(fast.net) or ("layers.1", fast.net.layers[2:])  # forced on
        plain = LineEvaluator("mlp", kwargs, torch.device("cpu"), splits, None)
        plain.first = None
        t_fast, t_plain = timed(fast, *states, ts, args.repeat), timed(plain, *states, ts, args.repeat)
        used = "first layer once" if interpolation._wide_first_layer(fast.net) else "plain"
        print(f"{inputs:>4} inputs: plain {t_plain * 1e3:7.1f} ms, first layer once {t_fast * 1e3:7.1f} ms "
              f"({t_plain / t_fast:.2f}×); measure uses: {used}")


if __name__ == "__main__":
    main()
