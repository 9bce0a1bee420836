"""Activation matching (Ainsworth et al., Git Re-Basin §3.1; Jordan et al., REPAIR): permute B's hidden
units so that they fire like A's on the same inputs.

For each permutation group g, the features it permutes are read where the network uses them: the input
of every Linear/Conv whose input axis g permutes (what the next layer sees: after the nonlinearity, the
normalisation and, for residual streams, the sum). C[i, j] is the Pearson correlation of A's unit i and
B's unit j over the calibration inputs (and positions, for convolutions), summed over those readings;
the permutation solves the linear assignment max Σ C[i, π(i)]. A group no layer reads (the last hidden
layer of a network whose head is not a Linear, say) is read at the output of the layer that produces it.

Permutations preserve B's function, so a group's features in B do not depend on the other groups'
permutations: every group is solved once, from one pass of each network over the calibration set (the
moments are accumulated batch by batch), unlike weight matching's coordinate descent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn

from starcli.errors import StarlightError

from .spec import PermutationSpec

# Git Re-Basin's guard against dead units (zero variance): their correlations become 0, not NaN.
EPS = 1e-12
BATCH = 256  # rows per pass: measured fastest for the MNIST-1D CNN on one CPU thread (256-4096 tried)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Reading:
    """Where one group's features are read: the input (or output) of `module`, channels [offset, offset+n)."""

    module: str
    offset: int
    n: int
    side: str  # "input" | "output"


def readings(spec: PermutationSpec, model: nn.Module) -> dict[str, list[Reading]]:
    """group → where its features are read (see the module docstring); StarlightError for a group that no
    Linear/Conv reads or produces."""
    modules = dict(model.named_modules())
    out: dict[str, list[Reading]] = {g: [] for g in spec.sizes}
    produced: dict[str, list[Reading]] = {g: [] for g in spec.sizes}
    for group, members in spec.members().items():
        for name, axis, offset in members:
            owner, _, leaf = name.rpartition(".")
            module = modules.get(owner)
            if leaf != "weight" or not isinstance(module, _LAYERS) or getattr(module, "groups", 1) != 1:
                continue
            if axis == 1 and _input_width(module) == module.weight.shape[1]:
                out[group].append(Reading(owner, offset, spec.sizes[group], "input"))
            elif axis == 0:
                produced[group].append(Reading(owner, offset, spec.sizes[group], "output"))
    for group in spec.sizes:
        if not out[group]:
            out[group] = produced[group][:1]
        if not out[group]:
            raise StarlightError(
                f"activation matching cannot read the features of permutation group {group!r} (no Linear or "
                "Conv layer reads or produces them); use weight matching (--method weight)"
            )
    return out


def _input_width(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


class _Moments:
    """Running sums for the correlation of A's and B's features at one reading.

    Each batch's products are computed in float32 (twice as fast as float64, and no copy to convert) on
    features shifted by the first batch's means, which keeps the sums of products small around the
    mean so that float32 loses nothing the correlation needs; the batch sums are accumulated in float64."""

    def __init__(self, n: int, device: torch.device):
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.shift_a = self.shift_b = None
        self.sum_a, self.sum_b, self.sq_a, self.sq_b, self.cross = z(n), z(n), z(n), z(n), z(n, n)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.float(), b.float()
        if self.shift_a is None:
            self.shift_a, self.shift_b = a.mean(0), b.mean(0)
        a, b = a - self.shift_a, b - self.shift_b
        self.count += len(a)
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sq_a += (a * a).sum(0)
        self.sq_b += (b * b).sum(0)
        self.cross += a.T @ b

    def correlation(self) -> torch.Tensor:
        """Pearson's r; the shift cancels (covariances do not depend on it)."""
        n = self.count
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        cov = self.cross / n - torch.outer(mean_a, mean_b)
        std_a = (self.sq_a / n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / n - mean_b**2).clamp_min(0).sqrt()
        return cov / (torch.outer(std_a, std_b) + EPS)


def _features(x: torch.Tensor, reading: Reading, linear: bool) -> torch.Tensor:
    """(rows, n): one row per sample (and per position, for a convolution)."""
    if linear:
        return x[..., reading.offset : reading.offset + reading.n].reshape(-1, reading.n)
    part = x.narrow(1, reading.offset, reading.n)
    return part.movedim(1, -1).reshape(-1, reading.n)


@torch.no_grad()
def correlations(
    model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec, x: torch.Tensor, batch_size: int = BATCH
) -> dict[str, torch.Tensor]:
    """group → (n, n) correlation C[i, j] of A's unit i with B's unit j, summed over the group's readings.
    `model_a`, `model_b`: the two networks (same architecture), put in eval mode for the pass."""
    where = readings(spec, model_a)
    by_module: dict[tuple[str, str], list[tuple[str, Reading]]] = {}
    for group, reads in where.items():
        for r in reads:
            by_module.setdefault((r.module, r.side), []).append((group, r))
    moments = {(g, r): _Moments(r.n, x.device) for g, reads in where.items() for r in reads}
    modules_a = dict(model_a.named_modules())
    linear = {key: isinstance(modules_a[key[0]], nn.Linear) for key in by_module}
    seen: dict[int, dict[tuple[str, str], torch.Tensor]] = {0: {}, 1: {}}
    handles = []
    for which, model in enumerate((model_a, model_b)):
        modules = dict(model.named_modules())
        for module_name, side in by_module:
            def hook(module, inputs, output, key=(module_name, side), store=seen[which]):
                store[key] = inputs[0] if key[1] == "input" else output

            handles.append(modules[module_name].register_forward_hook(hook))
    modes = [model_a.training, model_b.training]
    model_a.eval()
    model_b.eval()
    try:
        for i in range(0, len(x), batch_size):
            chunk = x[i : i + batch_size]
            model_a(chunk)
            model_b(chunk)
            for (module_name, side), reads in by_module.items():
                fa, fb = seen[0][(module_name, side)], seen[1][(module_name, side)]
                for group, r in reads:
                    moments[(group, r)].add(_features(fa, r, linear[(module_name, side)]), _features(fb, r, linear[(module_name, side)]))
            seen[0].clear()
            seen[1].clear()
    finally:
        for h in handles:
            h.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    out = {}
    for group, reads in where.items():
        out[group] = sum((moments[(group, r)].correlation() for r in reads[1:]), moments[(group, reads[0])].correlation())
    return out


def activation_matching(
    spec: PermutationSpec,
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    batch_size: int = BATCH,
) -> dict[str, torch.Tensor]:
    """group → LongTensor permutation (CPU) such that `apply_permutation(spec, perms, state_b)` fires like
    A on `x`. `model`: a network of the architecture (its own weights are left as they were)."""
    import copy

    # Imported here, as in weight matching: scipy.optimize costs ~0.5 s of start-up.
    from scipy.optimize import linear_sum_assignment

    model_a = copy.deepcopy(model)
    model_b = copy.deepcopy(model)
    model_a.load_state_dict(state_a)
    model_b.load_state_dict(state_b)
    perms = {}
    for group, corr in correlations(model_a, model_b, spec, x, batch_size).items():
        _, cols = linear_sum_assignment(corr.cpu().numpy(), maximize=True)
        perms[group] = torch.as_tensor(cols, dtype=torch.long)
    return perms
