"""The typed training config: one pydantic schema that a resolved config (recipe + --set + flags) must pass
before any work, and the architecture check that builds the network on the meta device.

Validation only: the resolved dict is stored and hashed as it is (the hash is the idempotency key), so
nothing here converts a value; it refuses what is not already of the right type and range. Every error
names the key, the value, what is allowed and where the value came from (a recipe file, --set, a flag).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator

from starcli.errors import UsageError

# Far above any network trained here (a WRN-28-10 has 36.5M); a width of 10**9 fails here, not in malloc.
MAX_PARAMETERS = 2_000_000_000
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20

# What each key allows, in the words of the error message.
ALLOWED: dict[str, str] = {
    "dataset": "a dataset name",
    "arch": "an architecture name",
    "arch_kwargs": "a table of architecture settings",
    "epochs": f"an integer from 1 to {MAX_EPOCHS:,}",
    "batch_size": f"an integer from 2 to {MAX_BATCH_SIZE:,}",
    "optimizer": "sgd, adam or adamw",
    "lr": "a finite number > 0",
    "momentum": "a number with 0 ≤ momentum < 1",
    "nesterov": "true or false",
    "weight_decay": "a finite number ≥ 0",
    "schedule": "cosine, constant or step",
    "milestones": "a list of ascending non-negative integers (epochs), e.g. [30, 60]",
    "gamma": "a finite number > 0",
    "warmup_epochs": "a finite number ≥ 0 (epochs)",
    "augmentation": "none or flip-crop",
    "label_smoothing": "a number with 0 ≤ label_smoothing < 1",
    "precision": "fp32 or bf16",
    "memory_format": "contiguous or channels_last (channels_last: networks with image inputs only)",
    "compile": "off, false, true, default, reduce-overhead or max-autotune (a torch.compile mode)",
    "recipe": "a recipe name",
    "normalisation": "a description",
}

Number = StrictInt | float  # an int is a valid float (lr = 1); a bool or a string is not


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("not finite")
    return v


class TrainingConfig(BaseModel):
    """The resolved training config; `check` raises one UsageError line for the first bad key."""

    model_config = ConfigDict(strict=True, extra="forbid")

    dataset: StrictStr
    arch: StrictStr
    arch_kwargs: dict[StrictStr, Any]
    epochs: StrictInt = Field(ge=1, le=MAX_EPOCHS)
    batch_size: StrictInt = Field(ge=2, le=MAX_BATCH_SIZE)
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: Number = Field(gt=0)
    momentum: Number = Field(ge=0, lt=1)
    nesterov: StrictBool
    weight_decay: Number = Field(ge=0)
    schedule: Literal["cosine", "constant", "step"]
    milestones: list[StrictInt]
    gamma: Number = Field(gt=0)
    warmup_epochs: Number = Field(ge=0)
    augmentation: Literal["none", "flip-crop"]
    label_smoothing: Number = Field(ge=0, lt=1)
    precision: Literal["fp32", "bf16"]
    # Absent in every config that predates it (and on the CPU): contiguous. See engine/precision.py.
    memory_format: Literal["contiguous", "channels_last"] | None = None
    # Absent (eager) unless asked for; normalised before the check (true → default). See engine/compilation.py.
    compile: Literal["default", "reduce-overhead", "max-autotune"] | None = None
    recipe: StrictStr
    normalisation: StrictStr

    @field_validator("lr", "momentum", "weight_decay", "gamma", "warmup_epochs", "label_smoothing")
    @classmethod
    def _is_finite(cls, v):
        return _finite(v)

    @field_validator("milestones")
    @classmethod
    def _ascending(cls, v):
        if any(m < 0 for m in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("not ascending non-negative")
        return v


def check(config: dict[str, Any], origins: dict[str, str] | None = None) -> None:
    """Refuse a resolved config whose values have the wrong type or range (a UsageError naming the key)."""
    origins = origins or {}
    try:
        TrainingConfig.model_validate(config)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        value = config.get(key, err.get("input"))
        where = origins.get(key, "the defaults")
        if err["type"] == "extra_forbidden":
            raise UsageError(f"unknown setting {key!r} (from {where}); known: {', '.join(ALLOWED)}") from None
        raise UsageError(f"{key} = {_show(value)} (from {where}) is not allowed: {key} must be {ALLOWED.get(key, err['msg'])}") from None


def entry_parameters(arch: str) -> dict[str, inspect.Parameter] | None:
    """The named keyword parameters of one of our architectures' builders, or None for a timm model (most
    forward **kwargs to their class, so only building them can tell)."""
    from starcli import models

    if arch not in models.OURS:
        return None
    params = inspect.signature(models.OURS[arch]).parameters
    return {n: p for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and n != "pretrained"}


def check_arch(arch: str, arch_kwargs: dict[str, Any], dataset_info: Any, origins: dict[str, str] | None = None) -> None:
    """Build `arch` with `arch_kwargs` on the meta device (no memory, no time) and push one batch of the
    dataset's shape through it: an unknown kwarg, a wrong type, a zero/fractional/huge width, a negative
    depth or a network whose input or output does not fit the dataset is one UsageError naming the key."""
    import torch

    from starcli import models
    from starcli.errors import StarlightError

    origins = origins or {}

    def where(key: str) -> str:
        return origins.get(f"arch_kwargs.{key}", origins.get("arch_kwargs", "the dataset's defaults"))

    if not isinstance(arch, str) or not models.is_known(arch):
        hint = ", ".join(sorted(models.WIDTH_KWARG))
        raise UsageError(f"unknown architecture {arch!r} (from {origins.get('arch', 'the recipe')}); ours are {hint}, or any name from timm.list_models()")
    for key in arch_kwargs:
        if not isinstance(key, str) or "." in key:
            raise UsageError(f"arch_kwargs.{key} (from {where(str(key))}) is not an architecture setting; nested keys are not allowed")
    params = entry_parameters(arch)
    if params is not None:
        for key, value in arch_kwargs.items():
            if key not in params:
                known = ", ".join(params)
                raise UsageError(f"arch_kwargs.{key} (from {where(key)}) is not a setting of {arch}; known: {known}")
            default = params[key].default
            if isinstance(default, bool) and not isinstance(value, bool):
                raise UsageError(f"arch_kwargs.{key} = {_show(value)} (from {where(key)}) is not allowed: {key} must be true or false")
            if isinstance(default, int) and not isinstance(default, bool):
                low = 0 if key == "depth" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise UsageError(
                        f"arch_kwargs.{key} = {_show(value)} (from {where(key)}) is not allowed: {key} must be an integer ≥ {low}"
                    )
    try:
        with torch.device("meta"):
            model = models.create(arch, **arch_kwargs)
            n_params = sum(p.numel() for p in model.parameters())
            if n_params > MAX_PARAMETERS:
                raise UsageError(
                    f"{arch} with arch_kwargs {arch_kwargs} has {n_params:,} parameters, more than {MAX_PARAMETERS:,}; "
                    f"choose a smaller width (from {where('width')})"
                )
            out = model(torch.empty((2, *dataset_info.shape))) if dataset_info is not None else None
    except UsageError:
        raise
    except Exception as e:  # the model's own complaint, whatever its type: the kwargs do not build a network
        if isinstance(e, StarlightError):
            raise UsageError(str(e)) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"{arch} with arch_kwargs {arch_kwargs} does not build a network"
            + (f" for {dataset_info.name} (inputs {tuple(dataset_info.shape)})" if dataset_info is not None else "")
            + f": {first[:200]}"
        ) from None
    if out is not None and tuple(out.shape) != (2, dataset_info.num_classes):
        raise UsageError(
            f"{arch} with arch_kwargs {arch_kwargs} outputs {tuple(out.shape[1:])} per sample but {dataset_info.name} "
            f"has {dataset_info.num_classes} classes/targets; fix num_classes (from {where('num_classes')})"
        )


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 60 else text[:57] + "..."
