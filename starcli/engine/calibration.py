"""How good and how honest a classifier's probabilities are: accuracy, NLL, ECE and the AUROC of its
confidence. Star-domain BMA (starcli/experiments/bma.py) compares its predictors with them."""

from __future__ import annotations

import torch
import torch.nn as nn

ECE_BINS = 15


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


