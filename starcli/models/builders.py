"""Our architectures' builders, registered without importing timm.

timm (and torchvision, which it imports) costs seconds at start-up, and our own networks do not need
it. `register_model` records a builder here, and in timm's registry too when timm is already imported;
`into_timm()` registers them all later (`starcli.models.create` calls it before building a timm model),
so `timm.create_model("mlp")` builds the same network once it has run.
"""

from __future__ import annotations

import sys
from typing import Callable

OURS: dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    OURS[fn.__name__] = fn
    if "timm" in sys.modules:
        _register_in_timm(fn)
    return fn


def into_timm() -> None:
    """Register every builder of ours in timm's registry (idempotent; imports timm). Called through
    starcli.models, whose import has loaded every model module, so OURS is complete."""
    for fn in OURS.values():
        _register_in_timm(fn)


def _register_in_timm(fn: Callable) -> None:
    import timm
    from timm.models import register_model as timm_register

    if not timm.is_model(fn.__name__):
        timm_register(fn)
