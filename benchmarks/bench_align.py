"""How long aligning two CIFAR ResNet-18s (width 64, 11M parameters) takes on this machine's CPU.

Prints the one-off cost of deriving and self-checking the spec, the time of starlight's weight
matching, and the time of a straightforward implementation (git-re-basin's loop: every step re-permutes
every tensor of the group and every group is solved in every sweep) on the same pair, whose result
must be identical. Run: .venv/bin/python benchmarks/bench_align.py [--width 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.optimize import linear_sum_assignment

from starcli import alignment, models
from starcli.alignment.spec import permute_entry


def straightforward_weight_matching(spec, state_a, state_b, seed=0):
    names = [n for n in spec.axes if n not in spec.buffers]
    members = {g: [m for m in ms if m[0] in names] for g, ms in spec.members().items()}
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
    groups, rng = list(spec.sizes), torch.Generator().manual_seed(seed)
    for _ in range(200):
        improved = False
        for i in torch.randperm(len(groups), generator=rng).tolist():
            g, n = groups[i], spec.sizes[groups[i]]
            corr = torch.zeros(n, n, dtype=torch.float64)
            for name, axis, offset in members[g]:
                others = {h: p for h, p in perms.items() if h != g}  # B with the other groups permuted
                b = permute_entry(state_b[name].float(), spec.axes[name], others, spec.sizes)
                rows_a = state_a[name].float().narrow(axis, offset, n).movedim(axis, 0).reshape(n, -1)
                rows_b = b.narrow(axis, offset, n).movedim(axis, 0).reshape(n, -1)
                corr += (rows_a @ rows_b.T).double()
            _, cols = linear_sum_assignment(corr.numpy(), maximize=True)
            old, new = corr[range(n), perms[g]].sum().item(), corr[range(n), cols].sum().item()
            if new > old + 1e-9 * abs(old) + 1e-12:
                perms[g], improved = torch.as_tensor(cols, dtype=torch.long), True
        if not improved:
            return perms
    return perms


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kwargs = {"width": args.width}
    torch.manual_seed(1)
    a = models.create("cifar_resnet18", **kwargs).state_dict()
    torch.manual_seed(2)
    b = models.create("cifar_resnet18", **kwargs).state_dict()
    params = sum(v.numel() for v in a.values())
    spec, t_spec = timed(alignment.spec_for, "cifar_resnet18", kwargs)
    # Independent initialisations converge in a sweep or two; trained networks share more structure
    # and take more sweeps, so also match a shuffled, half-shared copy of A.
    g = torch.Generator().manual_seed(3)
    mixed = {k: (a[k] + b[k]) / 2**0.5 if v.is_floating_point() else v for k, v in a.items()}
    related = alignment.apply_permutation(spec, {k: torch.randperm(n, generator=g) for k, n in spec.sizes.items()}, mixed)
    print(f"cifar_resnet18 width {args.width}: {params / 1e6:.1f}M weights, {len(spec.sizes)} permutation groups, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"  spec derivation + self-check (once per architecture): {t_spec:6.2f} s")
    for label, other in (("independent inits", b), ("shuffled, half-shared", related)):
        fast, t_fast = timed(alignment.weight_matching, spec, a, other, seed=args.seed)
        slow, t_slow = timed(straightforward_weight_matching, spec, a, other, seed=args.seed)
        same = all(torch.equal(fast[k], slow[k]) for k in spec.sizes)
        print(f"  {label:<22} starlight {t_fast:6.2f} s   straightforward {t_slow:6.2f} s   "
              f"({t_slow / t_fast:.1f}x)   identical permutations: {same}")
        if not same:
            raise SystemExit("the two implementations disagree")


if __name__ == "__main__":
    main()
