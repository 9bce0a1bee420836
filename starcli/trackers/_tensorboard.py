"""TensorBoard: event files under dest, one subfolder per run (`tensorboard --logdir dest` shows them side by side).

Params go to the HParams tab (with the final metrics as its metrics) and, in full, to the Text tab; the group and
job type are the hparams `tag.group` and `tag.job_type`. TensorBoard has no artifact store, so a checkpoint is
recorded by its sha256, path and size, not copied.
"""

from __future__ import annotations

import re
from pathlib import Path

import tensorboard  # noqa: F401  (torch.utils.tensorboard's own ImportError does not name the missing module)
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from . import Logger, TrackedPair, TrackedRun, flatten, labels


def run_folder(dest: str | Path, name: str) -> Path:
    """Create a fresh subfolder named after the run; the same name again gets -2, -3, … (no mixed events)."""
    slug = re.sub(r"[^\w.-]+", "-", name).strip("-") or "run"
    root = Path(dest).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        folder = root / (slug if n == 1 else f"{slug}-{n}")
        try:
            folder.mkdir()  # atomic: two loggers of the same name never share a folder
            return folder
        except FileExistsError:
            n += 1


def _markdown(params: dict) -> str:
    return "\n".join(["| param | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in params.items()])


class TensorBoardLogger(Logger):
    def __init__(self, run: TrackedRun | TrackedPair, dest: str | Path):
        folder = run_folder(dest, run.name)
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)  # a live run shows up within seconds
        self.location = str(folder)
        params = flatten({**run.params, **{f"tag.{k}": v for k, v in {**run.tags, **labels(run)}.items()}})
        # torch's hparams() files a bool as the number 0/1; as text it reads back as what was set
        self.params = {k: str(v) if isinstance(v, bool) else v for k, v in params.items()}
        self.writer.add_text("run", run.name)
        self.writer.add_text("params", _markdown(self.params))
        self.last_step = 0

    def _log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.last_step = max(self.last_step, step)

    def _finish(self, metrics: dict[str, float], checkpoint: Path | None, sha256: str | None) -> None:
        # add_hparams would write its metrics at step 0 into a timestamped subfolder; this keeps them in the
        # run's own folder, at the last epoch, under the names the HParams tab looks up.
        for summary in hparams(self.params, metrics):  # (experiment, session start, session end)
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, self.last_step)
        if checkpoint is not None:
            self.writer.add_text("checkpoint", f"sha256 {sha256}: {checkpoint.resolve()} ({checkpoint.stat().st_size} bytes)")
        self.writer.close()

    def _abort(self) -> None:
        self.writer.add_text("status", "failed")
        self.writer.close()


def open_logger(run: TrackedRun | TrackedPair, dest: str | Path) -> TensorBoardLogger:
    return TensorBoardLogger(run, dest)
