"""Multi-layer perceptron: the paper's MNIST model (784 → width → 10, ReLU) and its deeper variants."""

from __future__ import annotations

import torch.nn as nn

from .builders import register_model


class MLP(nn.Module):
    def __init__(self, input_size: int, width: int, depth: int, num_classes: int, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = input_size
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


@register_model
def mlp(
    pretrained: bool = False,
    num_classes: int = 10,
    in_chans: int = 1,
    input_size: int = 40,
    width: int = 256,
    depth: int = 1,
    batch_norm: bool = False,
    **_timm_kwargs,
) -> MLP:
    """`depth` hidden layers of `width` units; the input is flattened (in_chans × input_size features)."""
    return MLP(in_chans * input_size, width, depth, num_classes, batch_norm)
