"""The aligned average ("model soup") of the anchors: the baseline star candidate the paper lacked.

Reviewers asked whether a star needs training at all: permute every anchor to one reference anchor
(weight matching), average the weights, re-estimate BatchNorm statistics, and test the average against
the same held-outs as the star. If it connected as well, Starlight's optimisation would be unnecessary.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import StarlightError

SOUP_VERSION = 1  # part of the idempotency key: bump when the construction changes


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of floating tensors; integer buffers (BatchNorm's step counter) come from the first state."""
    first = states[0]
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in first.items()
    }


def soup_key(anchor_ids: list[int], align: bool, bn_calibration: str | int) -> str:
    from .recipes import config_hash

    return config_hash(
        {"kind": "soup", "anchors": list(anchor_ids), "align": align, "bn_calibration": bn_calibration, "v": SOUP_VERSION}
    )


def build_soup(
    reg,
    anchor_ids: list[int],
    align: bool = True,
    bn_calibration: str | int = "full",
    device: str = "auto",
    reporter=None,
) -> tuple[Any, bool]:
    """Register (kind `soup`) the average of `anchor_ids`, each aligned to the first; returns
    (solution, created). The same anchors and settings return the registered soup unchanged."""
    import time

    from . import devices, evaluation, models, solutions, training
    from .progress import Reporter

    reporter = reporter or Reporter()
    if len(anchor_ids) < 2:
        raise StarlightError(f"a soup averages at least 2 anchors, got {len(anchor_ids)}; pass e.g. --anchors 1-5")
    if len(set(anchor_ids)) != len(anchor_ids):
        raise StarlightError("the same anchor is listed twice; each anchor enters the soup once")
    key = soup_key(anchor_ids, align, bn_calibration)
    existing = solutions.by_key(reg, key)
    if existing is not None:
        reporter.log(f"soup of {','.join(map(str, anchor_ids))}: already registered as solution {existing.id}")
        return existing, False
    anchors = solutions.get_many(reg, anchor_ids)
    solutions.require_same_task(anchors, "soup anchors")
    reference = anchors[0]
    if align:
        from .alignment import has_spec

        if not has_spec(reference.arch, reference.arch_kwargs):
            raise StarlightError(
                f"no permutation spec for {reference.arch}: cannot align the anchors; pass --no-align for a plain average"
            )
    dev = devices.resolve(device)
    start = time.perf_counter()
    task = reporter.task(f"soup of {len(anchors)} anchors", len(anchors) + 1)
    ref_state = solutions.state_dict(reg, reference)
    states = [ref_state]
    task.advance()
    for other in anchors[1:]:
        state = solutions.state_dict(reg, other)
        states.append(_aligned(reference, ref_state, state) if align else state)
        task.advance()
    model = models.create(reference.arch, **reference.arch_kwargs)
    model.load_state_dict(average(states))
    model = model.to(dev)
    train = training.load_split(reference.dataset, "train", dev, home=reg.home)
    test = training.load_split(reference.dataset, "test", dev, home=reg.home)
    if evaluation.has_batchnorm(model):
        # The averaged weights never produced the stored statistics; the average of statistics is not
        # the statistics of the average.
        x = train.x if bn_calibration == "full" else train.x[: int(bn_calibration)]
        evaluation.recalibrate_bn(model, x)
    metrics = evaluation.metrics(model, {"train": (train.x, train.y), "test": (test.x, test.y)})
    task.done()
    config = dict(reference.config or {})
    config["soup"] = {"anchors": list(anchor_ids), "reference": reference.id, "align": align, "bn_calibration": bn_calibration}
    sol, created = solutions.add(
        reg,
        model.state_dict(),
        key=key,
        kind="soup",
        arch=reference.arch,
        arch_kwargs=reference.arch_kwargs,
        width=reference.width,
        seed=None,
        dataset=reference.dataset,
        recipe=reference.recipe,
        config=config,
        epochs=reference.epochs,
        metrics=metrics,
        device=str(dev),
        wall_seconds=time.perf_counter() - start,
        versions=solutions.versions(),
        anchors=list(anchor_ids),
        source_id=reference.id,
    )
    reporter.log(
        f"soup of {','.join(map(str, anchor_ids))}: solution {sol.id}  train loss {metrics['train_loss']:.4f}"
        f"  test acc {metrics['test_acc']:.1f}%"
    )
    return sol, created


def _aligned(reference, ref_state: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from .alignment import align_state

    return align_state(reference.arch, reference.arch_kwargs, ref_state, state)


def compare(
    reg, soup_id: int, held_out: list[int], star: int | None = None, align: str = "auto", device: str = "auto", reporter=None
) -> dict[str, Any]:
    """The soup's held-out barriers and own metrics next to the star's (when given) and the regular
    anchor–held-out baseline: one row per candidate center. With align "auto", pairs are weight-matched
    (the paper's protocol) wherever the architecture has a permutation spec."""
    from . import barriers, solutions

    soup_sol = solutions.get(reg, soup_id)
    candidates = [("soup", soup_sol)] + ([("star", solutions.get(reg, star))] if star is not None else [])
    rows: list[dict[str, Any]] = []
    regular = None
    for name, sol in candidates:
        result = barriers.measure(
            reg, star=sol.id, held_out=held_out, baseline="anchors", align=align, device=device, reporter=reporter
        )
        summary = result["summary"]
        resolved = result["settings"]["align"]
        regular = regular or summary.get("regular-held-out")
        rows.append(_row(name, sol, summary.get("star-held-out") or {}))
    if regular:
        anchors = solutions.get_many(reg, soup_sol.anchors)
        mean = {k: sum(a.metrics[k] for a in anchors) / len(anchors) for k in ("train_loss", "test_acc")}
        rows.append(_row("regular (anchors)", None, regular, mean))
    return {"held_out": held_out, "align": resolved, "columns": list(rows[0]), "rows": rows}


def _row(name: str, sol, summary: dict[str, Any], metrics: dict[str, float] | None = None) -> dict[str, Any]:
    metrics = metrics or (sol.metrics if sol is not None else {})
    row: dict[str, Any] = {"center": name, "id": sol.id if sol is not None else None}
    for split in ("train", "test"):
        stat = (summary.get(split) or {}).get("loss_barrier") or {}
        row[f"{split} loss barrier"] = stat.get("mean")
        row[f"{split} barrier std"] = stat.get("std")
    row["train loss"] = metrics.get("train_loss")
    row["test acc"] = metrics.get("test_acc")
    return row
