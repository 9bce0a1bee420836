"""Renormalising an interpolated network without BatchNorm: REPAIR (Jordan et al. 2022) and its halves.

Averaging two networks' weights shrinks the spread of their hidden pre-activations ("variance collapse"),
and the barrier measured on the segment is partly that collapse. REPAIR corrects it at each t: every hidden
channel's output (each Linear/Conv but the last) is made to have the mean and standard deviation
interpolated between the endpoints', measured on a calibration set:

    μ_t = (1−t)·μ_A + t·μ_B,   σ_t = (1−t)·σ_A + t·σ_B
    y ← (y − μ) · σ_t / sqrt(σ² + ε) + μ_t        μ, σ: the interpolated network's own statistics

`rescale` corrects the standard deviation only (y ← (y − μ)·σ_t/sqrt(σ²+ε) + μ), `reshift` the mean only
(y ← y − μ + μ_t). Layers are corrected in the order the network runs them, each measured with the
layers before it already corrected (what REPAIR's BatchNorm layers in train mode see), over the whole
calibration set, not per batch. The corrections are forward hooks, so any layer works, with or without bias.

Networks with BatchNorm have their own policy, `reset` (evaluation.recalibrate_bn), which REPAIR itself
uses on them; these three are for networks without it (`check` refuses the mix).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
import torch.nn as nn

from starcli.errors import UsageError

POLICIES = ("none", "reset", "repair", "rescale", "reshift")
STATISTICS_POLICIES = ("repair", "rescale", "reshift")  # REPAIR and its halves
EPS = 1e-5  # as BatchNorm's, which REPAIR's correction layers are
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer → (mean, variance) per channel


def default_policy(has_bn: bool) -> str:
    """What barriers have always done: BatchNorm statistics re-estimated at each t; nothing without BN."""
    return "reset" if has_bn else "none"


def check(policy: str, has_bn: bool) -> None:
    """UsageError (one line) for a policy that cannot apply to this network."""
    if policy not in POLICIES:
        raise UsageError(f"--renorm must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "reset" and not has_bn:
        raise UsageError("--renorm reset re-estimates BatchNorm statistics, and this network has no BatchNorm; "
                         "use --renorm repair (or rescale, reshift, none)")
    if policy in STATISTICS_POLICIES and has_bn:
        raise UsageError(f"--renorm {policy} is for networks without BatchNorm; this one has BatchNorm, "
                         "whose statistics --renorm reset re-estimates (or none keeps them interpolated)")


class Renormaliser:
    """REPAIR, rescale or reshift for one architecture on one calibration set (see the module docstring)."""

    def __init__(self, net: nn.Module, policy: str, x: torch.Tensor, batch_size: int = 4096):
        if policy not in STATISTICS_POLICIES:
            raise ValueError(f"policy must be one of {STATISTICS_POLICIES}, got {policy!r}")
        self.policy = policy
        self.x = x
        self.batch_size = batch_size
        self.layers = corrected_layers(net, x[:2])
        # Endpoint statistics are measured on a copy, so the caller's network keeps its weights.
        self._probe = copy.deepcopy(net).eval()
        self._endpoints: list[tuple[torch.Tensor, Stats]] = []

    def endpoint(self, state: dict[str, torch.Tensor]) -> Stats:
        """Every corrected layer's statistics for one solution; the last few are kept (identity of its
        first tensor), so a solution in many pairs is measured once."""
        first = next(iter(state.values()))
        for key, stats in self._endpoints:
            if key is first:
                return stats
        self._probe.load_state_dict(state)
        stats = measure(self._probe, self.layers, self.x, self.batch_size, {})
        self._endpoints = ([(first, stats)] + self._endpoints)[:4]
        return stats

    @contextlib.contextmanager
    def corrected(self, net: nn.Module, state_a, state_b, t: float) -> Iterator[None]:
        """`net` (holding the weights at t) with its hidden channels corrected while the block runs."""
        stats_a, stats_b = self.endpoint(state_a), self.endpoint(state_b)
        goals = {}
        for name in self.layers:
            (mean_a, var_a), (mean_b, var_b) = stats_a[name], stats_b[name]
            goals[name] = (torch.lerp(mean_a, mean_b, t), torch.lerp(var_a.sqrt(), var_b.sqrt(), t))
        affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        modules = dict(net.named_modules())
        handles = []
        try:
            for name in self.layers:  # each layer measured with the ones before it corrected
                mean, var = measure(net, [name], self.x, self.batch_size, affine)[name]
                affine[name] = correction(self.policy, mean, var, *goals[name])
            handles = [modules[name].register_forward_hook(_hook(*affine[name])) for name in self.layers]
            yield
        finally:
            for h in handles:
                h.remove()


def correction(policy: str, mean, var, goal_mean, goal_std) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel: y ← y·scale + shift."""
    if policy == "reshift":
        return torch.ones_like(mean), goal_mean - mean
    scale = goal_std / (var + EPS).sqrt()
    target_mean = goal_mean if policy == "repair" else mean
    return scale, target_mean - mean * scale


def corrected_layers(net: nn.Module, example: torch.Tensor) -> list[str]:
    """The Linear/Conv layers whose outputs are hidden, in the order the network runs them: every one it
    runs but the last (the output layer)."""
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
        for name, m in net.named_modules() if isinstance(m, _LAYERS)
    ]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return list(dict.fromkeys(order))[:-1]


@torch.no_grad()
def measure(net: nn.Module, layers: list[str], x: torch.Tensor, batch_size: int, affine) -> Stats:
    """(mean, variance) per channel of each of `layers`' outputs over all of `x` (float64 sums), with the
    corrections in `affine` applied where the network runs them."""
    modules = dict(net.named_modules())
    sums: dict[str, list] = {name: [0, 0.0, 0.0] for name in layers}

    def record(name):
        def hook(module, inputs, output):
            if name in affine:
                output = output * _view(affine[name][0], module, output) + _view(affine[name][1], module, output)
            if name in sums:
                axis = _channel_axis(module)
                flat = output.movedim(axis, -1).reshape(-1, output.shape[axis]).double()
                s = sums[name]
                s[0] += len(flat)
                s[1] = s[1] + flat.sum(0)
                s[2] = s[2] + (flat * flat).sum(0)
            return output

        return hook

    handles = [modules[name].register_forward_hook(record(name)) for name in set(layers) | set(affine)]
    was_training = net.training
    net.eval()
    try:
        for i in range(0, len(x), batch_size):
            net(x[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    out = {}
    for name, (n, total, squares) in sums.items():
        mean = total / n
        out[name] = (mean.float(), (squares / n - mean * mean).clamp_min(0).float())
    return out


def _channel_axis(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1  # linear layers: (..., C); convolutions: (N, C, ...)


def _view(v: torch.Tensor, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    if _channel_axis(module) == 1:
        return v.view(1, -1, *[1] * (output.dim() - 2)).to(output.dtype)
    return v.to(output.dtype)


def _hook(scale: torch.Tensor, shift: torch.Tensor):
    def hook(module, inputs, output):
        return output * _view(scale, module, output) + _view(shift, module, output)

    return hook
