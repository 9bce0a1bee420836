"""One path from a name to a network: `create(arch, **kwargs)` always goes through `timm.create_model`.

Importing this package registers starlight's own width-scalable architectures in timm's registry
(`@register_model`), so they and every timm model (resnet18, vgg11_bn, densenet121, ...) are built alike.
"""

from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn

from starcli.errors import StarlightError

from . import cnn1d, linear, mlp, resnet, vgg, wrn  # noqa: F401  (registration side effect)

# Our architectures, and the kwarg that is their width (recorded in the registry's `width` column).
WIDTH_KWARG = {
    "mlp": "width",
    "linear2": "width",
    "cifar_resnet18": "width",
    "cifar_vgg11": "width",
    "cifar_vgg19": "width",
    "wrn": "width",
    "mnist1d_cnn": "width",
}


def create(arch: str, **kwargs: Any) -> nn.Module:
    """Build `arch` with `kwargs` (num_classes and in_chans included) through timm's factory."""
    if not timm.is_model(arch):
        hint = ", ".join(sorted(WIDTH_KWARG))
        raise StarlightError(f"unknown architecture {arch!r}; ours are {hint}, or any name from timm.list_models()")
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except TypeError as e:
        raise StarlightError(f"architecture {arch!r} rejects its kwargs {kwargs}: {e}") from None


def width_of(arch: str, arch_kwargs: dict[str, Any]) -> int | None:
    key = WIDTH_KWARG.get(arch)
    value = arch_kwargs.get(key) if key else None
    return int(value) if value is not None else None


def arch_kwargs_for(arch: str, dataset_info: Any, user_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Complete kwargs: defaults derived from the dataset, overridden by the user's.

    The result rebuilds exactly the checkpoint's network: `create(arch, **arch_kwargs_for(...))`.
    """
    kwargs: dict[str, Any] = {"num_classes": dataset_info.num_classes, "in_chans": dataset_info.in_chans}
    if arch in ("mlp", "linear2"):
        kwargs["input_size"] = dataset_info.input_size
    kwargs.update(user_kwargs or {})
    return kwargs
