"""VGG for 32×32 inputs; `width` is the first stage's channels (64 in the original), the rest scale with it."""

from __future__ import annotations

import torch.nn as nn

from .builders import register_model

CONFIGS = {
    11: [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    19: [1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"],
}


class CifarVGG(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int, in_chans: int, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            cout = v * width
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model
def cifar_vgg11(pretrained=False, num_classes=10, in_chans=3, width=64, batch_norm=False, **_timm_kwargs):
    """VGG11 without BN by default, as in the paper."""
    return CifarVGG(11, width, num_classes, in_chans, batch_norm)


@register_model
def cifar_vgg19(pretrained=False, num_classes=10, in_chans=3, width=64, batch_norm=False, **_timm_kwargs):
    return CifarVGG(19, width, num_classes, in_chans, batch_norm)
