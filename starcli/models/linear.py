"""The seed's toy: a two-layer *linear* network, the minimal non-convex model (x → W2 W1 x)."""

from __future__ import annotations

import torch.nn as nn

from .builders import register_model


@register_model
def linear2(
    pretrained: bool = False,
    num_classes: int = 1,
    in_chans: int = 1,
    input_size: int = 1,
    width: int = 16,
    **_timm_kwargs,
) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * input_size, width, bias=False),
        nn.Linear(width, num_classes, bias=False),
    )
