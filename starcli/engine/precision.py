"""The precision and memory-format policy: which numeric precision and which tensor layout a run uses.

On CUDA, convolutional networks train several times faster with bf16 autocast and channels_last
(NHWC) tensors: tensor cores run bf16, and cuDNN's fastest convolution kernels want NHWC. Both change
the bits of the result, so the choice is part of the resolved config (and so of the key) and never
silently differs between a run and its re-run. On the CPU neither pays (autocast is CUDA-only here and
CPU convolutions are NCHW-tuned), so a CPU config stays exactly what it was: fp32 and no
`memory_format` key at all, which keeps every existing CPU key and checkpoint byte the same.

Every step that computes with a solution's weights (training, star steps, evaluation, BatchNorm
re-estimation, barriers) takes its precision and layout from the solution's config through this
module, so a solution is evaluated the way it was trained.

The policy (`defaults`) is a pure function of (arch, input shape, device type), testable without a GPU.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Architectures without convolutions: they gain nothing from NHWC and stay fp32 (their matrices are
# small, and fp32 keeps them stackable, engine/stacked.py).
DENSE_ARCHS = ("mlp", "linear2")
MEMORY_FORMATS = ("contiguous", "channels_last")


def defaults(arch: str, input_shape: tuple[int, ...], device_type: str) -> dict[str, Any]:
    """The policy's settings for a network `arch` on one sample of `input_shape` on `device_type`
    ("cpu", "cuda", "mps"): empty where today's defaults (fp32, contiguous) hold, so those configs
    keep their keys."""
    if device_type != "cuda" or arch in DENSE_ARCHS:
        return {}
    out: dict[str, Any] = {"precision": "bf16"}
    # channels_last is a layout of 4-D (N, C, H, W) tensors only: one sample is (C, H, W).
    if len(input_shape) == 3:
        out["memory_format"] = "channels_last"
    return out


def apply_defaults(config: dict[str, Any], input_shape: tuple[int, ...], device_type: str, explicit: set[str]) -> None:
    """Fill the policy's settings into a resolved `config`, in place, except the keys in `explicit`
    (set by a recipe, --set or a flag: an explicit `precision = "fp32"` on CUDA wins)."""
    for key, value in defaults(config["arch"], input_shape, device_type).items():
        if key not in explicit:
            config[key] = value


def device_type(device: str | None) -> str:
    """The type ("cpu", "cuda", "mps") of a --device value; `auto` asks torch what is here. None: cpu,
    so that callers that name no device resolve today's configs."""
    name = (device or "cpu").strip().lower()
    if name == "auto":
        from . import devices

        return devices.resolve("auto").type
    return name.split(":", 1)[0]


def memory_format(config: dict[str, Any]) -> "torch.memory_format":
    import torch

    if config.get("memory_format") == "channels_last":
        return torch.channels_last
    return torch.contiguous_format


def channels_last(config: dict[str, Any] | None, device: "torch.device") -> bool:
    """Whether tensors on `device` take the channels_last layout under `config`: on CUDA only. On the CPU
    a channels_last config computes contiguous, as a bf16 one computes fp32 (and torch 2.x's CPU
    channels_last training step of our ResNet aborted the process with a double free when tried)."""
    return bool(config) and config.get("memory_format") == "channels_last" and device.type == "cuda"


def autocast(device: "torch.device", config: dict[str, Any] | None):
    """bf16 autocast where the config asks for it and the device is CUDA; a no-op context otherwise (on
    the CPU a bf16 config computes in fp32, as it always has)."""
    import torch

    if not config or config.get("precision") != "bf16" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def prepare_model(model: "torch.nn.Module", config: dict[str, Any] | None, device: "torch.device") -> "torch.nn.Module":
    """The model (already on `device`) in the config's memory format (a no-op for contiguous)."""
    if channels_last(config, device):
        import torch

        return model.to(memory_format=torch.channels_last)
    return model


def inputs(x: "torch.Tensor", config: dict[str, Any] | None) -> "torch.Tensor":
    """A batch in the config's memory format: channels_last for 4-D inputs where the config says so."""
    if channels_last(config, x.device) and x.dim() == 4:
        import torch

        return x.contiguous(memory_format=torch.channels_last)
    return x

