"""MLflow: runs in the experiment $MLFLOW_EXPERIMENT_NAME (default "starlight") of a tracking store, through
MlflowClient (no global active run).

dest is a tracking URI the user gives (--log-dir, else $MLFLOW_TRACKING_URI: sqlite:///…, http://…, file:…) or a
folder, which gets a SQLite store (mlflow.db) and its artifacts beside it: MLflow 3 refuses the plain file store
unless MLFLOW_ALLOW_FILE_STORE is set. MLflow has no run groups: the group and job type are the run's tags
`starlight.group` and `starlight.job_type`, beside its kind, seed and sha256. The checkpoint is the artifact
`<sha256>.safetensors`.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

# A local store has no business phoning home; a user who wants telemetry can still set it to false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: F401  (the import that fails when the extra is missing)
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from . import Logger, TrackedPair, TrackedRun, experiment, flatten, labels

# MLflow's limits: a param value of at most 6000 characters, batches of at most 100 params / 1000 metrics.
MAX_PARAM = 6000
_BAD_KEY = re.compile(r"[^\w\-. /:]")


def tracking_uri(dest: str | Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment, or None to let the store decide)."""
    text = str(dest)
    if re.match(r"^[a-z][a-z0-9+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):  # a URI, not C:\…
        if text.startswith("sqlite:///"):
            # MLflow would put a new experiment's artifacts under ./mlruns of whatever the working directory is
            return text, (Path(text[len("sqlite:///") :]).resolve().parent / "artifacts").as_uri()
        return text, None  # a server or file store decides where artifacts go
    folder = Path(text).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def _key(name: str) -> str:
    return _BAD_KEY.sub("_", name)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


class MlflowLogger(Logger):
    def __init__(self, run: TrackedRun | TrackedPair, dest: str | Path):
        uri, artifacts = tracking_uri(dest)
        self.client = MlflowClient(tracking_uri=uri)
        name = experiment()
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
        tags = {_key(f"starlight.{k}"): str(v) for k, v in {**run.tags, **labels(run)}.items()}
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        self.location = f"{uri} run {self.run_id}"
        params = [Param(_key(k), str(v)[:MAX_PARAM]) for k, v in flatten(run.params).items()]
        for chunk in _chunks(params, 100):
            self.client.log_batch(self.run_id, params=chunk)
        self.last_step = 0

    def _metrics(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, now, step) for k, v in values.items()]
        for chunk in _chunks(metrics, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)

    def _log(self, step: int, values: dict[str, float]) -> None:
        self._metrics(step, values)
        self.last_step = max(self.last_step, step)

    def _finish(self, metrics: dict[str, float], checkpoint: Path | None, sha256: str | None) -> None:
        try:
            if metrics:
                self._metrics(self.last_step, metrics)  # the final metrics belong to the last epoch
            if checkpoint is not None:
                # MLflow names an artifact after its file; a link named by the sha256 gives it the registry's name
                # (the store copies or uploads what the link points to).
                with tempfile.TemporaryDirectory() as tmp:
                    link = Path(tmp) / f"{sha256}.safetensors"
                    link.symlink_to(checkpoint.resolve())
                    self.client.log_artifact(self.run_id, str(link))
        except BaseException:
            self._abort()
            raise
        self.client.set_terminated(self.run_id, "FINISHED")

    def _abort(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


def open_logger(run: TrackedRun | TrackedPair, dest: str | Path) -> MlflowLogger:
    return MlflowLogger(run, dest)
