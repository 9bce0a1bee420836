"""A width-scalable 1-D convolutional network for MNIST-1D (sequences of 40 values, one channel).

A stem conv1d–BatchNorm1d–ReLU, then `depth` more such blocks of `width` channels (each optionally
residual: x + block(x)), global pooling over the sequence, and a linear head. Length is kept by
padding, so residual sums need no projection and every hidden layer is one permutation group of
`width` channels (all of them tied together when `residual` is on, as in a ResNet stage).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import register_model

POOLS = ("avg", "max")


class Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, residual: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm1d(out_ch)
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x):
        out = self.act(self.bn(self.conv(x)))
        return x + out if self.residual else out


class CNN1d(nn.Module):
    def __init__(self, in_chans: int, width: int, depth: int, kernel: int, num_classes: int, residual: bool, pool: str):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.in_chans = in_chans
        self.stem = Block(in_chans, width, kernel, residual=False)  # channels change: no skip
        self.blocks = nn.Sequential(*[Block(width, width, kernel, residual) for _ in range(depth)])
        self.pool = pool
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        # MNIST-1D samples arrive as (N, 40); a (N, C, L) batch passes unchanged.
        x = x.reshape(x.shape[0], self.in_chans, -1)
        x = self.blocks(self.stem(x))
        x = x.mean(dim=2) if self.pool == "avg" else x.amax(dim=2)
        return self.head(x)


@register_model
def mnist1d_cnn(
    pretrained: bool = False,
    num_classes: int = 10,
    in_chans: int = 1,
    width: int = 32,
    depth: int = 3,
    kernel: int = 5,
    residual: bool = False,
    pool: str = "max",
    **_timm_kwargs,
) -> CNN1d:
    """`width` channels in every hidden layer; `depth` blocks after the stem; `residual` adds skips."""
    return CNN1d(in_chans, width, depth, kernel, num_classes, residual, pool)
