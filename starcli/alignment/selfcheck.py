"""Proving a spec: permute every group at random; the network's outputs must not change.

A wrong spec (a tie too many, a fixed axis missed) breaks the network's function, and on random
weights that shows in the logits. The check uses eval mode, so BatchNorm running statistics take part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .spec import PermutationSpec, apply_permutation

TOLERANCE = 1e-4  # max |Δlogit| relative to the largest |logit|
OUR_IMAGE_SIZE = 32  # starlight's own conv nets are CIFAR networks
# Convolutional nets accept any size; 64 keeps stride-32 feature maps at 2×2, like full-size inputs
# and unlike 32×32 ones (where a flatten would see 1×1 maps), at a tenth of the cost of 224×224.
SMALL_IMAGE_SIZE = 64
OUR_CONV_NETS = ("cifar_resnet18", "cifar_vgg11", "cifar_vgg19", "wrn")
OUR_SEQUENCE_NETS = {"mnist1d_cnn": 40}  # 1-D conv nets: the length of their dataset's sequences


@dataclass
class SelfCheck:
    spec: PermutationSpec
    max_abs_diff: float
    max_abs_logit: float
    input_shape: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE * self.max_abs_logit and self.max_abs_logit > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_logit": self.max_abs_logit,
            "tolerance": TOLERANCE,
            "input_shape": list(self.input_shape),
        }

    def summary(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        return (
            f"self-check {verdict}: max |Δlogit| {self.max_abs_diff:.3g} vs allowed {TOLERANCE:g} × max |logit| "
            f"{self.max_abs_logit:.3g} (random permutation of all {len(self.spec.sizes)} groups, input {list(self.input_shape)})"
        )


def example_input(arch: str, arch_kwargs: dict[str, Any], model: nn.Module, batch: int = 2) -> torch.Tensor:
    """An input the network accepts, derived from arch_kwargs alone (so specs cache per arch_kwargs)."""
    g = torch.Generator().manual_seed(0)
    if arch in ("mlp", "linear2"):  # they flatten their input: in_chans × input_size features
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        return torch.randn(batch, first.in_features, generator=g)
    chans = int(arch_kwargs.get("in_chans", 3))
    if arch in OUR_SEQUENCE_NETS:
        return torch.randn(batch, chans, OUR_SEQUENCE_NETS[arch], generator=g)
    if arch in OUR_CONV_NETS:
        size: Any = OUR_IMAGE_SIZE
    else:  # timm: the size the model was built for (ViTs fix it through img_size), or a small one
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = arch_kwargs.get("img_size") or tuple((cfg.get("input_size") or (3, 224, 224))[1:])
        if not cfg.get("fixed_input_size") and not arch_kwargs.get("img_size"):
            size = tuple(min(n, SMALL_IMAGE_SIZE) for n in size)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return torch.randn(batch, chans, h, w, generator=g)


@torch.no_grad()
def check(spec: PermutationSpec, model: nn.Module, example: torch.Tensor, seed: int = 0) -> SelfCheck:
    was_training = model.training
    model.eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    try:
        state = _break_symmetries(original, g)
        model.load_state_dict(state)
        before = _logits(model(example))
        perms = {name: _shuffle(n, g) for name, n in spec.sizes.items()}
        model.load_state_dict(apply_permutation(spec, perms, state))
        after = _logits(model(example))
    finally:
        model.load_state_dict(original)
        model.train(was_training)
    diff = (after - before).abs().max().item() if after.shape == before.shape else float("inf")
    if not torch.isfinite(torch.tensor(diff)):
        diff = float("inf")
    return SelfCheck(spec, diff, before.abs().max().item(), tuple(example.shape))


def _break_symmetries(state: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """Fresh networks hold constant tensors (zero biases, unit BatchNorm scales and variances) whose
    permutations are invisible; perturb them so a misplaced permutation shows in the outputs."""
    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.numel() > 1 and bool((v == v.flatten()[0]).all()):
            scale = max(1.0, v.flatten()[0].abs().item())
            v = v + 0.1 * scale * torch.randn(v.shape, generator=g).to(v)
        out[k] = v
    return out


def _shuffle(n: int, g: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(n, generator=g)
    if n > 1 and bool((perm == torch.arange(n)).all()):
        perm = perm.roll(1)  # the identity would test nothing
    return perm


def _logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, dict):
        output = list(output.values())
    return torch.cat([_logits(o).flatten() for o in output])
