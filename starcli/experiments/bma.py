"""Bayesian model averaging over a star domain, against the deep ensemble of its anchors and the star alone.

The paper's "star domain BMA": draw an anchor θn and a t, take the network (1−t)θ⋆ + t·θn on the
segment from the star, and average the softmax outputs of many such draws. If the star domain is a
set of good solutions, the average is a cheap posterior sample average (one stored star plus the
anchors it was built from). The paper reports better AUROC of confidence than the deep ensemble but
worse ECE; `run` measures both, plus accuracy and NLL, for all three predictors.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from starcli.alignment import align_state
from starcli.engine import data, devices, evaluation
from starcli.engine.calibration import ECE_BINS, calibration, softmax
from starcli.engine.data import load_split
from starcli.engine.interpolation import interpolate_state
from starcli.engine.starlight import TSampling
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.registry import Registry
from starcli.solutions import records

# Each sample is one full evaluation pass; 10,000 is already hours on CIFAR and far past where the average settles.
MAX_SAMPLES = 10_000


def check_samples(samples: int) -> None:
    """BMA averages `samples` networks: 1 to MAX_SAMPLES (a usage error before any work)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_SAMPLES:
        raise UsageError(f"--samples must be an integer from 1 to {MAX_SAMPLES:,}, got {samples}")


def run(
    reg: Registry,
    star_id: int,
    samples: int = 32,
    seed: int = 0,
    split: str = "test",
    t_sampling: str = "uniform",
    bn_calibration: str | int = "full",
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Accuracy, NLL, ECE and AUROC on `split` of: the star alone, each anchor (mean over anchors), the
    deep ensemble of the anchors, and BMA over `samples` draws of (anchor, t) on the star's segments."""
    sampling = TSampling.parse(t_sampling)
    check_samples(samples)
    reporter = reporter or Reporter()
    star = records.get_star(reg, star_id, "to average over")
    if data.info(star.dataset).task != "classification":
        raise StarlightError(f"BMA compares classifiers; solution {star_id} is trained on regression data ({star.dataset})")
    anchors = records.get_many(reg, star.anchors)
    dev = devices.resolve(device)
    evaluation_split = load_split(star.dataset, split, dev, cache_dir=records.dataset_cache(reg))
    train = load_split(star.dataset, "train", dev, cache_dir=records.dataset_cache(reg))
    y = evaluation_split.y.cpu()

    net = records.network(reg, star, dev)
    star_state = {k: v.to(dev) for k, v in records.state_dict(reg, star).items()}
    anchor_states = [_as_star_saw_it(reg, star, a, star_state, dev) for a in anchors]
    bn = evaluation.has_batchnorm(net)
    bn_x = evaluation.calibration_subset(train.x, bn_calibration)

    def probs_of(state: dict[str, torch.Tensor], recalibrate: bool) -> torch.Tensor:
        net.load_state_dict(state)
        if recalibrate and bn:
            evaluation.recalibrate_bn(net, bn_x)
        return softmax(net, evaluation_split.x)

    task = reporter.task(f"bma star {star_id}", len(anchors) + samples + 1)
    star_p = probs_of(star_state, recalibrate=False)
    task.advance()
    anchor_ps = []
    for state in anchor_states:
        anchor_ps.append(probs_of(state, recalibrate=False))
        task.advance()
    rng = random.Random(seed)
    bma_p = torch.zeros_like(star_p)
    draws = []
    for _ in range(samples):
        n = rng.randrange(len(anchors))
        t = sampling.draw(rng)
        draws.append({"anchor": anchors[n].id, "t": round(t, 4)})
        # Interior points need fresh BatchNorm statistics: the stored ones belong to neither end.
        bma_p += probs_of(interpolate_state(star_state, anchor_states[n], t), recalibrate=0 < t < 1)
        task.advance()
    task.done()
    bma_p /= samples
    singles = [calibration(p, y) for p in anchor_ps]
    methods = {
        "star": calibration(star_p, y),
        "anchor (mean of singles)": {k: _mean([s[k] for s in singles]) for k in singles[0]},
        "deep ensemble": calibration(torch.stack(anchor_ps).mean(0), y),
        "bma": calibration(bma_p, y),
    }
    return {
        "star": star_id,
        "anchors": list(star.anchors),
        "split": split,
        "samples": samples,
        "seed": seed,
        "t_sampling": str(sampling),
        "ece_bins": ECE_BINS,
        "methods": methods,
        "draws": draws,
    }


def _as_star_saw_it(reg, star, anchor, star_state, device) -> dict[str, torch.Tensor]:
    """The anchor as the star was trained toward it: permuted to the star when the star aligned its
    anchors, else as stored (the paper's released configs do not align)."""
    state = {k: v.to(device) for k, v in records.state_dict(reg, anchor).items()}
    if not (star.config or {}).get("star", {}).get("align_anchors", False):
        return state
    return align_state(star.arch, star.arch_kwargs, star_state, state)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
