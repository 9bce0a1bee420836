"""starcli.trackers against the real libraries, offline: what each tracker wrote is read back through its own reader
(MlflowClient, TensorBoard's EventAccumulator, W&B's protobuf records in the offline .wandb file). A test of one
tracker is skipped where its extra is not installed, so the core suite runs on the core install."""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from starcli.errors import StarlightError, UsageError
from starcli.trackers import TRACKERS, TrackedPair, TrackedRun, default_dest, export, flatten, get, open_logger, run_name

PARAMS = {"arch": "mlp", "optimizer": {"name": "sgd", "lr": 0.1, "milestones": [5, 8]}, "warmup": None, "aug": False}
FLAT = {
    "arch": "mlp",
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1,
    "optimizer.milestones": "[5, 8]",
    "warmup": "",
    "aug": False,
}
HISTORY = [
    {"epoch": 1, "train_loss": 1.5, "train_acc": 40.0},
    {"epoch": 2, "train_loss": 0.75, "train_acc": 70.0},
    {"epoch": 3, "train_loss": 0.25},  # an epoch without accuracy: the series just has no point there
]
FINAL = {"train_loss": 0.125, "train_acc": 97.5, "test_loss": None, "test_acc": 91.25}  # test_loss was skipped
TAGS = {"kind": "anchor", "arch": "mlp", "dataset": "mnist1d", "seed": 3, "sha256": "ab" * 32}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    # a blob as the registry stores it: blobs/sha256/<2 hex>/<62 hex>.safetensors, not named by the whole digest
    tmp = tmp_path / "tensors.safetensors"
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(tmp))
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = tmp_path / "blobs" / "sha256" / sha[:2] / f"{sha[2:]}.safetensors"
    path.parent.mkdir(parents=True)
    tmp.rename(path)
    return path


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


NAME = "solution 3: anchor w32 seed 3"


def solution(checkpoint: Path | None, name: str = NAME) -> TrackedRun:
    return TrackedRun(name, PARAMS, FINAL, HISTORY, checkpoint, TAGS, group="sweep width-mnist1d", job_type="anchor")


@pytest.fixture
def needs_mlflow():
    pytest.importorskip("mlflow")


@pytest.fixture
def needs_tensorboard():
    pytest.importorskip("tensorboard")


PAIR = TrackedPair(
    "pair 3-7 (star)",
    {"a_id": 3, "b_id": 7, "kind": "star", "settings": {"points": 3, "splits": ["test"]}},
    {"test_loss_barrier": 0.5, "test_peak_loss": 1.25},
    {"t": [0.0, 0.5, 1.0], "test_loss": [0.25, 1.25, 0.5]},
)


def test_flatten_dotted_keys_and_values_not_python_reprs():
    assert flatten(PARAMS) == FLAT
    assert flatten({"tags": ["paper"], "splits": ("train", "test"), "note": None}) == {
        "tags": '["paper"]', "splits": '["train", "test"]', "note": ""
    }  # fmt: skip


def test_a_run_is_named_by_kind_width_and_seed():
    assert run_name("anchor", {"arch_kwargs": {"width": 256}}, 3) == "anchor w256 seed 3"
    assert run_name("star", {"arch_kwargs": {}}, 1) == "star seed 1"
    assert run_name("anchor", None, 2, prefix="solution 4: ") == "solution 4: anchor seed 2"


def test_mlflow_destination_and_experiment_come_from_its_environment(tmp_path, monkeypatch):
    from starcli.trackers import experiment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert default_dest("mlflow", tmp_path) == tmp_path / "mlflow" and experiment() == "starlight"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x/mlflow.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "widths")
    assert default_dest("mlflow", tmp_path) == "sqlite:///x/mlflow.db" and experiment() == "widths"
    assert default_dest("tensorboard", tmp_path) == tmp_path / "tensorboard"  # not MLflow's business


def test_unknown_tracker_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown tracker 'neptune'; choose one of mlflow, tensorboard, wandb"):
        get("neptune")


@pytest.mark.parametrize("tracker", list(TRACKERS))
def test_missing_library_is_one_line_naming_the_extra(tracker, monkeypatch):
    backend, library, _ = TRACKERS[tracker]
    monkeypatch.delitem(sys.modules, backend, raising=False)
    monkeypatch.setitem(sys.modules, library, None)  # `import library` now raises ModuleNotFoundError
    with pytest.raises(StarlightError) as e:
        get(tracker)
    assert str(e.value) == f"--log {tracker} needs {library}: pip install 'starlight-landscapes[{tracker}]'"
    with pytest.raises(StarlightError, match=rf"^--to {tracker} needs {library}:"):
        export(tracker, [PAIR], "unused")


def test_an_import_error_that_is_not_the_missing_library_is_not_hidden(monkeypatch, needs_tensorboard):
    monkeypatch.delitem(sys.modules, "starcli.trackers._tensorboard", raising=False)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # tensorboard is there; torch's side broke
    with pytest.raises(ImportError, match="torch.utils.tensorboard"):
        get("tensorboard")


def test_help_and_the_package_import_no_tracker_library():
    code = (
        "import sys, contextlib, io\n"
        "import starcli.trackers\n"
        "from starcli.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'wandb', 'tensorboard')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory) -> Path:
    """One SQLite store for the module: creating its tables takes MLflow several seconds."""
    pytest.importorskip("mlflow")
    return tmp_path_factory.mktemp("mlflow")


def _mlflow_run(folder: Path, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    return client, client.get_run(run_id)


def test_mlflow_export_reads_back_params_metrics_history_and_artifact(mlflow_dir, checkpoint, tmp_path):
    [location] = export("mlflow", [solution(checkpoint)], mlflow_dir)
    assert location.startswith(f"sqlite:///{mlflow_dir.resolve() / 'mlflow.db'} run ")
    client, run = _mlflow_run(mlflow_dir, location.split()[-1])

    assert run.info.run_name == NAME
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "starlight"
    assert run.data.params == {k: str(v) for k, v in FLAT.items()}  # MLflow stores params as strings
    assert run.data.metrics == {
        "train_loss": 0.125,
        "train_acc": 97.5,
        "test_acc": 91.25,
        "epoch/train_loss": 0.25,
        "epoch/train_acc": 70.0,
    }
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch/train_loss"))
    assert history == [(1, 1.5), (2, 0.75), (3, 0.25)]
    acc = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch/train_acc"))
    assert acc == [(1, 40.0), (2, 70.0)]
    final = client.get_metric_history(run.info.run_id, "test_acc")
    assert [(m.step, m.value) for m in final] == [(3, 91.25)]  # the final metrics sit at the last epoch
    assert {k: v for k, v in run.data.tags.items() if k.startswith("starlight.")} == {
        **{f"starlight.{k}": str(v) for k, v in TAGS.items()},
        "starlight.group": "sweep width-mnist1d",
        "starlight.job_type": "anchor",
    }

    [artifact] = client.list_artifacts(run.info.run_id)
    assert artifact.path == f"{sha_of(checkpoint)}.safetensors"  # named by its sha256, not after the blob file
    got = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path))
    assert Path(got).read_bytes() == checkpoint.read_bytes() and not Path(got).is_symlink()


def test_mlflow_pair_curve_is_a_step_series_and_a_given_uri_is_used_as_is(mlflow_dir):
    uri = f"sqlite:///{mlflow_dir.resolve() / 'mlflow.db'}"
    [location] = export("mlflow", [PAIR], uri)
    assert location.startswith(f"{uri} run ")
    client, run = _mlflow_run(mlflow_dir, location.split()[-1])
    assert run.data.params == {
        "a_id": "3",
        "b_id": "7",
        "kind": "star",
        "settings.points": "3",
        "settings.splits": '["test"]',  # a value, not a Python repr
    }
    curve = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve/test_loss"))
    assert curve == [(0, 0.25), (1, 1.25), (2, 0.5)]
    ts = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve/t"))
    assert ts == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert run.data.metrics["test_loss_barrier"] == 0.5 and run.data.metrics["test_peak_loss"] == 1.25


def test_mlflow_live_logger_streams_epochs_and_marks_a_crash_failed(mlflow_dir):
    with (
        pytest.raises(RuntimeError, match="boom"),
        open_logger("mlflow", solution(None, "crashing"), mlflow_dir) as log,
    ):
        log.log_epoch(1, {"train_loss": 2.0})
        log.log_epoch(2, {"train_loss": 1.0, "train_acc": None})
        raise RuntimeError("boom")
    client, run = _mlflow_run(mlflow_dir, log.location.split()[-1])
    assert run.info.status == "FAILED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch/train_loss"))
    assert history == [(1, 2.0), (2, 1.0)]
    assert "epoch/train_acc" not in run.data.metrics


def test_mlflow_experiment_name_from_the_environment(mlflow_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "width sweep")
    [location] = export("mlflow", [PAIR], mlflow_dir)
    client, run = _mlflow_run(mlflow_dir, location.split()[-1])
    assert client.get_experiment(run.info.experiment_id).name == "width sweep"


def test_mlflow_destination_folder_or_uri(tmp_path, needs_mlflow):
    from starcli.trackers._mlflow import tracking_uri

    folder = tmp_path / "runs"
    assert tracking_uri(folder) == (f"sqlite:///{folder}/mlflow.db", f"file://{folder}/artifacts")
    assert folder.is_dir()
    db = f"sqlite:///{tmp_path}/x/m.db"
    assert tracking_uri(db) == (db, f"file://{tmp_path}/x/artifacts")  # beside the database, not under ./mlruns
    assert tracking_uri("http://mlflow.lab:5000") == ("http://mlflow.lab:5000", None)


def test_a_finished_run_is_not_failed_by_a_later_error(mlflow_dir):
    with pytest.raises(RuntimeError), open_logger("mlflow", solution(None, "finished first"), mlflow_dir) as log:
        log.finish({"test_acc": 90.0})
        raise RuntimeError("after the run")
    _, run = _mlflow_run(mlflow_dir, log.location.split()[-1])
    assert run.info.status == "FINISHED"
    with pytest.raises(StarlightError, match="already finished"):
        log.finish({})


def test_missing_checkpoint_fails_the_run_with_one_line(mlflow_dir, tmp_path):
    log = open_logger("mlflow", solution(None, "no file"), mlflow_dir)
    with pytest.raises(StarlightError, match="does not exist; it cannot be logged"):
        log.finish(FINAL, checkpoint=tmp_path / "gone.safetensors")
    _, run = _mlflow_run(mlflow_dir, log.location.split()[-1])
    assert run.info.status == "FAILED"


# ---------------------------------------------------------------- TensorBoard


def _events(folder: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder)
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_export_scalars_per_epoch_hparams_and_text(tmp_path, checkpoint, needs_tensorboard):
    from tensorboard.plugins.hparams import plugin_data_pb2

    [folder] = export("tensorboard", [solution(checkpoint)], tmp_path / "tb")
    assert Path(folder) == tmp_path / "tb" / "solution-3-anchor-w32-seed-3"
    acc = _events(folder)
    # every value logged here is exact in float32, which is what event files hold
    assert _scalars(acc, "epoch/train_loss") == [(1, 1.5), (2, 0.75), (3, 0.25)]
    assert _scalars(acc, "epoch/train_acc") == [(1, 40.0), (2, 70.0)]
    assert _scalars(acc, "test_acc") == [(3, 91.25)]
    assert "test_loss" not in acc.Tags()["scalars"]

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()}
    assert hp["optimizer.lr"] == 0.1 and hp["optimizer.milestones"] == "[5, 8]" and hp["tag.kind"] == "anchor"
    assert hp["aug"] == "False" and hp["warmup"] == ""
    assert (hp["tag.group"], hp["tag.job_type"]) == ("sweep width-mnist1d", "anchor")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert sorted(m.name.tag for m in experiment.experiment.metric_infos) == ["test_acc", "train_acc", "train_loss"]

    text = acc.Tensors("checkpoint/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == f"sha256 {sha_of(checkpoint)}: {checkpoint.resolve()} ({checkpoint.stat().st_size} bytes)"


def test_tensorboard_same_name_gets_its_own_folder_and_pair_curve(tmp_path, needs_tensorboard):
    first, second = export("tensorboard", [PAIR, PAIR], tmp_path)
    assert (Path(first).name, Path(second).name) == ("pair-3-7-star", "pair-3-7-star-2")
    acc = _events(second)
    assert _scalars(acc, "curve/test_loss") == [(0, 0.25), (1, 1.25), (2, 0.5)]
    assert _scalars(acc, "test_loss_barrier") == [(2, 0.5)]


def test_tensorboard_live_logger(tmp_path, needs_tensorboard):
    with open_logger("tensorboard", solution(None, "live"), tmp_path) as log:
        for epoch, loss in [(1, 0.5), (2, 0.25)]:
            log.log_epoch(epoch, {"train_loss": loss})
        log.finish({"test_acc": 90.0})
    acc = _events(log.location)
    assert _scalars(acc, "epoch/train_loss") == [(1, 0.5), (2, 0.25)]
    assert _scalars(acc, "test_acc") == [(2, 90.0)]


# ---------------------------------------------------------------- W&B (offline)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep W&B's cache, staging and settings out of the home directory, and leave W&B's own variables unset:
    the runs are offline by default (there is no API key; online would fail loudly)."""
    pytest.importorskip("wandb")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_API_KEY", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")


def read_wandb(path: Path) -> list:
    """The records of an offline .wandb file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks of chunks,
    each with a 4-byte checksum, 2-byte length and 1-byte type) of wandb_internal_pb2.Record messages.
    Checksums are not verified."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    pos = 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def _history(records, key: str) -> list[tuple[int, float]]:
    import json

    out = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            if key in items:
                out.append((r.history.step.num, items[key]))
    return out


def _summary(records) -> dict:
    import json

    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for u in r.summary.update:
                out["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
    return out


def _one(records, kind: str):
    [record] = [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]
    return record


def finished_records(folder: str | Path, timeout: float = 30.0) -> list:
    """The records of a run finished in this process. wandb-core writes the file asynchronously: finish() returns
    before the last records are on disk (the process's exit waits for them), so wait for the exit record."""
    import time

    [path] = Path(folder).glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb(path) if path.stat().st_size >= 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_wandb_offline_export_history_summary_config_and_artifact(tmp_path, wandb_env, checkpoint):
    import json

    # In a process of its own, as `starlight export --to wandb` runs: once it has exited the file is complete.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from test_trackers import solution\n"
        "from starcli.trackers import export\n"
        "print(export('wandb', [solution(Path(sys.argv[2]))], sys.argv[3])[0])\n"
    )
    args = [sys.executable, "-c", code, str(Path(__file__).parent), str(checkpoint), str(tmp_path / "wb")]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert folder.parent == (tmp_path / "wb" / "wandb").resolve() and folder.name.startswith("offline-run-")
    [log_file] = folder.glob("run-*.wandb")
    records = read_wandb(log_file)

    run = _one(records, "run")
    assert run.display_name == NAME and run.project == "starlight"
    assert (run.run_group, run.job_type) == ("sweep width-mnist1d", "anchor")
    assert sorted(run.tags) == ["arch:mlp", "dataset:mnist1d", "kind:anchor", "seed:3"]  # sha256 is too long a tag
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["optimizer"] == {"name": "sgd", "lr": 0.1, "milestones": [5, 8]}
    assert config["starlight"]["sha256"] == "ab" * 32

    assert _history(records, "epoch/train_loss") == [(1, 1.5), (2, 0.75), (3, 0.25)]
    assert _history(records, "epoch/train_acc") == [(1, 40.0), (2, 70.0)]
    summary = _summary(records)
    assert {k: summary[k] for k in ("train_loss", "train_acc", "test_acc")} == {
        "train_loss": 0.125,
        "train_acc": 97.5,
        "test_acc": 91.25,
    }
    assert "test_loss" not in summary

    artifact = _one(records, "artifact")
    assert (artifact.type, artifact.name) == ("model", f"sha256-{sha_of(checkpoint)}")
    [entry] = artifact.manifest.contents
    assert entry.path == f"{sha_of(checkpoint)}.safetensors" and entry.size == checkpoint.stat().st_size
    assert entry.digest == base64.b64encode(hashlib.md5(checkpoint.read_bytes()).digest()).decode()
    assert entry.local_path == str(checkpoint.resolve())  # no staging copy ("immutable")
    assert _one(records, "exit").exit_code == 0


def test_wandb_pair_and_a_crashed_live_run(tmp_path, wandb_env):
    [folder] = export("wandb", [PAIR], tmp_path)
    records = finished_records(folder)
    assert _history(records, "curve/test_loss") == [(0, 0.25), (1, 1.25), (2, 0.5)]
    assert _summary(records)["test_loss_barrier"] == 0.5

    with pytest.raises(RuntimeError), open_logger("wandb", solution(None, "crashing"), tmp_path) as log:
        log.log_epoch(1, {"train_loss": 2.0})
        raise RuntimeError("boom")
    records = finished_records(log.location)
    assert _history(records, "epoch/train_loss") == [(1, 2.0)]
    assert _one(records, "exit").exit_code == 1


def test_wandb_takes_project_entity_and_mode_from_its_environment(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "landscapes")
    monkeypatch.setenv("WANDB_ENTITY", "lab")
    monkeypatch.setenv("WANDB_MODE", "offline")
    [folder] = export("wandb", [PAIR], tmp_path / "a")
    run = _one(finished_records(folder), "run")
    assert (run.project, run.entity) == ("landscapes", "lab")

    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's word wins over starlight's default (offline)
    [location] = export("wandb", [PAIR], tmp_path / "b")
    assert "disabled" in location and not list((tmp_path / "b").rglob("*.wandb"))


# ---------------------------------------------------------------- starlight's records -> the data model


def test_solution_run_from_a_real_registry_record(reg):
    import torch

    from starcli.solutions import records as solutions
    from starcli.trackers.records import solution_run

    sol, _ = solutions.add(
        reg, {"w": torch.ones(3)}, key="k", kind="anchor", arch="mlp", arch_kwargs={"width": 4}, width=4, seed=3,
        dataset="mnist1d", recipe="mnist1d-mlp", config={"lr": 0.1, "milestones": [2]}, epochs=2,
        metrics={"train_loss": 0.5, "train_acc": 90.0, "test_acc": 80.0}, device="cpu", wall_seconds=1.0, versions={},
    )  # fmt: skip
    run = solution_run(solutions.record(reg, sol, full=True), [{"epoch": 1, "train_loss": 0.9}])
    assert run.name == f"solution {sol.id}: anchor seed 3"  # its config has no width; a recipe's has
    assert (run.group, run.job_type) == ("export", "anchor")
    assert run.params == {"lr": 0.1, "milestones": [2]}
    assert run.metrics == {"train_loss": 0.5, "train_acc": 90.0, "test_loss": None, "test_acc": 80.0}
    assert Path(run.checkpoint).is_file()
    assert run.tags == {
        "kind": "anchor", "arch": "mlp", "dataset": "mnist1d", "seed": 3, "sha256": sol.sha256, "recipe": "mnist1d-mlp"
    }  # fmt: skip
    assert run.history == ({"epoch": 1, "train_loss": 0.9},)


def test_pair_runs_from_a_barrier_record():
    from starcli.engine.barriers import pair_record
    from starcli.solutions.barriers import settings_for
    from starcli.trackers.records import pair_runs

    settings = settings_for(3, ("test",), "full", 256, "none")
    result = {"t": [0.0, 0.5, 1.0], "test": {"loss": [0.25, 1.0, 0.75], "acc": [90.0, 50.0, 88.0]}}
    [pair] = pair_runs({"settings": settings, "pairs": [pair_record(3, 7, "star-held-out", result, ("test",))]})
    assert pair.name == "pair 3-7 (star-held-out)" and (pair.group, pair.job_type) == ("export", "star-held-out")
    assert pair.params == {"a_id": 3, "b_id": 7, "kind": "star-held-out", "settings": settings}
    # by hand: loss line at t=0.5 is 0.5, so 1.0 - 0.5; accuracy line at t=0.5 is 89, so 89 - 50
    assert pair.metrics == {"test_loss_barrier": 0.5, "test_acc_barrier": 39.0, "test_peak_loss": 1.0}
    assert pair.curves == {"t": [0.0, 0.5, 1.0], "test_loss": [0.25, 1.0, 0.75], "test_acc": [90.0, 50.0, 88.0]}
