"""Every unit of work on every executor: stars and barrier batches as jobs, on a local pool, submitit and Ray,
into one registry; batches equal one process number for number; workers die with their parent; bad
executor input is one bounded line."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlmodel import select

from starcli.registry import BarrierResult, open_registry
from starcli.engine import recipes
from starcli.solutions import anchors as anchor_training
from starcli.runners.jobs import RunJob
from starcli.runners.options import RunOptions
from starcli.solutions import barriers, bends, planes, records, sharpness, stars, training


@pytest.fixture
def config(tiny_config):
    return recipes.resolve("mnist1d-mlp", width=16, epochs=2)


def _numbers(result) -> list:
    # Everything a pair reports but its timing and device.
    return [
        (p["a"], p["b"], p["kind"], {k: v for k, v in p.items() if k not in ("a", "b", "kind", "seconds", "device")})
        for p in result["pairs"]
    ]


def _curves(reg) -> dict:
    with reg.session() as s:
        return {(r.a_id, r.b_id): {k: v for k, v in r.result.items() if k not in ("seconds", "device")}
                for r in s.exec(select(BarrierResult))}


def _measured(reg, run: RunOptions = RunOptions(), **options):
    """(barriers, pairs computed by this call): the plan, its missing pairs computed where `run` says, the finish."""
    plan = barriers.plan_barriers(reg, barriers.BarrierSpec(**options))
    computed = barriers.compute(reg, plan, run, "cpu")
    return barriers.finish(plan, computed), len(computed)


def _star_and_held_outs(reg, config):
    ids = [o.solution.id for o in anchor_training.train(reg, config, [1, 2, 3, 4, 5], device="cpu")]
    star, _ = stars.build_star(reg, ids[:3], epochs=2, device="cpu")
    return star.id, ids[3:]


@pytest.mark.slow
def test_barrier_pairs_over_two_workers_equal_one_process_and_a_rerun_computes_only_missing_pairs(reg, config):
    star, held = _star_and_held_outs(reg, config)
    options = dict(star=star, held_out=held, points=5, splits=("train", "test"))
    fanned, computed = _measured(reg, RunOptions(executor="local", jobs=2), **options)
    assert computed == 2 + 3 * 2
    spread = _curves(reg)
    single, again = _measured(reg, recompute=True, **options)
    assert again == 8
    assert _numbers(fanned) == _numbers(single) and _curves(reg) == spread  # number for number
    with reg.session() as s:  # lose one stored pair: the rerun measures it alone
        s.delete(s.exec(select(BarrierResult).where(BarrierResult.b_id == held[1])).first())
        s.commit()
    rerun, computed = _measured(reg, RunOptions(executor="local", jobs=2), **options)
    assert computed == 1 and _numbers(rerun) == _numbers(single)


@pytest.mark.slow
def test_stars_built_by_two_local_workers_are_the_stars_this_process_builds(reg, config, tmp_path):
    ids = [o.solution.id for o in anchor_training.train(reg, config, [1, 2, 3], device="cpu")]
    specs = [stars.StarSpec(anchor_ids=ids[:2], epochs=2, seed=s) for s in (0, 1)]
    built = stars.build_stars(reg, specs, run=RunOptions(executor="local", jobs=2), device="cpu")
    assert [created for _, created in built] == [True, True]
    assert [s.anchors for s, _ in built] == [ids[:2], ids[:2]]
    again = stars.build_stars(reg, specs, run=RunOptions(executor="local", jobs=2), device="cpu")
    assert [(s.id, c) for s, c in again] == [(s.id, False) for s, _ in built]
    other = open_registry(tmp_path / "other")
    shutil.copytree(reg.home / "datasets", other.home / "datasets")
    for sol in records.get_many(reg, ids[:2]):  # the same anchors, registered the same way, in another home
        records.register(other, records.state_dict(reg, sol), key=sol.key, kind="anchor", arch=sol.arch,
                         arch_kwargs=sol.arch_kwargs, dataset=sol.dataset, recipe=sol.recipe, config=sol.config,
                         seed=sol.seed, epochs=sol.epochs, metrics=sol.metrics, device="cpu", wall_seconds=0.0)
    here, _ = stars.build_star(other, ids[:2], epochs=2, seed=1, device="cpu")
    assert here.sha256 == built[1][0].sha256


# --- bounds and errors -----------------------------------------------------------------------------


def test_an_unreachable_ray_address_is_one_line_and_fails_fast(home, config, cli):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    start = time.monotonic()
    code, _, err = cli("train", "--executor", "ray", "--ray-address", "garbage:1", "--width", "16", "--epochs", "2")
    assert code == 1 and err.count("\n") == 1 and "cannot reach the Ray cluster at garbage:1" in err
    assert time.monotonic() - start < 30
    assert records.query(open_registry(home)) == []


def test_a_slurm_executor_without_submitit_is_one_line(home, config, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    code, _, err = cli("train", "--executor", "slurm", "--slurm-cluster", "local", "--width", "16", "--epochs", "2")
    assert code == 1 and err.count("\n") == 1 and "pip install 'starlight-landscapes[slurm]'" in err


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_train_with_two_jobs_leaves_no_orphaned_worker(home, config):
    # A resume file after every epoch (not every 60 s), so their appearance says that both workers train.
    env = dict(os.environ, STARLIGHT_HOME=str(home), OMP_NUM_THREADS="1", STARLIGHT_RESUME_EVERY_S="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "starcli", "train", "--seed", "1-2", "--jobs", "2", "--device", "cpu",
         "--width", "128", "--epochs", "400"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((home / "runs").glob("*/last.safetensors"))) < 2:
        time.sleep(0.05) if (home / "runs").exists() else time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) >= 2 and proc.poll() is None, "the workers never started training"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    assert not orphans, "workers outlived the killed parent"


# --- real clusters: submitit's local executor and a local Ray ---------------------------------------


def _descendants(pid: int) -> list[int]:
    out = []
    for kid in _children(pid):
        out += _descendants(kid) + [kid]
    return out


@pytest.mark.slow
def test_submitit_runs_train_star_and_barrier_jobs_and_a_killed_star_job_resumes_when_resubmitted(reg, config, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("STARLIGHT_RESUME_EVERY_S", "0")  # a resume file every epoch: the kill lands after one
    slurm = dict(run=RunOptions(executor="slurm", slurm_cluster="local", time="10"), device="cpu")
    outcomes = training.train_where(reg, config, [1, 2, 3, 4], **slurm)
    ids = [o.solution.id for o in outcomes]
    spec = stars.StarSpec(anchor_ids=ids[:2], epochs=300, seed=7)
    plan = stars.plan_star(reg, spec)
    job = stars.StarJob(home=str(reg.home), db_url=reg.url, spec=spec, device="cpu", store_url=reg.store_url)
    ex = submitit.AutoExecutor(folder=reg.home / "slurm" / "%j", cluster="local")
    ex.update_parameters(timeout_min=10)
    running = ex.submit(RunJob(), job)
    resume = reg.home / "runs" / plan.key[:24] / "last.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not resume.exists() and not running.done():
        time.sleep(0.05)
    time.sleep(0.5)
    assert resume.exists() and not running.done(), "the star job finished before it could be killed"
    for pid in _descendants(running._process.pid) + [running._process.pid]:
        os.kill(pid, signal.SIGKILL)
    from safetensors import safe_open

    with safe_open(str(resume), "pt") as f:
        killed_at = int(f.metadata()["epoch"])
    assert 0 < killed_at < 300 and records.by_key(reg, plan.key) is None

    [(star, created)] = stars.build_stars(reg, [spec], **slurm)
    assert created and not resume.exists()
    fanned, computed = _measured(reg, dataclasses.replace(slurm["run"], jobs=2), star=star.id, held_out=ids[2:], points=3)
    assert computed == 2 + 2 * 2 and len(fanned["pairs"]) == 6
    clean_home = tmp_path / "clean"
    shutil.copytree(reg.home, clean_home, ignore=shutil.ignore_patterns("slurm", "runs"))
    clean = open_registry(clean_home)
    with clean.session() as s:  # the same registry without the star: build it uninterrupted here
        for row in s.exec(select(BarrierResult)):
            s.delete(row)
        s.commit()
    from starcli.registry import Solution

    with clean.session() as s:
        s.delete(s.get(Solution, star.id))
        s.commit()
    uninterrupted, _ = stars.build_star(clean, ids[:2], epochs=300, seed=7, device="cpu")
    assert uninterrupted.sha256 == star.sha256


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_runs_train_star_and_barrier_jobs_into_one_registry(reg, config, local_ray):
    outcomes = training.train_where(reg, config, [1, 2, 3, 4], run=RunOptions(executor="ray"), device="cpu")
    ids = [o.solution.id for o in outcomes]
    [(star, created)] = stars.build_stars(reg, [stars.StarSpec(anchor_ids=ids[:2], epochs=2)], run=RunOptions(executor="ray"), device="cpu")
    assert created and star.kind == "star" and star.anchors == ids[:2]  # drawn in seed order, whatever order the parallel jobs registered the seeds in
    options = dict(star=star.id, held_out=ids[2:], points=3)
    fanned, computed = _measured(reg, RunOptions(executor="ray", jobs=2), **options)
    assert computed == 6
    single, _ = _measured(reg, recompute=True, **options)
    assert _numbers(fanned) == _numbers(single)


_TINY_SWEEP = """
name = "tiny"
description = "a seconds-long sweep for tests"
recipe = "mnist1d-mlp"
[train]
epochs = 2
[grid]
widths = [8]
anchor_seeds = "1-3"
anchors = [2, 3]
held_out_seeds = "11-12"
t_sampling = ["uniform"]
[star]
epochs = 2
[barriers]
points = 3
splits = ["train"]
[baselines]
soup = true
"""


@pytest.mark.slow
def test_a_sweep_on_ray_gives_the_report_of_a_local_run(reg, tmp_path, mnist1d_cache, local_ray, monkeypatch):
    from starcli.experiments import sweep as sweep_run
    from starcli.experiments import sweep_file

    path = tmp_path / "tiny.toml"
    path.write_text(_TINY_SWEEP)
    spec = sweep_file.load(str(path))
    local = open_registry(tmp_path / "local")
    for r in (reg, local):
        (r.home / "datasets").mkdir(parents=True, exist_ok=True)
        shutil.copy(mnist1d_cache, r.home / "datasets" / "mnist1d.npz")
        # Anchors registered in seed order in both: parallel training registers in completion order, and a
        # star's anchors are ordered by id (see the report: that order is part of a star's bits).
        anchor_training.train(r, spec.config(8), spec.seeds_to_train(), device="cpu")
    # Ray's workers compute with this process's thread count, whatever $OMP_NUM_THREADS (or Ray) says.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        on_ray = sweep_run.run(reg, spec, tmp_path / "ray", device="cpu", run=RunOptions(executor="ray", jobs=2))
        here = sweep_run.run(local, spec, tmp_path / "here", device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert on_ray["computed"] == here["computed"] and here["computed"]["stars"] == 2
    assert [c["summary"] for c in on_ray["cells"]] == [c["summary"] for c in here["cells"]]
    # The same rows, but for the stars' ids (two stars built at once register in the order they finish).
    import csv

    def rows(folder):
        return [{k: v for k, v in r.items() if k not in ("star", "soup")} for r in csv.DictReader((folder / "summary.csv").open())]

    assert rows(tmp_path / "ray") == rows(tmp_path / "here")


@pytest.mark.slow
def test_a_sweep_interrupted_in_its_barrier_phase_resumes_without_retraining(reg, tmp_path, mnist1d_cache, monkeypatch):
    from starcli.errors import StarlightError
    from starcli.experiments import sweep as sweep_run
    from starcli.experiments import sweep_file

    path = tmp_path / "tiny.toml"
    path.write_text(_TINY_SWEEP)
    (reg.home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, reg.home / "datasets" / "mnist1d.npz")
    real = barriers.compute_pairs

    def interrupted(*args, **kwargs):
        raise StarlightError("interrupted")

    monkeypatch.setattr(barriers, "compute_pairs", interrupted)
    with pytest.raises(StarlightError, match="interrupted"):
        sweep_run.run(reg, sweep_file.load(str(path)), tmp_path / "out", device="cpu")
    assert len(records.query(reg, kind="star")) == 2  # the stars were built before the barriers began
    monkeypatch.setattr(barriers, "compute_pairs", real)
    resumed = sweep_run.run(reg, sweep_file.load(str(path)), tmp_path / "out", device="cpu")
    assert resumed["computed"]["training_runs"] == 0 and resumed["computed"]["stars"] == 0
    assert resumed["computed"]["barrier_pairs"] > 0 and (tmp_path / "out" / "summary.md").exists()


def test_every_kind_of_job_is_a_frozen_keyword_built_picklable_job_that_describes_its_result(reg):
    import dataclasses
    import pickle

    from starcli.runners.jobs import Job

    where = dict(home=str(reg.home), db_url=reg.url, device="cpu")
    jobs = [
        (training.SeedJob(config={"arch": "mlp"}, seed=3, **where), (5, True), "seed 3: solution 5"),
        (training.SeedGroupJob(config={"arch": "mlp"}, seed=3, more=(4,), **where),
         ((5, True), (6, False)), "seed 3: solution 5\nseed 4: already registered as solution 6"),
        (training.TrainAheadJob(config={"arch": "mlp"}, seed=3, more=(4,), **where), (3, 4), ""),
        (stars.StarJob(spec=stars.StarSpec(anchor_ids=(1, 2), seed=7), **where), (9, True), "star from anchors 1,2 (seed 7): solution 9"),
        (barriers.BarrierJob(pairs=((1, 2), (1, 3)), settings={}, settings_hash="h", **where),
         (1, 2), "2 pair(s) from (1, 2): 1 computed, 1 already stored"),
        # The instruments (issue 22) are kinds of work of the same shape.
        (sharpness.SharpnessJob(solution=1, settings={}, settings_hash="h", **where), (4, True), "stored as row 4"),
        (planes.PlaneJob(solutions=(1, 2, 3), settings={}, settings_hash="h", **where), (5, False), "already stored as row 5"),
        (bends.CurveJob(a=1, b=2, settings={}, settings_hash="h", **where), (6, True), "stored as row 6"),
    ]
    for job, result, said in jobs:
        assert isinstance(job, Job) and dataclasses.is_dataclass(job)
        assert pickle.loads(pickle.dumps(job)) == job
        assert job.describe(result) == said
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.device = "cuda"  # type: ignore[misc]
        with pytest.raises(TypeError):  # built by keyword: no order of fields to get wrong
            type(job)(*dataclasses.astuple(job))
