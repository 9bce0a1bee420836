"""Solutions in the registry: one way to register any kind, fetching them by id, turning them into records.

No torch at import time: `starlight list` and `show` read records through this module.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError, UsageError
from starcli.registry import Registry, Solution

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

# Every kind `register` is called with (anchors.py, stars.py, soups.py, aligned.py, imports.py).
KINDS = ("anchor", "star", "soup", "aligned", "external", "bend")  # bend: a curve's trained control point (solutions/bends.py)
# A researcher's labels: bounded where they are set (manage.tag/note) and where they arrive (manifests.py),
# so every exported bundle imports again.
MAX_TAGS, MAX_TAG_CHARS, MAX_NOTE_CHARS = 100, 128, 10_000


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
        "tags": list(sol.tags or []),
        "note": sol.note,
    }
    if full:
        out.update(config=sol.config, versions=sol.versions, source_id=sol.source_id, target_id=sol.target_id)
    return out


def dataset_cache(reg: Registry) -> Path:
    """Where generated datasets (MNIST-1D) are cached: inside the home, beside the registry."""
    return reg.home / "datasets"


def versions() -> dict[str, str]:
    import safetensors
    import torch

    import starcli

    return {
        "starlight": starcli.__version__,
        "torch": torch.__version__,
        "timm": _installed("timm"),
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        # Matrix products split work by thread count, so it changes a checkpoint's last bits (README).
        "threads": str(torch.get_num_threads()),
    }


def _installed(name: str) -> str:
    # From the package metadata: importing timm (and torchvision) only to read its version costs seconds.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


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


def check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")


def query(
    reg: Registry,
    kind: str | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    width: int | None = None,
    *,
    recipe: str | None = None,
    tag: str | None = None,
    seeds: Iterable[int] | None = None,
) -> list[Solution]:
    """Solutions matching every filter given, by id. Each filter may also be a list of alternatives."""
    check_kind(kind)
    return _matching(reg, {"kind": kind, "arch": arch, "dataset": dataset, "width": width, "recipe": recipe,
                           "seed": list(seeds) if seeds is not None else None, "tag": tag})


def _matching(reg: Registry, filters: dict[str, Any]) -> list[Solution]:
    stmt = select(Solution).order_by(Solution.id)
    tags: list[str] = []
    for name, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if name == "tag":  # a JSON list: matched here, not in SQL, the same on SQLite and PostgreSQL
            tags = [str(v) for v in values]
            continue
        stmt = stmt.where(col(getattr(Solution, name)).in_(values))
    with reg.session() as s:
        found = list(s.exec(stmt))
    return [sol for sol in found if not tags or set(tags) & set(sol.tags or [])]


def select_ids(reg: Registry, text: str, what: str = "id") -> list[int]:
    """A solution selector: plain ids (`1-5,9`, as given) or attributes (`seed=1-5,recipe=mnist1d-mlp`, by id).

    Attributes that match nothing are an error, so `--anchors seed=1-5` never silently means no anchors.
    """
    from starcli.selectors import is_attribute_selector, parse_attributes, parse_ids

    if not is_attribute_selector(text):
        return parse_ids(text, what)
    attrs = parse_attributes(text, what)
    for kind in attrs.get("kind", []):
        check_kind(kind)
    ids = [sol.id for sol in _matching(reg, attrs)]
    if not ids:
        raise StarlightError(f"no solution matches {what} selector {text!r}; see `starlight list`")
    return ids


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
    history: list[dict[str, Any]] | None = None,
) -> tuple[Solution, bool]:
    """Register a solution of any kind (anchor, star, soup, aligned, external): the one path, which fills
    in the width and the library versions the same way for every kind. Returns (solution, created)."""
    from starcli import models

    return add(
        reg, tensors, key=key, kind=kind, arch=arch, arch_kwargs=arch_kwargs, width=models.width_of(arch, arch_kwargs),
        seed=seed, dataset=dataset, recipe=recipe, config=config, epochs=epochs, metrics=metrics, device=device,
        wall_seconds=wall_seconds, versions=versions(), anchors=list(anchors or []), source_id=source_id,
        target_id=target_id, history=history,
    )


def add(reg: Registry, tensors: dict[str, "torch.Tensor"], **fields: Any) -> tuple[Solution, bool]:
    """The row itself, as given: store the checkpoint, then insert the row, so a row never points at a
    missing or partial blob. Everything registers through `register`; this is its storage step.

    Returns (solution, created). A concurrent writer that registered the same key first wins and
    its row is returned, so two workers given the same seed do not produce two solutions.
    """
    from safetensors.torch import save

    # Contiguous CPU copies: safetensors refuses views and shared storage.
    data = save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata={"arch": fields["arch"]})
    sha = reg.store.put_bytes(data)
    sol = Solution(sha256=sha, **fields)
    refs = [*(fields.get("anchors") or []), *(fields[r] for r in ("source_id", "target_id") if fields.get(r) is not None)]
    try:
        with reg.session() as s:
            if refs:  # checked in the transaction that inserts: an `rm` beside a training cannot slip between
                lock_for_references(s)
                found = set(s.exec(select(Solution.id).where(col(Solution.id).in_(refs))))
                gone = [i for i in refs if i not in found]
                if gone:
                    raise StarlightError(
                        f"solution {gone[0]}, which this {fields['kind']} is built from, was removed while it was made; "
                        "nothing was registered"
                    )
            s.add(sol)
            s.commit()
            s.refresh(sol)
    except IntegrityError:
        existing = by_key(reg, fields["key"])
        if existing is None:
            raise
        sol, created = existing, False
    else:
        created = True
    # `rm`'s garbage collection may have deleted this blob between our put and our insert, when no row
    # referenced it yet (a re-register of removed weights). Now a row does, so no collector deletes it
    # again: putting it back once closes the race.
    if sol.sha256 == sha and not reg.store.holds(sha):
        reg.store.put_bytes(data)
    return sol, created


def lock_for_references(s) -> None:
    """Inside a write transaction that checks references (a star's anchors, an import's rows): on
    PostgreSQL, serialise it with `rm`, which takes the same lock before it plans; on SQLite every write
    transaction already holds the database's write lock from its first statement (BEGIN IMMEDIATE)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(sa.text("LOCK TABLE solutions IN SHARE ROW EXCLUSIVE MODE"))


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
        if other.arch_kwargs == first.arch_kwargs:
            continue  # the common case, decided without importing the models (and torch)
        from starcli import models

        # Compared complete: an imported MLP recorded with depth 1 is the anchor's network recorded without it.
        if models.complete_kwargs(other.arch, other.arch_kwargs) != models.complete_kwargs(first.arch, first.arch_kwargs):
            raise StarlightError(
                f"{role} must share arch_kwargs: solution {first.id} has {first.arch_kwargs} but "
                f"{other.id} has {other.arch_kwargs}"
            )


# The columns of a training history row (solutions/anchors.History writes them).
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc")


def history(reg: Registry, sid: int) -> list[dict[str, Any]]:
    """A solution's per-epoch training rows, every row with every column of HISTORY_COLUMNS (None where it
    was not kept: train_acc of regression runs and of rows stored before accuracy was); an error naming why
    when it has none (imported, or older)."""
    sol = get(reg, sid)
    if not sol.history:
        why = "it was not trained here" if sol.kind in ("external", "aligned", "soup") else "it was trained before history was kept"
        raise StarlightError(f"solution {sid} ({sol.kind}) has no training history: {why}")
    return [{**{c: None for c in HISTORY_COLUMNS}, **row} for row in sol.history]


def star_columns(sol: Solution) -> dict[str, Any]:
    """What tells stars apart in `list`: anchor count, t-sampling, μ* and whether anchors were re-aligned."""
    star = (sol.config or {}).get("star") or {}
    if not sol.anchors:
        return {}
    return {
        "anchors_n": len(sol.anchors),
        "t_sampling": star.get("t_sampling"),
        "mu_star": star.get("mu_star"),
        # Whether the anchors were re-permuted to the star each epoch (star --realign); not barrier's --align.
        "realign": bool(star["align_anchors"]) if "align_anchors" in star else None,
    }
