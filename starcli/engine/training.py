"""Anchor training: one network from its seed, on the shared epoch loop (loop.py)."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from starcli import models

from . import compilation, evaluation, loop
from .data import Split
from .loop import ResumeFile


def fit(
    config: dict[str, Any],
    seed: int,
    device: torch.device,
    split: Split,
    resume: ResumeFile | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
) -> nn.Module:
    """Train one network from `seed`; returns it with its final weights (train mode).
    `on_epoch(epoch, mean_loss, train_acc)` as in `loop.run_epochs`."""
    torch.manual_seed(seed)  # the initialisation is the seed's alone
    model = loop.prepare_model(models.create(config["arch"], **config["arch_kwargs"]), device, config)
    optimizer = loop.build_optimizer(model.parameters(), config)
    start = resume.load(model, optimizer, device) if resume else 0
    forward = compilation.compiled(model, config, device.type)  # the model itself unless the config asks to compile

    def step_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = forward(x)
        return evaluation.loss_fn(outputs, y, label_smoothing=config["label_smoothing"]), evaluation.correct_count(outputs, y)

    return loop.run_epochs(
        model, optimizer, config, seed, device, split, step_loss, f"seed {seed}", "Lower --lr or check the data",
        start=start, resume=resume, on_epoch=on_epoch,
    )
