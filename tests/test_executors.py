"""Executors: the same seeds trained by a local process pool, submitit (local/debug) and a local Ray
all land in one registry, and resubmitting them is a no-op."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from starcli.engine import recipes
from starcli.errors import StarlightError, UsageError
from starcli.solutions import anchors as anchor_training
from starcli.runners import jobs as runner_jobs
from starcli.runners import local, options
from starcli.runners.options import RunOptions
from starcli.solutions import records, training


@pytest.fixture
def config(tiny_config):
    """Seconds per seed: MNIST-1D MLP, width 16, 2 epochs (the dataset cache is in the test's home)."""
    return recipes.resolve("mnist1d-mlp", width=16, epochs=2)


def _check(reg, outcomes, seeds):
    assert [o.solution.seed for o in outcomes] == seeds
    assert all(o.trained for o in outcomes)
    assert sorted(s.seed for s in records.query(reg, kind="anchor")) == sorted(seeds)
    assert all(reg.store.path(o.solution.sha256).exists() for o in outcomes)


# --- local ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_executor_trains_seeds_in_two_worker_processes_and_resubmitting_skips_them(reg, config):
    outcomes = training.train_where(reg, config, [1, 2, 3], run=RunOptions(executor="local", jobs=2), device="cpu")
    _check(reg, outcomes, [1, 2, 3])
    # The workers' rows carry the same (config, seed) key as this process would write.
    again = anchor_training.train(reg, config, [1, 2, 3], device="cpu")
    assert [o.solution.id for o in again] == [o.solution.id for o in outcomes]
    assert not any(o.trained for o in again)


@pytest.mark.slow
def test_two_workers_train_stacked_seed_groups_bit_identical_to_one_seed_at_a_time(tmp_path, config):
    from starcli.registry import Registry

    pooled, alone = Registry(tmp_path / "pooled"), Registry(tmp_path / "alone")
    seeds = [1, 2, 3, 4, 5]
    assert training.seed_groups(seeds, 2) == [[1, 3, 5], [2, 4]]
    outcomes = training.train_where(pooled, config, seeds, run=RunOptions(executor="local", jobs=2), device="cpu")
    assert [o.solution.seed for o in outcomes] == seeds and all(o.trained for o in outcomes)
    # The reference: each seed trained by itself in this process (no stacking, no pool).
    reference = [anchor_training.train(alone, config, [seed], device="cpu")[0] for seed in seeds]
    assert [o.solution.sha256 for o in outcomes] == [r.solution.sha256 for r in reference]
    assert [o.solution.key for o in outcomes] == [r.solution.key for r in reference]


@pytest.mark.slow
def test_registered_seeds_start_no_worker(reg, config, monkeypatch):
    first = anchor_training.train(reg, config, [1, 2], device="cpu")
    monkeypatch.setattr(local, "run_local", lambda *a, **k: pytest.fail("no pool when every seed is registered"))
    again = training.train_where(reg, config, [2, 1], run=RunOptions(executor="local", jobs=2), device="cpu")
    assert [o.solution.id for o in again] == [first[1].solution.id, first[0].solution.id]
    assert not any(o.trained for o in again)


def test_one_slot_on_the_cpu_trains_in_this_process(reg, config, monkeypatch):
    monkeypatch.setattr(local, "run_local", lambda *a, **k: pytest.fail("no pool for one slot"))
    [outcome] = training.train_where(reg, config, [5], run=RunOptions(executor="local"), device="cpu")
    assert outcome.trained and outcome.solution.device == "cpu"


def test_the_pool_pins_one_worker_per_visible_gpu(monkeypatch):
    import torch

    from starcli.engine import devices

    monkeypatch.setattr(local, "visible_gpus", lambda: ["3", "5"])
    monkeypatch.setattr(devices, "resolve", lambda name: torch.device("cuda" if name == "auto" else name))
    assert local.pool_slots("auto", None) == [("3", "cuda"), ("5", "cuda")]
    # More jobs than GPUs share them round-robin; one named GPU gets every slot, or runs here alone.
    assert local.pool_slots("cuda", 3) == [("3", "cuda"), ("5", "cuda"), ("3", "cuda")]
    assert local.pool_slots("cuda:1", 2) == [("5", "cuda"), ("5", "cuda")]
    assert local.pool_slots("cuda:1", None) == []


def test_visible_gpus_honour_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert local.visible_gpus() == ["2", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local.visible_gpus() == ["0", "1"]


# --- slurm (submitit's local executors) ----------------------------------------------------------


@pytest.mark.slow
def test_slurm_debug_runs_one_job_per_seed_with_logs_under_home(reg, config):
    pytest.importorskip("submitit")
    outcomes = training.train_where(reg, config, [1, 2], run=RunOptions(executor="slurm", slurm_cluster="debug"), device="cpu")
    _check(reg, outcomes, [1, 2])
    assert (reg.home / "slurm").is_dir()


def test_a_slurm_job_that_times_out_requeues_itself_with_the_same_seed(reg, config):
    pytest.importorskip("submitit")
    job = training.SeedJob(home=str(reg.home), db_url=reg.url, config=config, seed=3, device="cpu")
    again = runner_jobs.RunJob().checkpoint(job)
    assert isinstance(again.function, runner_jobs.RunJob) and again.args == (job,)


def test_a_failed_slurm_job_is_reported_by_the_last_line_of_its_trace():
    trace = (
        "Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nstarcli.errors.StarlightError: seed 4: the loss became nan\n'
        "----------------------\nYou can check full logs with 'job.stderr(0)'"
    )
    assert str(runner_jobs.job_error(RuntimeError(trace), "job 7 failed")) == "seed 4: the loss became nan"
    assert str(runner_jobs.job_error(MemoryError("out of memory"), "job 7 failed")) == "job 7 failed (out of memory)"


def test_slurm_time_limits_read_as_slurm_writes_them():
    assert options.time_minutes("90") == 90
    assert options.time_minutes("4:00:00") == 240
    assert options.time_minutes("1:30") == 90
    assert options.time_minutes("1-12:00:00") == 2160
    with pytest.raises(UsageError, match="malformed --time"):
        options.time_minutes("4h")


def test_slurm_without_sbatch_says_where_to_run(reg, config, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StarlightError, match="sbatch not found"):
        training.train_where(reg, config, [1], run=RunOptions(executor="slurm"), device="cpu")


# --- options and extras --------------------------------------------------------------------------


@pytest.mark.parametrize("module,extra", [("submitit", "slurm"), ("ray", "ray")])
def test_a_missing_optional_package_names_the_extra_to_install(reg, config, monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(StarlightError, match=rf"pip install 'starlight-landscapes\[{extra}\]'"):
        training.train_where(reg, config, [1], run=RunOptions(executor=extra), device="cpu")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--partition", "gpu"], "--partition applies to --executor slurm, not local"),
        (["--executor", "ray", "--time", "10"], "--time applies to --executor slurm, not ray"),
        (["--gpus-per-job", "1"], "--gpus-per-job applies to --executor slurm or ray, not local"),
        (["--executor", "slurm", "--gpus-per-job", "0.5"], "whole number"),
        (["--executor", "kubernetes"], "unknown executor"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--executor", "slurm", "--gpus-per-job", "inf"], "--gpus-per-job must be a finite number"),
        (["--executor", "ray", "--gpus-per-job", "nan", "--device", "cpu"], "--gpus-per-job must be a finite number"),
        (["--executor", "ray", "--ray-address", " "], "--ray-address is empty"),
        (["--device", " "], "--device is empty"),
    ],
)
def test_train_rejects_options_that_do_not_fit_the_executor(home, cli, args, message):
    code, _, err = cli("train", *args)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not home.exists()  # refused before the registry is opened


def test_a_localhost_ray_address_is_probed_like_any_other_not_taken_for_local(home, cli):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = cli("train", "--executor", "ray", "--ray-address", f"localhost:{port}", "--device", "cpu")
    assert code == 1 and out == "" and f"cannot reach the Ray cluster at localhost:{port}" in err
    assert err.count("\n") == 1 and not home.exists()


def test_any_spelling_of_auto_gets_the_same_precision_defaults_on_slurm():
    from starcli.engine import recipes

    [config] = {
        json.dumps(recipes.resolve("mnist1d-cnn", device=options.policy_device("slurm", spelling)), sort_keys=True)
        for spelling in ("auto", "AUTO", " Auto ")
    }
    assert json.loads(config)["precision"] == "bf16"  # the GPU the job asks for, however auto is written


@pytest.mark.slow
def test_train_command_submits_each_seed_as_its_own_slurm_job_process(home, config, cli):
    pytest.importorskip("submitit")
    # submitit's local executor: a real subprocess per array task, logs under $STARLIGHT_HOME/slurm.
    code, out, err = cli(
        "train", "--executor", "slurm", "--slurm-cluster", "local", "--time", "5", "--device", "cpu",
        "--seed", "3-4", "--width", "16", "--epochs", "2", "--json",
    )
    assert code == 0, err
    assert [r["seed"] for r in json.loads(out)] == [3, 4]
    assert len(list((home / "slurm").rglob("*.err"))) >= 2


# --- ray -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_trains_seeds_as_remote_tasks_into_one_registry(reg, config, local_ray):
    outcomes = training.train_where(reg, config, [1, 2, 3], run=RunOptions(executor="ray"), device="cpu")
    _check(reg, outcomes, [1, 2, 3])


def test_failed_seeds_are_reported_in_one_line_once_every_seed_has_run(reg, config, local_ray):
    bad = dict(config, lr=1e30)  # diverges at once: the worker refuses to register a non-finite loss
    with pytest.raises(StarlightError) as e:
        training.train_where(reg, bad, [1, 2], run=RunOptions(executor="ray", jobs=1), device="cpu")
    message = str(e.value)
    assert message.startswith("2 of 2 seed(s) failed (seed 1: the loss became") and "\n" not in message
    assert "rerun the same command" in message


@pytest.mark.slow
def test_ray_refuses_a_gpu_request_on_a_cluster_without_gpus_instead_of_waiting(reg, config, local_ray):
    with pytest.raises(StarlightError, match="asks for 1 GPU.*has 0"):
        training.train_where(reg, config, [1], run=RunOptions(executor="ray", gpus_per_job=1), device="cpu")


# --- the runners know a job only by its protocol ---------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _CountRows:
    """A kind of work the runners have never heard of: count the registry's solutions, in a worker."""

    kind: ClassVar[str] = "count"
    home: str
    db_url: str
    device: str
    store_url: str | None = None
    tag: int = 0

    def label(self) -> str:
        return f"count {self.tag}"

    def weight(self) -> int:
        return 1

    def run(self, reg, reporter=None) -> tuple[int, int]:
        return self.tag, len(records.query(reg))

    def describe(self, result) -> str:
        return f"{self.label()}: {result[1]} solution(s)"


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def task(self, *a, **k):
        from starcli.progress import Task

        return Task()


def test_a_new_kind_of_job_runs_here_and_on_a_local_pool_with_no_change_to_the_runners(reg, config):
    from starcli.runners.jobs import Job
    from starcli.runners.run import run_jobs

    anchor_training.train(reg, config, [1, 2], device="cpu")
    todo = [_CountRows(home=str(reg.home), db_url=reg.url, device="cpu", store_url=reg.store_url, tag=t) for t in range(3)]
    assert all(isinstance(job, Job) for job in todo)
    for run in (RunOptions(), RunOptions(jobs=2)):  # this process; two spawned workers
        said = _Lines()
        assert run_jobs(reg, todo, run, "cpu", said) == [(0, 2), (1, 2), (2, 2)]  # in submission order
        assert sorted(said.lines) == [f"count {t}: 2 solution(s)" for t in range(3)]  # each described by itself


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Threads(_CountRows):
    """Report the intra-op thread count the job computes with."""

    kind: ClassVar[str] = "threads"

    def run(self, reg, reporter=None) -> int:
        import torch

        return torch.get_num_threads()

    def describe(self, result) -> str:
        return f"{self.label()}: {result} thread(s)"


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_worker_computes_with_the_thread_count_of_the_process_that_submitted_its_job(reg, executor, monkeypatch, request):
    """The count changes a CPU product's rounding and is not in any key, so a job run on a worker must use
    the submitter's count, not $OMP_NUM_THREADS's (or Ray's one per task): else a sweep on a pool differs
    bit for bit from the same sweep in a library caller's process (the bug found at stop 28)."""
    from starcli.runners.run import run_jobs

    if executor == "ray":
        # Ray's workers import this test module to unpickle the job: its folder goes on their path.
        ray = pytest.importorskip("ray")
        if ray.is_initialized():  # a session another test left (its workers lack this path)
            ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
        request.addfinalizer(ray.shutdown)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        todo = [_Threads(home=str(reg.home), db_url=reg.url, device="cpu", store_url=reg.store_url, tag=t) for t in range(2)]
        run = RunOptions(jobs=2) if executor == "local" else RunOptions(executor="ray", jobs=2)
        assert run_jobs(reg, todo, run, "cpu", _Lines()) == [3, 3]
    finally:
        torch.set_num_threads(before)
