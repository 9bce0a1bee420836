"""The compile policy: whether a run's training step goes through `torch.compile`.

Off unless asked for (`train --compile`, `star --compile`, `compile = true` in a recipe or `--set
compile=MODE`). Compiling pays where a step is many small kernels on a fast device — a GPU, where
the default mode fuses the elementwise work of a step, and `reduce-overhead` replays it as one CUDA
graph. It does not pay on this project's CPU models: compiling the default MLP's step costs tens of
seconds of start-up (inductor writes and builds C++ kernels) against a step of a fraction of a
millisecond (measured by benchmarks/bench_compile.py; figures in the README).

A compiled step fuses and reorders floating-point operations, so its checkpoint differs from the
eager one in the last bits: the mode is part of the resolved config (and so of the key). A config
without the key is eager — every config made before the option keeps its key — and an explicit
`compile = "off"` (or false) is removed, so that it keys exactly as eager.

Only the training step (anchors' and stars') is compiled. Evaluation, BatchNorm re-estimation and
barriers run the same weights eagerly: they are measured the same way for every solution, whatever
trained it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, TypeVar

from starcli.errors import StarlightError

MODES = ("default", "reduce-overhead", "max-autotune")
KEY = "compile"

F = TypeVar("F", bound=Callable[..., Any])


def normalise(config: dict[str, Any]) -> None:
    """Canonical spelling of the key, in place: true → "default", false or "off" → no key (eager)."""
    if KEY not in config:
        return
    value = config[KEY]
    if value is True:
        config[KEY] = "default"
    elif value is False or value == "off":
        del config[KEY]


def mode(config: dict[str, Any] | None) -> str | None:
    """The config's torch.compile mode, or None for eager."""
    return (config or {}).get(KEY)


def missing_compiler(device_type: str) -> str | None:
    """What torch.compile's code generator needs and this machine lacks, or None.

    Inductor builds CPU kernels as C++ ($CXX, else g++) and CUDA kernels through Triton, whose launcher
    is C ($CC, else gcc or clang). Without one, torch fails deep inside the first compiled step with an
    InductorError; asking first turns that into one line before any data is loaded or anything trains.
    Asked only when there is something to compile: a solution already registered needs no compiler.
    """
    if device_type == "cuda":
        found = shutil.which(os.environ.get("CC") or "gcc") or shutil.which("clang")
        return None if found else "a C compiler (gcc or clang, or $CC) for Triton's CUDA kernels"
    found = shutil.which(os.environ.get("CXX") or "g++")
    return None if found else "a C++ compiler (g++, or $CXX) for inductor's CPU kernels"


def check_toolchain(config: dict[str, Any] | None, device_type: str) -> None:
    """Refuse a compiled config on a machine that cannot build its kernels (no-op for eager configs)."""
    chosen = mode(config)
    if chosen is None:
        return
    missing = missing_compiler(device_type)
    if missing:
        raise StarlightError(
            f"compile={chosen} needs {missing}, and this machine has none on PATH; "
            "install one (apt-get install g++) or train without --compile"
        )


def compiled(fn: F, config: dict[str, Any] | None, device_type: str = "cpu") -> F:
    """`fn` (a module or a function of tensors) compiled in the config's mode; `fn` itself when eager.

    A compiled module shares its parameters with `fn`: the optimizer, the resume file and the state dict
    keep working on the original module. Shapes are static (a run has one batch size, and at most one
    other for the epoch's last batch), which is what CUDA graphs need; a second shape compiles once more.
    """
    chosen = mode(config)
    if chosen is None:
        return fn
    check_toolchain(config, device_type)  # a remote worker or the Python API gets the same one line
    import torch

    return torch.compile(fn, mode=chosen, dynamic=False)  # type: ignore[return-value]
