"""Mean cross-entropy and accuracy of a network on a whole split, in large inference batches."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EVAL_BATCH = 4096


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) with the model in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size]).float()
        yb = y[i : i + batch_size]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return loss_sum / len(x), 100.0 * correct / len(x)


def metrics(model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """{train_loss, train_acc, test_loss, test_acc} for the splits given."""
    out: dict[str, float] = {}
    for split, (x, y) in splits.items():
        out[f"{split}_loss"], out[f"{split}_acc"] = evaluate(model, x, y)
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> None:
    """Re-estimate BatchNorm running statistics on `x` (REPAIR / swa_utils.update_bn style).

    The reset comes first and momentum=None makes the estimate a cumulative (equal-weight) average
    over all of `x`: interpolated or freshly trained weights make the stored statistics meaningless,
    and an EMA would still remember them.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    # Near-equal chunks: the cumulative average weights batches equally, and a last batch of one
    # sample would make BatchNorm1d fail.
    for chunk in torch.tensor_split(x, max(1, -(-len(x) // batch_size))):
        model(chunk)
    model.train(was_training)
    for m, momentum in saved:
        m.momentum = momentum
