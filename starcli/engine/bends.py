"""Curved paths between two solutions (Garipov et al. 2018; dnn-mode-connectivity): a quadratic Bezier
curve or a polygonal chain with one bend, whose bend θ_C is trained so that the whole path has low loss.

- Bezier: θ(t) = (1−t)²·θ_A + 2t(1−t)·θ_C + t²·θ_B.
- Polychain: θ(t) = θ_A + 2t·(θ_C − θ_A) for t ≤ ½, θ_C + (2t − 1)·(θ_B − θ_C) after.
- Training (as dnn-mode-connectivity's train.py does): θ_C starts at the midpoint of the segment; every
  batch draws t ~ U(0, 1) and takes an SGD step (momentum 0.9) on the loss of θ(t) with respect to θ_C
  alone, the ends fixed. The learning rate is constant for the first half of the epochs, falls
  linearly to 1% of itself by 90% and stays there (its `learning_rate_schedule`). BatchNorm trains in
  train mode (batch statistics); its running statistics play no part, since every point evaluated
  afterwards has them re-estimated, as on a line.
- Every draw (t, batch order) comes from one seeded CPU generator: the same seed gives the same bend.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from . import evaluation

BENDS = ("bezier", "polychain")


def coefficients(bend: str, t: float) -> tuple[float, float, float]:
    """The weights (w_A, w_C, w_B) of θ(t) = w_A·θ_A + w_C·θ_C + w_B·θ_B."""
    if bend == "bezier":
        return (1 - t) ** 2, 2 * t * (1 - t), t**2
    if bend == "polychain":
        return (1 - 2 * t, 2 * t, 0.0) if t <= 0.5 else (0.0, 2 - 2 * t, 2 * t - 1)
    raise ValueError(f"unknown bend {bend!r}; the bends are {', '.join(BENDS)}")


def point(bend: str, t: float, a: dict[str, torch.Tensor], c: dict[str, torch.Tensor], b: dict[str, torch.Tensor]
          ) -> dict[str, torch.Tensor]:
    """The whole state dict at t: floating tensors on the curve, integer buffers A's."""
    wa, wc, wb = coefficients(bend, t)
    return {k: wa * v + wc * c[k] + wb * b[k] if v.is_floating_point() else v.clone() for k, v in a.items()}


def midpoint(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bend's start: the middle of the segment (dnn-mode-connectivity's init_linear)."""
    return {k: (v + b[k]) / 2 if v.is_floating_point() else v.clone() for k, v in a.items()}


def learning_rate(base: float, epoch: int, epochs: int) -> float:
    """dnn-mode-connectivity's schedule: base for the first half, linearly to 1% by 90%, then 1%."""
    alpha = epoch / epochs
    if alpha <= 0.5:
        factor = 1.0
    elif alpha <= 0.9:
        factor = 1.0 - (alpha - 0.5) / 0.4 * 0.99
    else:
        factor = 0.01
    return base * factor


def train_bend(net: torch.nn.Module, bend: str, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
               x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int, seed: int,
               weight_decay: float = 0.0) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The trained bend θ_C (a full state dict: the trained parameters, and the buffers of the segment's
    midpoint, which are not trained: BatchNorm's are re-estimated wherever the bend is evaluated) and
    the mean training loss of each epoch."""
    names = [n for n, _ in net.named_parameters()]
    start = midpoint(a, b)
    control = {n: start[n].detach().clone().requires_grad_(True) for n in names}
    opt = torch.optim.SGD(control.values(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    buffers = {n: v.detach().clone() for n, v in net.named_buffers()}  # scratch: BN's running statistics
    net.train()
    history = []
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = learning_rate(lr, epoch, epochs)
        order = torch.randperm(len(x), generator=g).to(x.device)
        total, seen = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2 and buffers:  # BatchNorm cannot train on one sample
                continue
            t = torch.rand((), generator=g).item()
            wa, wc, wb = coefficients(bend, t)
            params = {n: wa * a[n] + wc * control[n] + wb * b[n] for n in names}
            loss = evaluation.loss_fn(functional_call(net, (params, buffers), (x[idx],)).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        history.append(total / max(seen, 1))
    trained = {k: (control[k].detach().clone() if k in control else v.clone()) for k, v in start.items()}
    return trained, history

