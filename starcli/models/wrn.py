"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis), pre-activation blocks; `width` is the widen factor k."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .builders import register_model


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, num_classes: int, in_chans: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        stages, cin = [], widths[0]
        for i, cout in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*[WideBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]))
            cin = cout
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model
def wrn(pretrained=False, num_classes=10, in_chans=3, depth=22, width=1, **_timm_kwargs):
    return WideResNet(depth, width, num_classes, in_chans)
