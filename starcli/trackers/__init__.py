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

Runs are named and grouped the way a sweep's users tell them apart: the name says what trained (`anchor w256
seed 3`), the group which command or sweep ran it, the job type its kind. A checkpoint artifact is named by its
sha256, as the registry stores it. Each tracker's own environment variables are respected (WANDB_PROJECT,
WANDB_ENTITY, WANDB_MODE; MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
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
EXPERIMENT = "starlight"  # the MLflow experiment and W&B project, unless MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT say
HISTORY_PREFIX = "epoch/"
CURVE_PREFIX = "curve/"


@dataclass(frozen=True)
class TrackedRun:
    """One solution: its resolved config, final metrics, per-epoch history and checkpoint file."""

    name: str  # e.g. "anchor w256 seed 3" (run_name)
    params: Mapping[str, Any] = field(default_factory=dict)  # the resolved training config, nested
    metrics: Mapping[str, float | None] = field(default_factory=dict)  # train_loss, train_acc, test_loss, test_acc
    history: Sequence[Mapping[str, Any]] = ()  # [{"epoch": 1, "train_loss": 0.7, "train_acc": 80.1}, …]
    checkpoint: str | Path | None = None  # a .safetensors file, logged as an artifact where the tracker has them
    tags: Mapping[str, Any] = field(default_factory=dict)  # kind, arch, dataset, seed, sha256
    group: str | None = None  # the sweep or command that ran it: W&B's group, a tag elsewhere
    job_type: str | None = None  # its kind (anchor, star, star-held-out, …): W&B's job type, a tag elsewhere


@dataclass(frozen=True)
class TrackedPair:
    """One barrier measurement between solutions a and b; its curves are step series (step = index of t)."""

    name: str  # e.g. "pair 3-7 (star)"
    params: Mapping[str, Any] = field(default_factory=dict)  # a_id, b_id, kind, settings
    metrics: Mapping[str, float | None] = field(default_factory=dict)  # test_loss_barrier, …, peak_loss
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)  # {"t": […], "test_loss": […]}
    tags: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None
    job_type: str | None = None


def run_name(kind: str, config: Mapping[str, Any] | None, seed: int | None, prefix: str = "") -> str:
    """What a run is, in the words a sweep's runs differ by: `anchor w256 seed 3`, `star w64 seed 1`."""
    width = ((config or {}).get("arch_kwargs") or {}).get("width")
    words = [kind] + ([f"w{width}"] if width is not None else []) + ([f"seed {seed}"] if seed is not None else [])
    return prefix + " ".join(words)


def labels(run: TrackedRun | TrackedPair) -> dict[str, str]:
    """The run's group and job type, for trackers that have no such fields (MLflow, TensorBoard): as tags."""
    return {k: v for k, v in (("group", run.group), ("job_type", run.job_type)) if v}


def experiment() -> str:
    """The MLflow experiment runs go to: $MLFLOW_EXPERIMENT_NAME, else "starlight"."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def default_dest(tracker: str, home: Path) -> str | Path:
    """Where a tracker writes when no --log-dir is given: MLflow's $MLFLOW_TRACKING_URI where it is set, else a
    folder in the home (W&B's WANDB_DIR is W&B's own business: its runs land where it says)."""
    if tracker == "mlflow" and os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return home / tracker


def value(v: Any) -> str | int | float | bool:
    """A parameter as trackers take it (scalars only): lists as JSON (`["paper"]`, `[5, 8]`), None as empty."""
    if isinstance(v, (bool, int, float, str)):
        return v
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), default=str)
    return str(v)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested config -> {"optimizer.lr": 0.1}; lists become JSON text and None an empty value (see `value`)."""
    out: dict[str, str | int | float | bool] = {}
    for key, v in params.items():
        name = f"{prefix}{key}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = value(v)
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        if checkpoint is None:
            self._finish(present(final_metrics), None, None)
        else:
            # The registry's blobs are named by their content's sha256; the artifact is named by it too.
            self._finish(present(final_metrics), Path(checkpoint), file_sha256(Path(checkpoint)))

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

    def _finish(self, metrics: dict[str, float], checkpoint: Path | None, sha256: str | None) -> None:
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
