"""Weights & Biases, offline only: each run is a folder dest/wandb/offline-run-…, uploaded later (if ever) by the
user with `wandb sync`. Never online: the mode is passed to wandb.init itself, which outranks WANDB_MODE.

Params go to the run's config (nested, as W&B shows them), per-epoch values to its history, final metrics to its
summary, the checkpoint to a model artifact with policy "immutable": W&B reads the file where it is when the run is
synced instead of first copying it to its staging folder (checkpoints are content-addressed and never change).
"""

from __future__ import annotations

import re
from pathlib import Path

import wandb

from . import EXPERIMENT, Logger, TrackedPair, TrackedRun

MAX_TAG = 64  # W&B rejects longer tags; the full values are in the config under "starlight"


def _settings() -> wandb.Settings:
    # no console capture, system-metrics sampling, git or code snapshots: a run records what starlight logs
    return wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True, save_code=False)


class WandbLogger(Logger):
    def __init__(self, run: TrackedRun | TrackedPair, dest: str | Path):
        folder = Path(dest).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        tags = [t for t in (f"{k}:{v}" for k, v in run.tags.items()) if len(t) <= MAX_TAG]
        self.run = wandb.init(
            mode="offline",
            dir=str(folder),
            project=EXPERIMENT,
            name=run.name,
            config={**run.params, "starlight": {k: str(v) for k, v in run.tags.items()}},
            tags=tags,
            settings=_settings(),
            reinit="create_new",  # several runs in one process (export) without finishing each other
        )
        self.name = re.sub(r"[^\w.-]+", "-", run.name).strip("-") or "run"
        self.location = str(Path(self.run.dir).parent)

    def _log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def _finish(self, metrics: dict[str, float], checkpoint: Path | None) -> None:
        try:
            self.run.summary.update(metrics)
            if checkpoint is not None:
                artifact = wandb.Artifact(self.name, type="model")
                artifact.add_file(str(checkpoint.resolve()), policy="immutable")
                self.run.log_artifact(artifact)
        except BaseException:
            self._abort()
            raise
        self.run.finish(exit_code=0)

    def _abort(self) -> None:
        self.run.finish(exit_code=1)


def open_logger(run: TrackedRun | TrackedPair, dest: str | Path) -> WandbLogger:
    return WandbLogger(run, dest)
