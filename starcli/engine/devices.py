"""`--device auto | cpu | cuda | cuda:N | mps`: the accelerator if there is one, else the CPU."""

from __future__ import annotations

import torch

from starcli.errors import StarlightError


def resolve(name: str | None = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StarlightError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StarlightError(f"device {name} requested but CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StarlightError(
                f"device {name} requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise StarlightError("device mps requested but MPS is not available here; use --device cpu or auto")
    elif device.type == "cpu":
        if device.index not in (None, 0):  # torch accepts cpu:3 and quietly uses the one CPU device
            raise StarlightError(f"device {name} does not exist: there is one CPU device; use --device cpu")
    else:
        raise StarlightError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
