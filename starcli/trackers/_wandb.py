"""Weights & Biases: offline unless WANDB_MODE says otherwise. An offline run is a folder dest/wandb/offline-run-…,
uploaded later (if ever) by the user with `wandb sync`; WANDB_MODE=online streams instead (with the user's own
login), WANDB_MODE=disabled writes nothing. The project is $WANDB_PROJECT (default "starlight"), the entity
$WANDB_ENTITY (default: the user's own).

Runs of one sweep or command share a group, and a run's job type is its kind, so W&B's grouping tells a sweep's
anchors and stars apart. Params go to the run's config (nested, as W&B shows them), per-epoch values to its history,
final metrics to its summary, the checkpoint to a model artifact named by its sha256 with policy "immutable": W&B
reads the file where it is when the run is synced instead of first copying it to its staging folder (checkpoints
are content-addressed and never change).
"""

from __future__ import annotations

import os
from pathlib import Path

import wandb

from . import EXPERIMENT, Logger, TrackedPair, TrackedRun

MAX_TAG = 64  # W&B rejects longer tags; the full values are in the config under "starlight"


def _settings() -> wandb.Settings:
    # no console capture, system-metrics sampling, git or code snapshots: a run records what starlight logs
    return wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True, save_code=False)


def mode() -> str:
    """$WANDB_MODE where the user set it (online, offline, disabled, …), else offline: nothing leaves the machine
    unless asked for."""
    return os.environ.get("WANDB_MODE") or "offline"


class WandbLogger(Logger):
    def __init__(self, run: TrackedRun | TrackedPair, dest: str | Path):
        folder = Path(dest).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        tags = [t for t in (f"{k}:{v}" for k, v in run.tags.items()) if len(t) <= MAX_TAG]
        self.mode = mode()
        self.run = wandb.init(
            mode=self.mode,
            dir=str(folder),
            project=os.environ.get("WANDB_PROJECT") or EXPERIMENT,
            entity=os.environ.get("WANDB_ENTITY") or None,
            name=run.name,
            group=run.group,
            job_type=run.job_type,
            config={**run.params, "starlight": {k: str(v) for k, v in run.tags.items()}},
            tags=tags,
            settings=_settings(),
            reinit="create_new",  # several runs in one process (export) without finishing each other
        )
        self.kind = run.job_type or "model"
        if self.mode == "online":
            self.location = getattr(self.run, "url", None) or str(folder)
        elif self.mode == "disabled":
            self.location = "W&B disabled (WANDB_MODE=disabled)"
        else:
            self.location = str(Path(self.run.dir).parent)

    def _log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def _finish(self, metrics: dict[str, float], checkpoint: Path | None, sha256: str | None) -> None:
        try:
            self.run.summary.update(metrics)
            if checkpoint is not None:
                artifact = wandb.Artifact(f"sha256-{sha256}", type="model", metadata={"sha256": sha256, "kind": self.kind})
                artifact.add_file(str(checkpoint.resolve()), name=f"{sha256}.safetensors", policy="immutable")
                self.run.log_artifact(artifact)
        except BaseException:
            self._abort()
            raise
        self.run.finish(exit_code=0)

    def _abort(self) -> None:
        self.run.finish(exit_code=1)


def open_logger(run: TrackedRun | TrackedPair, dest: str | Path) -> WandbLogger:
    return WandbLogger(run, dest)
