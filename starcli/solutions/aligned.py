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

METHOD = "weight_matching"


def align_solution(
    reg: Registry, source_id: int, target_id: int, seed: int = 0, device: str = "auto"
) -> tuple[Solution, bool]:
    """(solution, created): the aligned copy of `source_id` matched to `target_id`; an existing one with
    the same source, target, method and seed is returned without recomputing."""
    if source_id == target_id:
        raise UsageError(f"cannot align solution {source_id} to itself; give --to another solution")
    source, target = records.get_many(reg, [source_id, target_id])
    records.require_same_task([target, source], "solutions to align")
    config = {"method": METHOD, "seed": seed, "source_id": source.id, "target_id": target.id}
    key = records.solution_key("aligned", config, seed)
    existing = records.by_key(reg, key)
    if existing is not None:
        return existing, False

    from starcli.alignment import align_state
    from starcli.engine import devices

    dev = devices.resolve(device)
    start = time.perf_counter()
    state_a = records.state_dict(reg, target, dev)
    state_b = records.state_dict(reg, source, dev)
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
