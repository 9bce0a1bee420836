"""`starlight align` as a function: register B permuted to match A as a solution of kind `aligned`.

An alignment already registered is answered from the registry without importing torch (the models, the
matching and the device are imported only to compute a new one): a rerun of a script's `align` starts as
fast as a cached `barrier` query.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starcli.errors import StarlightError, UsageError
from starcli.registry import Registry, Solution

from . import records

if TYPE_CHECKING:
    import torch

# `--method` → the name stored in the aligned copy's config (and so in its key).
METHODS = {"weight": "weight_matching", "activation": "activation_matching"}
METHOD = METHODS["weight"]
# Activation matching's default calibration set: the whole training split (as REPAIR and Git Re-Basin).
ACTIVATION_CALIBRATION = "full"


def align_solution(
    reg: Registry, source_id: int, target_id: int, seed: int = 0, device: str = "auto", method: str = "weight",
    calibration: str | int = ACTIVATION_CALIBRATION,
) -> tuple[Solution, bool]:
    """(solution, created): the aligned copy of `source_id` matched to `target_id`; an existing one with
    the same source, target, method and seed (and, for activation matching, calibration set) is returned
    without recomputing.

    method "weight": weight matching (seeded coordinate descent). "activation": activation matching on
    `calibration` training samples ("full" or a number: evaluation.calibration_subset's fixed subset)."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    calibration = parse_calibration(calibration)
    if source_id == target_id:
        raise UsageError(f"cannot align solution {source_id} to itself; give --to another solution")
    source, target = records.get_many(reg, [source_id, target_id])
    records.require_same_task([target, source], "solutions to align")
    config = {"method": METHODS[method], "seed": seed, "source_id": source.id, "target_id": target.id}
    if method == "activation":
        config["calibration"] = calibration  # weight matching's keys stay as they were
    key = records.solution_key("aligned", config, seed)
    existing = records.by_key(reg, key)
    if existing is not None:
        return existing, False

    from starcli.engine import devices

    dev = devices.resolve(device)
    start = time.perf_counter()
    state_a = records.state_dict(reg, target, dev)
    state_b = records.state_dict(reg, source, dev)
    if method == "activation":
        from starcli.alignment import align_state_by_activation

        x = calibration_inputs(reg, source, calibration, dev)
        aligned = align_state_by_activation(source.arch, source.arch_kwargs, state_a, state_b, x)
    else:
        from starcli.alignment import align_state

        aligned = align_state(source.arch, source.arch_kwargs, state_a, state_b, seed=seed)
    wall = time.perf_counter() - start
    params = _parameter_names(source.arch, source.arch_kwargs)
    metrics = {
        **(source.metrics or {}),  # same function, same metrics
        "l2_to_target": _distance(state_a, aligned, params),
        "l2_to_target_unaligned": _distance(state_a, state_b, params),
    }
    return records.register(
        reg, {k: v.detach().cpu().contiguous() for k, v in aligned.items()}, key=key, kind="aligned",
        **records.task_of(source), config=config, seed=source.seed, epochs=source.epochs, metrics=metrics,
        device=str(dev), wall_seconds=wall, source_id=source.id, target_id=target.id,
    )


def parse_calibration(calibration: str | int) -> str | int:
    """"full" or a positive number of training samples (as --bn-calibration)."""
    if calibration == "full":
        return calibration
    try:
        size = int(calibration)
    except (TypeError, ValueError):
        size = 0
    if isinstance(calibration, bool) or size < 1 or str(size) != str(calibration).strip():
        raise UsageError(f"--calibration must be full or a positive number of training samples, got {calibration!r}")
    return size


def calibration_inputs(reg: Registry, sol: Solution, calibration: str | int, device: "torch.device") -> "torch.Tensor":
    """The fixed calibration subset of `sol`'s training split (no augmentation), on `device`."""
    from starcli.engine import evaluation
    from starcli.engine.data import load_split

    train = load_split(sol.dataset, "train", device, cache_dir=records.dataset_cache(reg))
    return evaluation.calibration_subset(train.x, calibration)


def _parameter_names(arch: str, arch_kwargs: dict[str, Any]) -> list[str]:
    import torch

    from starcli import models

    with torch.device("meta"):  # names only: no memory, no initialisation
        return [n for n, _ in models.create(arch, **arch_kwargs).named_parameters()]


def _distance(a: dict[str, "torch.Tensor"], b: dict[str, "torch.Tensor"], names: list[str]) -> float:
    """‖θ_A − θ_B‖ over parameters (running statistics are not weights)."""
    missing = [n for n in names if n not in a or n not in b]
    if missing:
        raise StarlightError(f"checkpoint lacks parameter {missing[0]!r}; it does not match its architecture")
    return float(sum(((a[n].double() - b[n].double()) ** 2).sum() for n in names) ** 0.5)
