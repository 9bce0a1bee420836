"""Mean loss and accuracy of a network on a whole split, in large inference batches.

Classification (integer labels): cross-entropy and accuracy. Regression (floating targets, datasets
with task "regression"): mean squared error and R² in percent, reported where accuracy would be, so
that every table, curve and accuracy barrier keeps its meaning (higher is better).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import precision

EVAL_BATCH = 4096
CALIBRATION_SEED = 0  # the fixed subset behind every `--bn-calibration N`


def loss_fn(
    outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    """The one loss of training, star training and evaluation, chosen by the targets' dtype.

    Integer targets are class labels: cross-entropy. Floating targets are regression values: squared
    error averaged over output dimensions, per sample. Dispatching on the data means no loop has to be
    told which task it runs.
    """
    if targets.is_floating_point():
        per_sample = (outputs.float() - targets.float()).pow(2).flatten(1).mean(1)
        return {"mean": per_sample.mean, "sum": per_sample.sum}.get(reduction, lambda: per_sample)()
    return F.cross_entropy(outputs, targets, reduction=reduction, label_smoothing=label_smoothing)


def correct_count(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """How many of a batch's samples the outputs classify right (argmax over the last axis), as a tensor
    left on the device so that a training loop can sum it without waiting; per leading axis for stacked
    (N, B, C) outputs. None for regression targets, where there is no accuracy to count for free."""
    if targets.is_floating_point():
        return None
    return (outputs.detach().argmax(-1) == targets).sum(-1)


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH, config: dict | None = None
) -> tuple[float, float]:
    """(mean loss, accuracy in %) with the model in eval mode; for regression, (MSE, R² in %).
    `config`: the solution's, for its precision and memory format (engine/precision.py)."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    regression = y.is_floating_point()
    for i in range(0, len(x), batch_size):
        with precision.autocast(x.device, config):
            logits = model(precision.inputs(x[i : i + batch_size], config)).float()
        yb = y[i : i + batch_size]
        loss_sum += loss_fn(logits, yb, reduction="sum").item()
        if not regression:
            correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    if regression:
        variance = (y.float() - y.float().mean(0)).pow(2).flatten(1).mean(1).mean().item()
        return loss_sum / len(x), 100.0 * (1.0 - (loss_sum / len(x)) / variance)
    return loss_sum / len(x), 100.0 * correct / len(x)


def metrics(
    model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], config: dict | None = None
) -> dict[str, float]:
    """{train_loss, train_acc, test_loss, test_acc} for the splits given, in `config`'s precision."""
    out: dict[str, float] = {}
    for split, (x, y) in splits.items():
        out[f"{split}_loss"], out[f"{split}_acc"] = evaluate(model, x, y, config=config)
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, config: dict | None = None, rows: int | None = None
) -> None:
    """Re-estimate BatchNorm running statistics on `x` (REPAIR / swa_utils.update_bn style).

    The reset comes first and momentum=None makes the estimate a cumulative (equal-weight) average
    over all of `x`: interpolated or freshly trained weights make the stored statistics meaningless,
    and an EMA would still remember them. `config`: the solution's, for its precision and memory format.

    `rows` (CPUs): compute each calibration batch `rows` samples at a time where that gives the same
    numbers — convolutions and linear layers row chunk by row chunk (the same outputs: bit for bit with this
    machine's kernels), and
    each BatchNorm's batch statistics merged from row chunks instead of PyTorch's train-mode kernel
    (equal to float32 rounding, ~1e-6 relative: tests/test_barriers.py). A 4,096-row batch's
    activations (20 MB a layer for the MNIST-1D CNN) then stream through the cache in slices: the demo
    CNN's barrier took 1.2× less CPU time (benchmarks/bench_barrier.py --recipe mnist1d-cnn). Same batches,
    so the same estimate; None: PyTorch's own path (stars and soups keep their bits).
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
    patched = _stream_rows(model, bns, rows) if rows else []
    try:
        # Near-equal chunks: the cumulative average weights batches equally, and a last batch of one
        # sample would make BatchNorm1d fail.
        for chunk in torch.tensor_split(x, max(1, -(-len(x) // batch_size))):
            with precision.autocast(chunk.device, config):
                model(precision.inputs(chunk, config))
    finally:
        for m, previous in patched:
            if previous is None:
                del m.forward  # back to the class's forward
            else:
                m.forward = previous
    model.train(was_training)
    for m, momentum in saved:
        m.momentum = momentum


def _stream_rows(model: nn.Module, bns: list[nn.Module], rows: int) -> list[tuple[nn.Module, object]]:
    """Give the model's convolutions, linear layers and BatchNorms (with running statistics) a forward
    that works `rows` samples at a time (see recalibrate_bn); returns (module, the instance forward it
    had, or None) for each module patched, to be put back."""
    patched = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            patched.append((m, vars(m).get("forward")))
            m.forward = _row_chunked(m.forward, rows)
    for m in bns:
        if m.track_running_stats:
            patched.append((m, vars(m).get("forward")))
            m.forward = _streamed_batch_norm(m, rows)
    return patched


def _row_chunked(forward, rows: int):
    def chunked(x: torch.Tensor) -> torch.Tensor:
        if len(x) <= rows:
            return forward(x)
        return torch.cat([forward(part) for part in x.split(rows)])

    return chunked


def _streamed_batch_norm(m: nn.modules.batchnorm._BatchNorm, rows: int):
    """Train-mode BatchNorm with momentum None: normalise with the batch's mean and biased variance, and
    fold the mean and unbiased variance into the running statistics as a cumulative average (the
    arithmetic of PyTorch's kernel). The statistics come from row chunks that stay in the cache: each
    chunk's mean and centred sum of squares in float32 (vectorised, and centred so that a large mean
    does not cancel the variance away), merged in float64 (Chan et al.'s pairwise update)."""
    original = type(m).forward

    def forward(h: torch.Tensor) -> torch.Tensor:
        if h.dtype != torch.float32 or m.momentum is not None:
            return original(m, h)  # reduced precision or an EMA: PyTorch's kernel, as without `rows`
        dims = [0] + list(range(2, h.dim()))
        shape = [1, -1] + [1] * (h.dim() - 2)
        count, mean, m2 = 0, None, None
        for part in h.split(rows):
            n = part.numel() // part.shape[1]
            part_mean = part.mean(dims)
            part_m2 = (part - part_mean.view(shape)).square_().sum(dims).double()
            part_mean = part_mean.double()
            if mean is None:
                count, mean, m2 = n, part_mean, part_m2
                continue
            total = count + n
            delta = part_mean - mean
            mean = mean + delta * (n / total)
            m2 = m2 + part_m2 + delta.square() * (count * n / total)
            count = total
        var = m2 / count
        m.num_batches_tracked.add_(1)
        factor = 1.0 / float(m.num_batches_tracked)
        m.running_mean.mul_(1 - factor).add_(mean.float(), alpha=factor)
        m.running_var.mul_(1 - factor).add_((m2 / max(count - 1, 1)).float(), alpha=factor)
        # Normalising is elementwise: one call over the whole batch, in PyTorch's eval-mode kernel.
        return F.batch_norm(h, mean.float(), var.float(), m.weight, m.bias, False, 0.0, m.eps)

    return forward


def calibration_subset(x: torch.Tensor, size: str | int) -> torch.Tensor:
    """The samples BatchNorm statistics are re-estimated on: all of `x` ("full"), or a fixed seeded random
    subset of `size` of them — the one definition behind `--bn-calibration` in barriers, soups and BMA.

    Random rather than the first N: datasets stored by class would otherwise calibrate on a few classes.
    """
    if size == "full" or int(size) >= len(x):
        return x
    g = torch.Generator().manual_seed(CALIBRATION_SEED)
    return x[torch.randperm(len(x), generator=g)[: int(size)].to(x.device)]
