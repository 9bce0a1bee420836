"""A sweep takes the executor options `train` and `star` take (--partition, --time, --gpus-per-job,
--slurm-cluster, --ray-address) and hands them to every phase; on Ray the whole sweep shares one
connection instead of starting a Ray per phase. Real submitit (its in-process debug cluster) and a
real local Ray."""

from __future__ import annotations

import csv
import json

import pytest

from starcli.experiments import sweep as sweep_run
from starcli.experiments import sweep_file
from starcli.runners import slurm as slurm_runner
from starcli.runners.options import RunOptions
from starcli.solutions import records

# linear-toy's recipe at two widths, a few epochs: seconds of training.
_SMALL = (
    'recipe = "linreg-linear2"\n[train]\nepochs = 2\n[grid]\nwidths = [2, 4]\nanchor_seeds = "1-2"\n'
    'held_out_seeds = "11"\n[star]\nepochs = 2\npreset = "paper"\n[barriers]\npoints = 3\n'
)


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(_SMALL)
    return path


def _pairs(folder):
    return [{k: v for k, v in row.items()} for row in csv.DictReader((folder / "pairs.csv").open())]


def test_a_misplaced_executor_option_is_one_line_before_anything_runs(home, cli, small, tmp_path):
    for args, needle in (
        (["--partition", "gpu"], "--partition applies to --executor slurm, not local"),
        (["--executor", "ray", "--time", "1:00:00"], "--time applies to --executor slurm, not ray"),
        (["--executor", "slurm", "--ray-address", "localhost:6379"], "--ray-address applies to --executor ray, not slurm"),
    ):
        code, out, err = cli("sweep", str(small), "--out", str(tmp_path / "o"), "--device", "cpu", *args)
        assert code == 2 and err.strip() == f"error: {needle}", err
        assert not (home / "registry.db").exists() and not (tmp_path / "o").exists()


def test_the_python_api_refuses_an_unknown_cluster_option(reg, small, tmp_path):
    with pytest.raises(TypeError, match="partitions"):
        sweep_run.run(reg, sweep_file.load(str(small)), tmp_path / "o", device="cpu", partitions="gpu")


@pytest.mark.slow
def test_a_sweep_on_slurm_passes_its_options_to_every_phase_and_reports_as_locally(reg, home, small, tmp_path, monkeypatch, cli):
    pytest.importorskip("submitit")
    seen = []
    real = slurm_runner.run_slurm

    def recording(todo, device, jobs, home_, partition, time, gpus_per_job, slurm_cluster, reporter):
        seen.append((type(todo[0]).__name__, partition, time, slurm_cluster))
        return real(todo, device, jobs, home_, partition, time, gpus_per_job, slurm_cluster, reporter)

    monkeypatch.setattr(slurm_runner, "run_slurm", recording)
    code, out, err = cli(
        "sweep", str(small), "--out", str(tmp_path / "slurm"), "--device", "cpu", "--executor", "slurm",
        "--slurm-cluster", "debug", "--partition", "short", "--time", "0:30:00", "--json",
    )
    assert code == 0, err
    # Training, stars and barriers each went through SLURM with the sweep's options.
    assert {kind for kind, *_ in seen} >= {"SeedJob", "StarJob", "BarrierJob"}
    assert {tuple(rest) for _, *rest in seen} == {("short", "0:30:00", "debug")}
    result = json.loads(out)
    assert result["computed"]["stars"] == 2

    # The same sweep run locally into a fresh home gives the same numbers (the debug cluster runs the
    # jobs in this process, in order, so even the ids agree).
    monkeypatch.setenv("STARLIGHT_HOME", str(tmp_path / "local-home"))
    code, out, err = cli("sweep", str(small), "--out", str(tmp_path / "local"), "--device", "cpu", "--json")
    assert code == 0, err
    assert _pairs(tmp_path / "local") == _pairs(tmp_path / "slurm")


@pytest.mark.slow
def test_a_sweep_on_ray_without_an_address_starts_one_local_ray_for_all_its_phases(reg, small, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    starts = []
    real_init = ray.init

    def counting_init(*args, **kwargs):
        starts.append(kwargs.get("address"))
        kwargs.setdefault("num_cpus", 2)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", counting_init)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = sweep_run.run(reg, sweep_file.load(str(small)), tmp_path / "ray", device="cpu", run=RunOptions(executor="ray"))
    assert starts == [None]  # one local Ray for training, stars, barriers and soups
    assert not ray.is_initialized()  # and it is shut down with the sweep
    assert result["computed"]["training_runs"] == 6 and result["computed"]["stars"] == 2
    assert len(records.query(reg, kind="star")) == 2
    # Run again, everything is registered: answered without starting Ray at all.
    again = sweep_run.run(reg, sweep_file.load(str(small)), tmp_path / "ray-again", device="cpu", run=RunOptions(executor="ray"))
    assert starts == [None] and not ray.is_initialized()
    assert sum(again["computed"].values()) == 0 and again["rows"] == result["rows"]


def test_a_submitted_run_gets_the_precision_defaults_of_the_device_its_job_asks_for():
    from starcli.runners.options import policy_device

    assert policy_device("local", "auto") == "auto"  # this machine decides
    assert policy_device("slurm", "auto") == "cuda"  # a SLURM job asks for one GPU by default
    assert policy_device("slurm", "auto", 0) == "cpu"
    assert policy_device("ray", "auto", 0.5) == "cuda"
    assert policy_device("ray", "auto") == "auto"  # unknown before connecting: the submitting machine's
    assert policy_device("slurm", "cpu") == "cpu" and policy_device("ray", "cuda:1") == "cuda:1"


def test_train_on_slurm_resolves_a_convnets_config_for_the_gpu_it_asks_for(home, cli, mnist1d_cache):
    pytest.importorskip("submitit")
    import shutil

    (home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    # The debug cluster runs the job here, on this CPU, where a bf16 config computes in fp32.
    args = ["train", "--recipe", "mnist1d-cnn", "--set", "arch_kwargs.width=4", "--epochs", "1", "--executor", "slurm",
            "--slurm-cluster", "debug", "--json"]
    code, out, err = cli(*args)
    assert code == 0, err
    code, out, err = cli("show", str(json.loads(out)[0]["id"]), "--json")
    assert json.loads(out)["config"]["precision"] == "bf16"
    code, out, err = cli(*args, "--gpus-per-job", "0")
    assert code == 0, err
    code, out, err = cli("show", str(json.loads(out)[0]["id"]), "--json")
    assert json.loads(out)["config"]["precision"] == "fp32"


def test_every_path_of_a_sweep_keys_its_anchors_for_the_device_it_runs_on():
    spec = sweep_file.load("cifar10-resnet18")  # parses and resolves here without its data
    on_gpu = sweep_run.width_configs(spec, "cuda")
    assert {(c["precision"], c["memory_format"]) for c in on_gpu.values()} == {("bf16", "channels_last")}
    assert {c["precision"] for c in sweep_run.width_configs(spec, "cpu").values()} == {"fp32"}
