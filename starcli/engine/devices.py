"""`--device auto | cpu | cuda | cuda:N | mps`: the accelerator if there is one, else the CPU.

torch is imported inside the functions: `check` of auto or cpu must stay free of it, so that a barrier
answered from the registry starts in well under a second and still validates --device first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starcli.errors import StarlightError

if TYPE_CHECKING:
    import torch


def canonical(name: str | None) -> str:
    """The one spelling of a device name (`AUTO`, ` cuda` → auto, cuda): code that compares names, such
    as the precision defaults a submitted job gets, must not key `--device AUTO` differently."""
    return (name or "auto").strip().lower()


def check(name: str | None) -> None:
    """Validate --device before any work or registry lookup; auto and cpu need no torch to be valid."""
    if canonical(name) not in ("auto", "cpu"):
        resolve(name)


def resolve(name: str | None = "auto") -> "torch.device":
    import torch

    name = canonical(name)
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


def describe(device: "torch.device") -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
