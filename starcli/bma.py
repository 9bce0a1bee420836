"""Bayesian model averaging over a star domain, against the deep ensemble of its anchors and the star alone.

The paper's "star domain BMA": draw an anchor θn and a t, take the network (1−t)θ⋆ + t·θn on the
segment from the star, and average the softmax outputs of many such draws. If the star domain is a
set of good solutions, the average is a cheap posterior sample average (one stored star plus the
anchors it was built from). The paper reports better AUROC of confidence than the deep ensemble but
worse ECE; `run` measures both, plus accuracy and NLL, for all three predictors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .errors import StarlightError

ECE_BINS = 15


def interpolate_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """(1−t)·a + t·b for floating tensors; integer buffers (BatchNorm's step counter) are taken from a,
    never interpolated."""
    return {k: torch.lerp(v, b[k], t) if v.is_floating_point() else v.clone() for k, v in a.items()}


def calibration(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> dict[str, float]:
    """Accuracy (%), NLL, ECE (%, equal-width confidence bins) and the AUROC of the confidence
    (max softmax) as a score separating correct from wrong predictions."""
    probs = probs.double().clamp_min(1e-12)
    conf, pred = probs.max(1)
    correct = (pred == y).double()
    nll = float(-probs.gather(1, y.view(-1, 1)).log().mean())
    edges = torch.linspace(0, 1, bins + 1, dtype=probs.dtype)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += float(in_bin.double().mean() * (conf[in_bin].mean() - correct[in_bin].mean()).abs())
    return {"acc": 100.0 * float(correct.mean()), "nll": nll, "ece": 100.0 * ece, "auroc": auroc(conf, correct)}


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half); None when
    one class is empty (a model right on every sample has no wrong predictions to separate)."""
    score, positive = score.double(), positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    # Mann-Whitney U with average ranks for ties: exact, no sklearn import, O(n log n).
    order = torch.argsort(score)
    ranks = torch.empty_like(score)
    ranks[order] = torch.arange(1, len(score) + 1, dtype=score.dtype)
    sorted_scores = score[order]
    uniq, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


@torch.inference_mode()
def softmax(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).float().softmax(1) for i in range(0, len(x), batch_size)]).cpu()


def run(
    reg,
    star_id: int,
    samples: int = 32,
    seed: int = 0,
    split: str = "test",
    t_sampling: str = "uniform",
    bn_calibration: str | int = "full",
    device: str = "auto",
    reporter=None,
) -> dict[str, Any]:
    """Accuracy, NLL, ECE and AUROC on `split` of: the star alone, each anchor (mean over anchors), the
    deep ensemble of the anchors, and BMA over `samples` draws of (anchor, t) on the star's segments."""
    import random

    from . import data, devices, evaluation, solutions, training
    from .progress import Reporter
    from .star import TSampling

    sampling = TSampling.parse(t_sampling)
    if samples < 1:
        raise StarlightError(f"--samples must be at least 1, got {samples}")
    reporter = reporter or Reporter()
    star = solutions.get_star(reg, star_id, "to average over")
    if data.info(star.dataset).task != "classification":
        raise StarlightError(f"BMA compares classifiers; solution {star_id} is trained on regression data ({star.dataset})")
    anchors = solutions.get_many(reg, star.anchors)
    dev = devices.resolve(device)
    evaluation_split = training.load_split(star.dataset, split, dev, home=reg.home)
    train = training.load_split(star.dataset, "train", dev, home=reg.home)
    y = evaluation_split.y.cpu()

    net = solutions.network(reg, star, dev)
    star_state = {k: v.to(dev) for k, v in solutions.state_dict(reg, star).items()}
    anchor_states = [_as_star_saw_it(reg, star, a, star_state, dev) for a in anchors]
    bn = evaluation.has_batchnorm(net)
    bn_x = train.x if bn_calibration == "full" else train.x[: int(bn_calibration)]

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
    from . import solutions

    state = {k: v.to(device) for k, v in solutions.state_dict(reg, anchor).items()}
    if not (star.config or {}).get("star", {}).get("align_anchors", False):
        return state
    from .alignment import align_state

    return align_state(star.arch, star.arch_kwargs, star_state, state)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
