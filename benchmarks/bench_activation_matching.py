"""Activation matching: starlight's against a plain Git Re-Basin-style implementation, same pair, same inputs.

The plain implementation, as REPAIR's `get_layer_perm` and the code derived from it do it, with Git
Re-Basin's correlation: per permutation group, run each network up to that group's layer (a subnet) over the
loader's batches keeping the group's hidden features, then the Pearson correlation of A's and B's units with
np.corrcoef (float64, the full 2n × 2n matrix) and one linear_sum_assignment. Starlight's
(starcli/alignment/activation_matching.py) runs both networks once over the batches for all groups,
accumulating only the n × n cross-moments (float32 products of shifted features, float64 sums). The
permutations must be identical.

Networks: the MNIST-1D MLP (the demo recipe's width 256, two hidden layers here) and the MNIST-1D CNN
(width 64), two seeds each trained for a few epochs (between independent random initialisations every
correlation is near zero, and float rounding picks among near-ties), on the 4,000 training samples. Variants
are interleaved and repeated; the median of each and the ratio are printed. Target: >= 3x.

    OMP_NUM_THREADS=1 python benchmarks/bench_activation_matching.py [--repeats 5] [--width 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli import alignment, models  # noqa: E402
from starcli.alignment.activation_matching import activation_matching, readings  # noqa: E402
from starcli.engine import data, recipes, training  # noqa: E402


class _Stop(Exception):
    """Raised after the last reading of a group: the rest of the network is not run (REPAIR's `subnet`)."""


def plain_activation_matching(spec, model, state_a, state_b, x, batch_size=500):
    """Per permutation group, as REPAIR's `get_layer_perm` and its descendants: run each network up to the
    group's layer (a subnet) over the data loader's batches, keep the group's features, then Git Re-Basin's
    np.corrcoef (float64, the full 2n × 2n matrix) and linear_sum_assignment."""
    where = readings(spec, model)
    modules = dict(model.named_modules())
    order = [name for name, _ in model.named_modules()]

    def features(state, group):
        model.load_state_dict(state)
        reads = where[group]
        last = max(order.index(r.module) for r in reads)
        kept = {k: [] for k in range(len(reads))}
        handles = []
        for k, r in enumerate(reads):
            def hook(module, inputs, output, r=r, k=k):
                h = inputs[0] if r.side == "input" else output
                linear = isinstance(module, torch.nn.Linear)
                h = h[..., r.offset : r.offset + r.n] if linear else h.narrow(1, r.offset, r.n).movedim(1, -1)
                kept[k].append(h.reshape(-1, r.n).double().numpy())
                if order.index(r.module) == last and r.side == "input":
                    raise _Stop

            handles.append(modules[r.module].register_forward_hook(hook))
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                try:
                    model.eval()(x[i : i + batch_size])
                except _Stop:
                    pass
        for h in handles:
            h.remove()
        return [np.concatenate(parts) for parts in kept.values()]

    perms = {}
    for group in where:
        n = spec.sizes[group]
        acts_a, acts_b = features(state_a, group), features(state_b, group)
        corr = sum(np.nan_to_num(np.corrcoef(fa.T, fb.T)[:n, n:]) for fa, fb in zip(acts_a, acts_b))
        _, cols = linear_sum_assignment(corr, maximize=True)
        perms[group] = torch.as_tensor(cols)
    return perms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of each network of the pair")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        train = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=Path(cache))
    cases = {
        f"mnist1d MLP width {args.width}, depth 2": ("mnist1d-mlp", {"width": args.width, "depth": 2}),
        "mnist1d CNN width 64": ("mnist1d-cnn", {"width": 64}),
    }
    print(f"{len(train.x)} calibration samples, {torch.get_num_threads()} CPU thread(s), {args.repeats} repeats, interleaved")
    for label, (recipe, arch_kwargs) in cases.items():
        config = recipes.resolve(recipe, epochs=args.epochs)
        config["arch_kwargs"] = dict(config["arch_kwargs"], **arch_kwargs)
        arch, kwargs = config["arch"], config["arch_kwargs"]
        spec = alignment.spec_for(arch, kwargs)
        model = models.create(arch, **kwargs)
        a, b = (training.fit(config, seed, torch.device("cpu"), train).state_dict() for seed in (1, 2))
        times: dict[str, list[float]] = {"starlight": [], "plain": []}
        for _ in range(args.repeats):
            for name, fn in (("starlight", activation_matching), ("plain", plain_activation_matching)):
                start = time.perf_counter()
                perms = fn(spec, model, a, b, train.x)
                times[name].append(time.perf_counter() - start)
                if name == "starlight":
                    ours = perms
                else:
                    same = all(torch.equal(ours[g], perms[g]) for g in spec.sizes)
                    if not same:
                        raise SystemExit(f"{label}: the two implementations disagree")
        fast, slow = statistics.median(times["starlight"]), statistics.median(times["plain"])
        print(f"  {label:<32} starlight {fast * 1e3:8.1f} ms   plain {slow * 1e3:8.1f} ms   "
              f"({slow / fast:.1f}x)   identical permutations: True")


if __name__ == "__main__":
    main()
