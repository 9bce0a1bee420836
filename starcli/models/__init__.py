"""One path from a name to a network: `create(arch, **kwargs)`.

Our width-scalable architectures are built by their own builders (builders.OURS), called the way
`timm.create_model` calls them, so building them never imports timm (seconds of start-up, torchvision
included). Every other name goes through `timm.create_model` (resnet18, vgg11_bn, densenet121, ...),
and ours are registered in timm's registry before that (builders.into_timm), so they and every timm
model stay one namespace.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from starcli.errors import StarlightError

from . import cnn1d, linear, mlp, resnet, vgg, wrn  # noqa: F401  (registration side effect)
from .builders import OURS, into_timm

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
    """Build `arch` with `kwargs` (num_classes and in_chans included): ours directly, others through timm."""
    if arch in OURS:
        # What timm.create_model does for an entry point of ours: drop None kwargs, call it unpretrained.
        try:
            return OURS[arch](pretrained=False, **{k: v for k, v in kwargs.items() if v is not None})
        except TypeError as e:
            raise StarlightError(f"architecture {arch!r} rejects its kwargs {kwargs}: {e}") from None
    import timm

    into_timm()
    if not timm.is_model(arch):
        hint = ", ".join(sorted(WIDTH_KWARG))
        raise StarlightError(f"unknown architecture {arch!r}; ours are {hint}, or any name from timm.list_models()")
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except TypeError as e:
        raise StarlightError(f"architecture {arch!r} rejects its kwargs {kwargs}: {e}") from None


def is_known(arch: str) -> bool:
    """Whether `create` can build `arch`: one of ours (no timm import), or a name in timm's registry."""
    if arch in OURS:
        return True
    import timm

    into_timm()
    return timm.is_model(arch)


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


def complete_kwargs(arch: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with every default of our architecture's entry point filled in (depth, batch_norm, ...),
    so that two records of one network compare equal however they were written; timm's own models
    (which take any **kwargs) come back as given."""
    if arch not in OURS:
        return dict(kwargs)
    import inspect

    params = inspect.signature(OURS[arch]).parameters
    defaults = {
        n: p.default for n, p in params.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and n != "pretrained" and p.default is not p.empty
    }
    return defaults | dict(kwargs)
