"""The aligned average ("model soup") of the anchors: the baseline star candidate the paper lacked.

Reviewers asked whether a star needs training at all: permute every anchor to one reference anchor
(weight matching), average the weights, re-estimate BatchNorm statistics, and test the average against
the same held-outs as the star. If it connected as well, Starlight's optimisation would be unnecessary.
"""

from __future__ import annotations

import time

import torch

from starcli import models
from starcli.alignment import align_state, has_spec
from starcli.engine import devices, evaluation
from starcli.engine.data import load_split
from starcli.engine.interpolation import average
from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError
from starcli.progress import Reporter
from starcli.registry import Registry, Solution

from . import records

SOUP_VERSION = 1  # part of the idempotency key: bump when the construction changes


ALIGN_CHOICES = ("auto", "weight", "none")  # as barrier's --align: auto is weight wherever a spec exists


def aligns(align: bool | str, arch: str, arch_kwargs: dict) -> bool:
    """Whether the soup permutes its anchors: `align` as barrier's --align spells it (auto, weight, none),
    or a bool (the form the soup's key and config have always held, so existing soups keep their keys)."""
    if isinstance(align, bool):
        return align
    if align not in ALIGN_CHOICES:
        raise StarlightError(f"--align must be one of {', '.join(ALIGN_CHOICES)}, got {align!r}")
    return align == "weight" or (align == "auto" and has_spec(arch, arch_kwargs))


def soup_key(anchor_ids: list[int], align: bool, bn_calibration: str | int) -> str:
    return config_hash(
        {"kind": "soup", "anchors": list(anchor_ids), "align": align, "bn_calibration": bn_calibration, "v": SOUP_VERSION}
    )


def build_soup(
    reg: Registry,
    anchor_ids: list[int],
    align: bool | str = "auto",
    bn_calibration: str | int = "full",
    device: str = "auto",
    reporter: Reporter | None = None,
) -> tuple[Solution, bool]:
    """Register (kind `soup`) the average of `anchor_ids`, each aligned to the first; returns
    (solution, created). The same anchors and settings return the registered soup unchanged.
    `align`: auto | weight | none (or a bool), as barrier's --align."""
    reporter = reporter or Reporter()
    if len(anchor_ids) < 2:
        raise StarlightError(f"a soup averages at least 2 anchors, got {len(anchor_ids)}; pass e.g. --anchors 1-5")
    if len(set(anchor_ids)) != len(anchor_ids):
        raise StarlightError("the same anchor is listed twice; each anchor enters the soup once")
    anchors = records.get_many(reg, anchor_ids)
    reference = anchors[0]
    align = aligns(align, reference.arch, reference.arch_kwargs)
    key = soup_key(anchor_ids, align, bn_calibration)
    existing = records.by_key(reg, key)
    if existing is not None:
        reporter.log(f"soup of {','.join(map(str, anchor_ids))}: already registered as solution {existing.id}")
        return existing, False
    records.require_same_task(anchors, "soup anchors")
    if align:
        if not has_spec(reference.arch, reference.arch_kwargs):
            raise StarlightError(
                f"no permutation spec for {reference.arch}: cannot align the anchors; pass --align none for a plain average"
            )
    dev = devices.resolve(device)
    start = time.perf_counter()
    task = reporter.task(f"soup of {len(anchors)} anchors", len(anchors) + 1)
    ref_state = records.state_dict(reg, reference)
    states = [ref_state]
    task.advance()
    for other in anchors[1:]:
        state = records.state_dict(reg, other)
        states.append(_aligned(reference, ref_state, state) if align else state)
        task.advance()
    model = models.create(reference.arch, **reference.arch_kwargs)
    model.load_state_dict(average(states))
    model = model.to(dev)
    train = load_split(reference.dataset, "train", dev, cache_dir=records.dataset_cache(reg))
    test = load_split(reference.dataset, "test", dev, cache_dir=records.dataset_cache(reg))
    if evaluation.has_batchnorm(model):
        # The averaged weights never produced the stored statistics; the average of statistics is not
        # the statistics of the average.
        evaluation.recalibrate_bn(model, evaluation.calibration_subset(train.x, bn_calibration))
    metrics = evaluation.metrics(model, {"train": (train.x, train.y), "test": (test.x, test.y)})
    task.done()
    config = dict(reference.config or {})
    config["soup"] = {"anchors": list(anchor_ids), "reference": reference.id, "align": align, "bn_calibration": bn_calibration}
    sol, created = records.register(
        reg, model.state_dict(), key=key, kind="soup", **records.task_of(reference), config=config,
        epochs=reference.epochs, metrics=metrics, device=str(dev), wall_seconds=time.perf_counter() - start,
        anchors=list(anchor_ids), source_id=reference.id,
    )
    reporter.log(
        f"soup of {','.join(map(str, anchor_ids))}: solution {sol.id}  train loss {metrics['train_loss']:.4f}"
        f"  test acc {metrics['test_acc']:.1f}%"
    )
    return sol, created


def _aligned(reference, ref_state: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return align_state(reference.arch, reference.arch_kwargs, ref_state, state)


