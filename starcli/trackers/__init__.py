"""Send starlight's results to the experiment trackers researchers already browse: MLflow, TensorBoard, W&B (offline).

Pure: it takes plain data (TrackedRun, TrackedPair) and never touches the registry, so the CLI builds the records
and this package only writes them. Each tracker's library is an optional extra imported only when that tracker is
used, so `starlight --help` never pays for it (mlflow alone takes seconds to import).

    export("mlflow", runs, dest)                  # finished solutions or barrier pairs, after the fact
    with open_logger("mlflow", run, dest) as log: # a training loop, streaming
        log.log_epoch(1, {"train_loss": 0.7})
        log.finish({"test_acc": 91.2}, checkpoint="…/ab12.safetensors")

Per-epoch values are logged as `epoch/<key>` at step = epoch, so the running training loss of an epoch never
mixes with the final metrics (`train_loss` evaluated on the whole set with the finished model). A pair's curve is
logged as `curve/<key>` at step = index of t.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Self

from ..errors import StarlightError, UsageError

# tracker name -> (backend module, the library it imports, the pyproject extra that installs it)
TRACKERS: dict[str, tuple[str, str, str]] = {
    "mlflow": ("starcli.trackers._mlflow", "mlflow", "mlflow"),
    "tensorboard": ("starcli.trackers._tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("starcli.trackers._wandb", "wandb", "wandb"),
}
EXPERIMENT = "starlight"  # MLflow experiment and W&B project the runs go to
HISTORY_PREFIX = "epoch/"
CURVE_PREFIX = "curve/"


@dataclass(frozen=True)
class TrackedRun:
    """One solution: its resolved config, final metrics, per-epoch history and checkpoint file."""

    name: str  # e.g. "solution 3 (anchor, seed 3)"
    params: Mapping[str, Any] = field(default_factory=dict)  # the resolved training config, nested
    metrics: Mapping[str, float | None] = field(default_factory=dict)  # train_loss, train_acc, test_loss, test_acc
    history: Sequence[Mapping[str, Any]] = ()  # [{"epoch": 1, "train_loss": 0.7, "train_acc": 80.1}, …]
    checkpoint: str | Path | None = None  # a .safetensors file, logged as an artifact where the tracker has them
    tags: Mapping[str, Any] = field(default_factory=dict)  # kind, arch, dataset, seed, sha256


@dataclass(frozen=True)
class TrackedPair:
    """One barrier measurement between solutions a and b; its curves are step series (step = index of t)."""

    name: str  # e.g. "pair 3-7 (star)"
    params: Mapping[str, Any] = field(default_factory=dict)  # a_id, b_id, kind, settings
    metrics: Mapping[str, float | None] = field(default_factory=dict)  # test_loss_barrier, …, peak_loss
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)  # {"t": […], "test_loss": […]}
    tags: Mapping[str, Any] = field(default_factory=dict)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested config -> {"optimizer.lr": 0.1}; lists and None become strings, since trackers take scalars only."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif isinstance(value, (list, tuple)):
            out[name] = str(list(value))
        else:
            out[name] = str(value)
    return out


def present(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that have a value (a skipped evaluation is None, and no tracker takes None)."""
    return {k: float(v) for k, v in metrics.items() if v is not None and not isinstance(v, bool)}


class Logger:
    """A live run in one tracker. Backends implement _log, _finish and _abort; `location` says where it went.

    As a context manager it marks the run failed when the block raises, so a crashed training is not left
    looking like a running or finished one.
    """

    location: str = ""
    closed = False  # after finish or abort: the run's status is settled, a later abort must not undo a finish

    def log_epoch(self, epoch: int, metrics: Mapping[str, float | None]) -> None:
        values = {HISTORY_PREFIX + k: v for k, v in present(metrics).items() if k != "epoch"}
        if values:
            self._log(int(epoch), values)

    def log_step(self, step: int, values: Mapping[str, float | None]) -> None:
        """Values under their own names at one step (a pair's curve)."""
        values = present(values)
        if values:
            self._log(int(step), values)

    def finish(self, final_metrics: Mapping[str, float | None], checkpoint: str | Path | None = None) -> None:
        if self.closed:
            raise StarlightError("this tracker run is already finished")
        if checkpoint is not None and not Path(checkpoint).is_file():
            self.abort()
            raise StarlightError(f"checkpoint {checkpoint} does not exist; it cannot be logged")
        self.closed = True
        self._finish(present(final_metrics), Path(checkpoint) if checkpoint is not None else None)

    def abort(self) -> None:
        """Mark the run failed (a no-op once it is finished or aborted)."""
        if not self.closed:
            self.closed = True
            self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _log(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def _finish(self, metrics: dict[str, float], checkpoint: Path | None) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


def get(name: str, option: str = "--log") -> ModuleType:
    """The backend module of a tracker; a missing library is one line naming the extra that installs it."""
    if name not in TRACKERS:
        raise UsageError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    module, library, extra = TRACKERS[name]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # Only the library's own absence is the user's to fix; anything else broken inside it is a bug to see.
        missing = getattr(e, "name", None)
        if missing is not None and missing.split(".")[0] != library:
            raise
        raise StarlightError(f"{option} {name} needs {library}: pip install 'starlight-landscapes[{extra}]'") from e


def open_logger(tracker: str, run: TrackedRun | TrackedPair, dest: str | Path, option: str = "--log") -> Logger:
    """Start a run in a tracker with the run's name, params and tags; dest is a folder (or an MLflow URI)."""
    return get(tracker, option).open_logger(run, dest)


def export(tracker: str, runs: Sequence[TrackedRun | TrackedPair], dest: str | Path, option: str = "--to") -> list[str]:
    """Write finished runs (history, final metrics, checkpoint) or pairs (curves, barriers); returns each location."""
    backend = get(tracker, option)
    locations = []
    for run in runs:
        with backend.open_logger(run, dest) as log:
            if isinstance(run, TrackedPair):
                columns = {k: list(v) for k, v in run.curves.items()}
                for i in range(max((len(v) for v in columns.values()), default=0)):
                    log.log_step(i, {CURVE_PREFIX + k: v[i] for k, v in columns.items() if i < len(v)})
                log.finish(run.metrics)
            else:
                for row in run.history:
                    log.log_epoch(int(row["epoch"]), row)
                log.finish(run.metrics, run.checkpoint)
            locations.append(log.location)
    return locations
