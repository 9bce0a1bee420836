"""Solutions in the registry: one way to register any kind, fetching them by id, turning them into records.

No torch at import time: `starlight list` and `show` read records through this module.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from registry import Registry, Solution
from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

def record(reg: Registry, sol: Solution, full: bool = False) -> dict[str, Any]:
    """The JSON record of a solution (`show --json` adds config, versions and provenance)."""
    out = {
        "id": sol.id,
        "kind": sol.kind,
        "arch": sol.arch,
        "arch_kwargs": sol.arch_kwargs,
        "width": sol.width,
        "seed": sol.seed,
        "dataset": sol.dataset,
        "recipe": sol.recipe,
        "epochs": sol.epochs,
        "metrics": sol.metrics,
        "checkpoint": str(reg.store.path(sol.sha256)),
        "sha256": sol.sha256,
        "device": sol.device,
        "wall_seconds": round(sol.wall_seconds, 3),
        "created_at": sol.created_at.isoformat(timespec="seconds") + "Z",
        "anchors": list(sol.anchors or []),
    }
    if full:
        out.update(config=sol.config, versions=sol.versions, source_id=sol.source_id, target_id=sol.target_id)
    return out


def dataset_cache(reg: Registry) -> Path:
    """Where generated datasets (MNIST-1D) are cached: inside the home, beside the registry."""
    return reg.home / "datasets"


def versions() -> dict[str, str]:
    import safetensors
    import timm
    import torch

    import starcli

    return {
        "starlight": starcli.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def by_key(reg: Registry, key: str) -> Solution | None:
    with reg.session() as s:
        return s.exec(select(Solution).where(Solution.key == key)).first()


def get(reg: Registry, sid: int) -> Solution:
    with reg.session() as s:
        sol = s.get(Solution, sid)
    if sol is None:
        raise StarlightError(f"no solution with id {sid}; see `starlight list` for the ids that exist")
    return sol


def get_many(reg: Registry, ids: Iterable[int]) -> list[Solution]:
    ids = list(ids)
    with reg.session() as s:
        found = {sol.id: sol for sol in s.exec(select(Solution).where(col(Solution.id).in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        raise StarlightError(f"no solution with id {shown}; see `starlight list` for the ids that exist")
    return [found[i] for i in ids]


def query(
    reg: Registry, kind: str | None = None, arch: str | None = None, dataset: str | None = None, width: int | None = None
) -> list[Solution]:
    stmt = select(Solution).order_by(Solution.id)
    for column, value in ((Solution.kind, kind), (Solution.arch, arch), (Solution.dataset, dataset), (Solution.width, width)):
        if value is not None:
            stmt = stmt.where(column == value)
    with reg.session() as s:
        return list(s.exec(stmt))


def solution_key(kind: str, config: dict[str, Any], seed: int | None) -> str:
    """The idempotency key of a solution: what made it (kind, resolved config) and its seed."""
    return config_hash({"kind": kind, "config": config, "seed": seed})


def task_of(sol: Solution) -> dict[str, Any]:
    """The fields a solution derived from `sol` (a star, soup or aligned copy) shares with it."""
    return {"arch": sol.arch, "arch_kwargs": sol.arch_kwargs, "dataset": sol.dataset, "recipe": sol.recipe}


def register(
    reg: Registry,
    tensors: dict[str, "torch.Tensor"],
    *,
    key: str,
    kind: str,
    arch: str,
    arch_kwargs: dict[str, Any],
    dataset: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    device: str,
    recipe: str | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    wall_seconds: float = 0.0,
    anchors: list[int] | None = None,
    source_id: int | None = None,
    target_id: int | None = None,
) -> tuple[Solution, bool]:
    """Register a solution of any kind (anchor, star, soup, aligned, external): the one path, which fills
    in the width and the library versions the same way for every kind. Returns (solution, created)."""
    from starcli import models

    return add(
        reg, tensors, key=key, kind=kind, arch=arch, arch_kwargs=arch_kwargs, width=models.width_of(arch, arch_kwargs),
        seed=seed, dataset=dataset, recipe=recipe, config=config, epochs=epochs, metrics=metrics, device=device,
        wall_seconds=wall_seconds, versions=versions(), anchors=list(anchors or []), source_id=source_id,
        target_id=target_id,
    )


def add(reg: Registry, tensors: dict[str, "torch.Tensor"], **fields: Any) -> tuple[Solution, bool]:
    """The row itself, as given: store the checkpoint, then insert the row, so a row never points at a
    missing or partial blob. Everything registers through `register`; this is its storage step.

    Returns (solution, created). A concurrent writer that registered the same key first wins and
    its row is returned, so two workers given the same seed do not produce two solutions.
    """
    sha = reg.store.put(tensors, metadata={"arch": fields["arch"]})
    sol = Solution(sha256=sha, **fields)
    try:
        with reg.session() as s:
            s.add(sol)
            s.commit()
            s.refresh(sol)
        return sol, True
    except IntegrityError:
        existing = by_key(reg, fields["key"])
        if existing is None:
            raise
        return existing, False


def state_dict(reg: Registry, sol: Solution, device: "torch.device | str" = "cpu") -> dict[str, "torch.Tensor"]:
    return reg.store.load(sol.sha256, device=str(device))


def network(reg: Registry, sol: Solution, device: "torch.device | str" = "cpu") -> "nn.Module":
    """Rebuild the solution's architecture from its arch_kwargs and load its verified weights."""
    from starcli import models

    model = models.create(sol.arch, **sol.arch_kwargs)
    model.load_state_dict(state_dict(reg, sol), strict=True)
    return model.to(device).eval()


def get_star(reg: Registry, sid: int, purpose: str) -> Solution:
    """A solution that records its anchors (a star, or a soup): what BMA, soups and reports start from."""
    sol = get(reg, sid)
    if not sol.anchors:
        article = "an" if sol.kind[:1] in "aeiou" else "a"
        raise StarlightError(f"solution {sid} is {article} {sol.kind}, not a star: it has no anchors {purpose}")
    return sol


def anchor_mean_metrics(anchors: list[Solution]) -> dict[str, Any]:
    """The anchors' mean metrics, the one definition every table uses: for each metric, the mean over
    the anchors that have it (a missing or diverged value is left out, never counted as 0), with `n`,
    how many anchors there are."""
    keys = sorted({k for a in anchors for k in (a.metrics or {})})
    out: dict[str, Any] = {}
    for k in keys:
        values = [a.metrics[k] for a in anchors if (a.metrics or {}).get(k) is not None]
        out[k] = sum(values) / len(values) if values else None
    return out | {"n": len(anchors)}


def require_same_task(sols: list[Solution], role: str = "solutions") -> None:
    """Interpolating across architectures or datasets is meaningless: refuse with the mismatch named."""
    first = sols[0]
    for other in sols[1:]:
        for field in ("arch", "dataset"):
            if getattr(other, field) != getattr(first, field):
                raise StarlightError(
                    f"{role} must share {field}: solution {first.id} has {getattr(first, field)!r} but "
                    f"{other.id} has {getattr(other, field)!r}"
                )
        from starcli import models

        # Compared complete: an imported MLP recorded with depth 1 is the anchor's network recorded without it.
        if models.complete_kwargs(other.arch, other.arch_kwargs) != models.complete_kwargs(first.arch, first.arch_kwargs):
            raise StarlightError(
                f"{role} must share arch_kwargs: solution {first.id} has {first.arch_kwargs} but "
                f"{other.id} has {other.arch_kwargs}"
            )
