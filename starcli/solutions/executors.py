"""Where the work runs: here, a local process pool, SLURM (submitit) or Ray.

Three kinds of job, each one picklable unit of work: train a seed (`Job`), build a star (`StarJob`),
measure a batch of barrier pairs (`BarrierJob`). Every executor runs them the same way, `run_job(job)`:
open the registry from its home, database and store URL, and do the work with the same function a
local run calls. Workers share nothing but the registry: checkpoints go into the shared store, rows into
the shared database, and each job is keyed as a local run is (a registered seed or star, a stored pair),
so a job whose result is registered is a no-op and a failed or preempted job is simply submitted again.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import shutil
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from starcli.engine import data, devices, stacked
from starcli.engine import threads as thread_policy
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.registry import Registry, RegistryError

from . import anchors, barriers, manage, records, stars
from .executor_options import (  # noqa: F401  (re-exported: the options are part of this API)
    DEFAULT_TIME,
    EXECUTORS,
    RAY_CONNECT_TIMEOUT,
    SLURM_CLUSTERS,
    _check_ray_address,
    check_options,
    policy_device,
    time_minutes,
)


@dataclass(frozen=True)
class Job:
    """One seed to train: everything a worker on another machine needs, all of it picklable."""

    home: str
    db_url: str
    config: dict[str, Any]
    seed: int
    device: str
    data_dir: str | None = None
    download: bool = False
    # Where the checkpoints go ($STARLIGHT_STORE_URL as this process resolved it): a worker on another
    # node has no shared home, only the database and the object store.
    store_url: str | None = None

    kind = "seed"

    def label(self) -> str:
        return f"seed {self.seed}"

    def weight(self) -> int:
        return 1

    def seeds(self) -> list[int]:
        return [self.seed]

    def per_seed(self, result) -> list[tuple[int, bool]]:
        """This job's result as (solution id, trained) per seed, in the order of `seeds()`."""
        return [result]

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, bool]:
        """(solution id, trained)."""
        [outcome] = anchors.train(reg, self.config, [self.seed], device=self.device, data_dir=self.data_dir, download=self.download)
        return outcome.solution.id, outcome.trained


@dataclass(frozen=True)
class SeedGroupJob(Job):
    """Several seeds of one config for one local worker, trained together: `anchors.train` stacks them
    where that is bit-identical to one seed at a time (engine/stacked.py), so a pool of N one-thread
    workers gets both gains, N cores and stacking. `seed` is the first; `more` holds the rest."""

    more: tuple[int, ...] = ()

    def seeds(self) -> list[int]:
        return [self.seed, *self.more]

    def label(self) -> str:
        return f"seeds {', '.join(map(str, self.seeds()))}"

    def weight(self) -> int:
        return len(self.seeds())

    def per_seed(self, result) -> list[tuple[int, bool]]:
        return list(result)

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[tuple[int, bool], ...]:
        """(solution id, trained) per seed, in seed order."""
        outcomes = anchors.train(reg, self.config, self.seeds(), device=self.device, data_dir=self.data_dir, download=self.download)
        return tuple((o.solution.id, o.trained) for o in outcomes)


@dataclass(frozen=True)
class TrainAheadJob(SeedGroupJob):
    """A seed group trained to its last epoch and left in its resume folders, registered by nobody yet
    (`anchors.train(register=False)`): the caller registers it later, in an order of its choosing, by
    training the same seeds again, which then runs no epoch. What a sweep's pool trains."""

    def per_seed(self, result) -> list[tuple[int, bool]]:
        return []

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, ...]:
        """The seeds of the group (trained now, or found trained or registered)."""
        anchors.train(reg, self.config, self.seeds(), device=self.device, data_dir=self.data_dir, download=self.download,
                      register=False)
        return tuple(self.seeds())


def seed_groups(seeds: list[int], workers: int) -> list[list[int]]:
    """Seeds dealt round-robin into at most `workers` groups (balanced to within one seed)."""
    groups = [seeds[i::workers] for i in range(min(workers, len(seeds)))]
    return [g for g in groups if g]


@dataclass(frozen=True)
class StarJob:
    """One star to build (`stars.build_star`'s arguments); it resumes from its last epoch when rerun."""

    home: str
    db_url: str
    anchors: tuple[int, ...]
    device: str
    epochs: int | None = None
    t_sampling: str = "uniform"
    samples_per_step: int = 1
    mu_star: float = 0.0
    seed: int = 0
    align_anchors: bool = False
    store_url: str | None = None
    init: str = "random"
    compile_step: bool | None = None

    kind = "star"

    def label(self) -> str:
        return f"star from anchors {','.join(map(str, self.anchors))} (seed {self.seed})"

    def weight(self) -> int:
        return 1

    def run(self, reg: Registry, reporter: Reporter | None = None, tracking=None) -> tuple[int, bool]:
        """(solution id, trained); `tracking` streams its epochs to a live tracker when it runs here."""
        sol, created = stars.build_star(
            reg, list(self.anchors), epochs=self.epochs, t_sampling=self.t_sampling, samples_per_step=self.samples_per_step,
            mu_star=self.mu_star, seed=self.seed, device=self.device, reporter=reporter, align_anchors=self.align_anchors,
            tracking=tracking, init=self.init, compile_step=self.compile_step,
        )
        return sol.id, created


@dataclass(frozen=True)
class BarrierJob:
    """A batch of barrier pairs under one set of settings; the batch's results are stored as it finishes,
    and pairs already stored are skipped (unless `recompute`)."""

    home: str
    db_url: str
    pairs: tuple[tuple[int, int], ...]
    settings: dict[str, Any]
    settings_hash: str
    device: str
    recompute: bool = False
    store_url: str | None = None

    kind = "pair"

    def label(self) -> str:
        return f"{len(self.pairs)} pair(s) from {self.pairs[0]}"

    def weight(self) -> int:
        return len(self.pairs)

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, int]:
        """(pairs computed, pairs in the batch)."""
        wanted = set(self.pairs)
        done = set() if self.recompute else set(barriers.cached_results(reg, self.settings_hash, wanted))
        todo = [pair for pair in self.pairs if pair not in done]
        if todo:
            sols = records.get_many(reg, list(dict.fromkeys(i for pair in todo for i in pair)))
            barriers.compute_pairs(
                reg, {s.id: s for s in sols}, todo, self.settings, self.settings_hash, self.device, reporter or Reporter()
            )
        return len(todo), len(self.pairs)


def run_job(job) -> tuple[int, Any]:
    """Run one job of any kind into the shared registry (what every worker calls)."""
    reg = Registry(Path(job.home), job.db_url, job.store_url)
    try:
        return job.run(reg)
    finally:
        reg.close()


class RunJob:
    """`run_job` for submitit, which requeues a job whose callable has `checkpoint`: a seed or a star that
    hits the SLURM time limit or is preempted goes back in the queue and resumes from its last finished
    epoch (a barrier batch keeps the pairs it stored and computes the rest)."""

    def __call__(self, job) -> tuple[int, Any]:
        return run_job(job)

    def checkpoint(self, job):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, job)


TrainSeed = RunJob  # the name the train-only version had


def train(
    reg,
    config: dict[str, Any],
    seeds: list[int],
    executor: str = "local",
    device: str = "auto",
    jobs: int | None = None,
    data_dir=None,
    download: bool = False,
    reporter=None,
    partition: str | None = None,
    time: str = DEFAULT_TIME,
    gpus_per_job: float | None = None,
    slurm_cluster: str = "slurm",
    ray_address: str | None = None,
    tracking=None,
) -> list:
    """Train one anchor per seed on `executor`; returns `anchors.Outcome`s in seed order.

    `tracking` (see anchors.Tracking) streams epochs live when training runs in this process; runs in
    workers are logged to the tracker once registered, from the history stored with them."""
    reporter = reporter or Reporter()
    check_options(executor, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address)
    slots = _pool_slots(device, jobs) if executor == "local" else []
    if executor == "local" and not slots:  # one slot: the same as calling it here
        return anchors.train(
            reg, config, seeds, device=device, data_dir=data_dir, download=download, reporter=reporter, tracking=tracking
        )
    registered = {seed: anchors.already_registered(reg, config, seed, reporter) for seed in seeds}
    missing = [seed for seed in seeds if registered[seed] is None]
    if not missing:  # nothing for a worker to do (and no worker's device to check)
        return [anchors.Outcome(registered[seed], False) for seed in seeds]
    # Load (and download) the data once here, not in every worker at once: no download race, and a
    # missing --data-dir is one line now rather than fifty failed jobs later. A remote Ray cluster has
    # its own disks, so there each worker loads (and downloads) for itself.
    remote = executor == "ray" and bool(ray_address or os.environ.get("RAY_ADDRESS"))
    if reg.url.startswith("sqlite") and (remote or (executor == "slurm" and slurm_cluster == "slurm")):
        # SQLite's WAL needs one machine's shared memory: on a network filesystem it corrupts or locks.
        reporter.log("note: the registry is SQLite, which is safe on one node only; set STARLIGHT_DB_URL to a "
                     "PostgreSQL database when jobs may land on several nodes")
    if not remote:
        data.load(config["dataset"], "train", data_dir=data_dir, download=download, cache_dir=records.dataset_cache(reg))

    common = (str(reg.home), reg.url, config)
    where = (device, _str(data_dir), download and remote, reg.store_url)
    if executor == "local" and stacked.stackable(config, devices.resolve(device)):
        # One group per worker, stacked inside it: cores and stacking together.
        todo = [SeedGroupJob(*common, g[0], *where, more=tuple(g[1:])) for g in seed_groups(missing, len(slots))]
    else:
        todo = [Job(*common, seed, *where) for seed in missing]
    results = run_jobs(
        reg, todo, executor, device, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address, reporter,
        slots=slots,
    )
    trained = _trained(reg, todo, results)
    outcomes = [anchors.Outcome(registered[seed], False) if registered[seed] is not None else trained[seed] for seed in seeds]
    if tracking is not None:
        for o in outcomes:
            if o.trained:
                anchors.replay(tracking, reg, o.solution)
    return outcomes


def build_stars(
    reg,
    specs: list[dict[str, Any]],
    executor: str = "local",
    device: str = "auto",
    jobs: int | None = None,
    reporter=None,
    partition: str | None = None,
    time: str = DEFAULT_TIME,
    gpus_per_job: float | None = None,
    slurm_cluster: str = "slurm",
    ray_address: str | None = None,
    tracking=None,
) -> list[tuple[Any, bool]]:
    """Build one star per spec (`stars.build_star`'s keyword arguments, `anchor_ids` included) on
    `executor`, several at once; returns (solution, created) in spec order. Every spec is checked here
    first, and stars already registered are not submitted."""
    reporter = reporter or Reporter()
    check_options(executor, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address)
    plans, jobs_of = star_jobs(reg, specs, device, reporter)
    where, todo = [i for i, _ in jobs_of], [job for _, job in jobs_of]
    if executor == "local" and todo and not _pool_slots(device, jobs):
        # One slot: here, with this process's progress bars, exactly as `build_star` runs.
        results = [job.run(reg, reporter, tracking) for job in todo]
    else:
        results = run_jobs(reg, todo, executor, device, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address, reporter)
    raise_failures(todo, results, "star")
    out: list[tuple[Any, bool]] = [(plan.existing, False) for plan in plans]
    for i, (sid, created) in zip(where, results):
        out[i] = (records.get(reg, sid), created)
    return out


def star_jobs(reg, specs: list[dict[str, Any]], device: str, reporter: Reporter) -> tuple[list, list[tuple[int, StarJob]]]:
    """Every spec checked and keyed (`stars.plan_star`), and a `StarJob` for each star not yet registered:
    (plans in spec order, [(spec index, job)])."""
    plans = [stars.plan_star(reg, **{k: v for k, v in spec.items() if k != "device"}) for spec in specs]
    todo = []
    for i, (spec, plan) in enumerate(zip(specs, plans)):
        if plan.existing is None:
            options = {k: v for k, v in spec.items() if k not in ("anchor_ids", "device", "reporter")}
            todo.append((i, StarJob(str(reg.home), reg.url, tuple(plan.config["star"]["anchors"]), device,
                                    store_url=reg.store_url, **options)))
        else:
            reporter.log(f"star from anchors {plan.config['star']['anchors']}: already registered as solution {plan.existing.id}")
            # A star killed between its row's commit and its resume folder's removal left that folder.
            manage.clear_registered_run(stars.run_folder(reg, plan.key))
    return plans, todo


class _Collected(Exception):
    """Raised by `missing_pairs`' fan-out to stop `measure_counted` once it has said what it lacks."""


def missing_pairs(reg, device: str = "auto", **measure: Any) -> tuple[list[tuple[int, int]], dict | None, str | None]:
    """The pairs `barriers.measure_counted(**measure)` would compute, with their settings and settings
    hash, computing nothing: what a caller sends to workers ahead of the measurement that reads them
    back. ([], None, None) when every pair is stored."""
    found = []

    def collect(todo, settings, settings_hash):
        found.append((list(todo), settings, settings_hash))
        raise _Collected

    try:
        barriers.measure_counted(reg, device=device, fan_out=collect, **measure)
    except _Collected:
        return found[0]
    return [], None, None


def barrier_jobs(reg, todo: list[tuple[int, int]], settings: dict, settings_hash: str, device: str, batches: int,
                 recompute: bool = False) -> list[BarrierJob]:
    """`todo` in `batches` contiguous batches (pairs that share a solution, a star's, load it once per batch)."""
    n = max(1, min(len(todo), batches))
    parts = [tuple(todo[k * len(todo) // n:(k + 1) * len(todo) // n]) for k in range(n)]
    return [BarrierJob(str(reg.home), reg.url, b, settings, settings_hash, device, recompute, reg.store_url)
            for b in parts if b]


def barrier(
    reg,
    executor: str = "local",
    device: str = "auto",
    jobs: int | None = None,
    reporter=None,
    partition: str | None = None,
    time: str = DEFAULT_TIME,
    gpus_per_job: float | None = None,
    slurm_cluster: str = "slurm",
    ray_address: str | None = None,
    pool: LocalPool | None = None,
    **measure: Any,
) -> tuple[dict[str, Any], int]:
    """`barriers.measure_counted` with the missing pairs split into `jobs` batches run on `executor`;
    each batch stores its pairs as it finishes, so a rerun computes only what is still missing. The
    numbers equal a single-process run's: each pair is computed from its two solutions alone. `pool`: an
    open `LocalPool` to run the batches on (a sweep's), instead of workers started for this call."""
    reporter = reporter or Reporter()
    check_options(executor, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address)
    recompute = bool(measure.get("recompute", False))
    if executor == "local" and pool is None and not _pool_slots(device, jobs):
        return barriers.measure_counted(reg, device=device, reporter=reporter, **measure)

    def fan_out(todo: list[tuple[int, int]], settings: dict, settings_hash: str) -> None:
        if pool is not None:
            n = len(pool.slots)
        else:
            n = jobs or (len(_pool_slots(device, jobs)) if executor == "local" else len(todo))
        work = barrier_jobs(reg, todo, settings, settings_hash, device, n, recompute)
        results = run_jobs(reg, work, executor, device, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address,
                           reporter, pool=pool)
        raise_failures(work, results, "barrier batch")

    return barriers.measure_counted(reg, device=device, reporter=reporter, fan_out=fan_out, **measure)


def run_jobs(
    reg: Registry,
    todo: list,
    executor: str,
    device: str,
    jobs: int | None,
    partition: str | None = None,
    time: str = DEFAULT_TIME,
    gpus_per_job: float | None = None,
    slurm_cluster: str = "slurm",
    ray_address: str | None = None,
    reporter: Reporter | None = None,
    slots: list | None = None,
    pool: LocalPool | None = None,
) -> list:
    """Run `todo` (jobs of any kind) on `executor`; returns each job's result or exception, in order.

    With the local executor and a single slot the jobs run here, one after another, with this
    process's reporter (the same as calling the work directly).
    """
    reporter = reporter or Reporter()
    if not todo:
        return []
    device = devices.canonical(device)  # the slurm and ray paths compare names ("cpu", "cuda...")
    if executor == "local" and pool is not None:
        return _run_local(todo, pool.slots, reporter, pool).ordered()
    if executor == "local":
        slots = _pool_slots(device, jobs) if slots is None else slots
        if not slots:
            results = _Results(reporter, todo, "this process")
            for i, job in enumerate(todo):
                try:
                    results[i] = job.run(reg, reporter)
                except (StarlightError, RegistryError) as e:
                    results[i] = e
            return results.ordered()
        return _run_local(todo, slots, reporter).ordered()
    if executor == "slurm":
        return _run_slurm(todo, device, jobs, reg.home, partition, time, gpus_per_job, slurm_cluster, reporter).ordered()
    return _run_ray(todo, device, jobs, gpus_per_job, ray_address, reporter).ordered()


def raise_failures(todo: list, results: list, what: str) -> None:
    """One line for every failed job: how many, the first one's reason, and that a rerun retries them."""
    failed = [(job, r) for job, r in zip(todo, results) if isinstance(r, BaseException)]
    if failed:
        job, error = failed[0]
        detail = str(error).splitlines()[0]
        if not detail.startswith(f"{job.label()}:"):
            detail = f"{job.label()}: {detail}"
        raise StarlightError(
            f"{len(failed)} of {len(todo)} {what}(s) failed ({detail}); "
            "rerun the same command to retry them: finished work is skipped"
            if what != "seed" else
            f"{len(failed)} of {len(todo)} seed(s) failed ({detail}); "
            "rerun the same command to retry them: registered seeds are skipped"
        )




# --- local: a spawn process pool, one slot per visible GPU ---------------------------------------


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (ids or UUIDs)."""
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _pool_slots(device: str, jobs: int | None) -> list[tuple[str | None, str]]:
    """(CUDA_VISIBLE_DEVICES, device) for each pool worker; empty when training in this process is the same."""
    dev = devices.resolve(device)
    if dev.type != "cuda":
        n = jobs or 1
        return [(None, str(dev))] * n if n > 1 else []
    gpus = visible_gpus()
    if dev.index is not None:
        gpus = [gpus[dev.index]]
    n = jobs or len(gpus)
    if n == 1:
        return []
    # Round-robin: --jobs above the GPU count puts several small runs on each GPU.
    return [(gpus[i % len(gpus)], "cuda") for i in range(n)]


def _pin_worker(slots_queue, threads: int, parent: int) -> None:
    # Runs first in each spawned worker, before torch initialises CUDA, so the worker sees one GPU.
    _die_with(parent)
    visible, _ = slots_queue.get()
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    # Without this every worker starts one thread per core and N workers fight over the same cores.
    thread_policy.apply()  # the policy: --threads / $OMP_NUM_THREADS, inherited from the parent, else 1


def _die_with(parent: int) -> None:
    """End this worker when `parent` dies, even by SIGKILL (which runs no clean-up in the parent): an
    orphaned worker would go on training, holding a GPU, and write into the registry behind the user's back."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    # The parent may have died before prctl took effect, and other systems have no prctl: a watchdog
    # notices that we were re-parented.
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="starlight-parent-watchdog", daemon=True).start()


class LocalPool:
    """Spawned local workers, one per slot, started once and given many jobs of any kind: each pays its
    start-up (spawning, importing torch) once, however many seeds, stars and pair batches it runs.

        with LocalPool(slots) as pool:
            future = pool.submit(job)   # a concurrent.futures.Future of run_job(job)
    """

    def __init__(self, slots: list[tuple[str | None, str]]):
        self.slots = slots
        self.where = ", ".join(sorted({f"GPU {v}" if v is not None else d for v, d in slots}))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "LocalPool":
        ctx = multiprocessing.get_context("spawn")  # fork would copy CUDA and lock state from this process
        queue = ctx.Queue()
        for slot in self.slots:
            queue.put(slot)
        threads = max(1, (os.cpu_count() or 1) // len(self.slots))
        self._pool = ProcessPoolExecutor(
            len(self.slots), mp_context=ctx, initializer=_pin_worker, initargs=(queue, threads, os.getpid())
        )
        return self

    def __exit__(self, *exc) -> None:
        # On an error or Ctrl-C the queued jobs are dropped, not run: a rerun resumes what was started.
        self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        self._pool = None

    def submit(self, job):
        return self._pool.submit(run_job, replace(job, device=self.slots[0][1]))


def local_pool(device: str, jobs: int | None) -> LocalPool | None:
    """A `LocalPool` for `--jobs`/the visible GPUs, or None where one slot means running here."""
    slots = _pool_slots(device, jobs)
    return LocalPool(slots) if slots else None


def _run_local(todo: list, slots, reporter, pool: LocalPool | None = None) -> "_Results":
    """`todo` on `pool` (kept open for the caller's next jobs), or on a pool of `slots` opened for it."""
    if pool is None:
        with LocalPool(slots) as own:
            return _run_local(todo, slots, reporter, own)
    results = _Results(reporter, todo, f"{len(pool.slots)} local workers ({pool.where})")
    futures = {pool.submit(job): i for i, job in enumerate(todo)}
    for future in as_completed(futures):
        i = futures[future]
        try:
            results[i] = future.result()
        except Exception as e:  # noqa: BLE001 - every job's failure is reported, the others still finish
            results[i] = e
    return results


# --- slurm: submitit job arrays -----------------------------------------------------------------




def _run_slurm(todo: list, device, jobs, home: Path, partition, time, gpus_per_job, cluster, reporter) -> "_Results":
    submitit = require("submitit", "slurm")
    if cluster == "slurm":
        if shutil.which("sbatch") is None:
            raise StarlightError(
                "sbatch not found: run --executor slurm on a SLURM login node (or try it here with --slurm-cluster local)"
            )
    gpus = int(gpus_per_job if gpus_per_job is not None else (0 if device == "cpu" else 1))
    # Logs live under the shared home, next to the registry the jobs write into.
    folder = Path(home) / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    name = {"seed": "starlight-train", "star": "starlight-star", "pair": "starlight-barrier"}.get(todo[0].kind, f"starlight-{todo[0].kind}")
    params: dict[str, Any] = {"name": name, "timeout_min": time_minutes(time), "gpus_per_node": gpus}
    if cluster == "slurm":
        params.update(slurm_array_parallelism=jobs or len(todo))
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    # In the job, SLURM exposes the allocated GPUs as cuda:0..; `auto` finds them, cpu stays cpu.
    submitted = executor.map_array(RunJob(), [replace(job, device=device) for job in todo])
    by_id = {job.job_id: i for i, job in enumerate(submitted)}
    reporter.log(f"submitted {len(todo)} job(s) to {cluster}: {submitted[0].job_id.split('_')[0]} (logs in {folder.parent})")
    results = _Results(reporter, todo, cluster)
    try:
        # sacct is polled: gently on a real cluster, briskly for the local executors.
        poll = 15 if cluster == "slurm" else 0.5
        for job in submitit.helpers.as_completed(submitted, poll_frequency=poll):
            i = by_id[job.job_id]
            try:
                results[i] = job.result()
            except Exception as e:  # noqa: BLE001
                results[i] = _job_error(e, f"job {job.job_id} failed; its log: {job.paths.stderr}")
    except KeyboardInterrupt:
        raise StarlightError(
            "stopped waiting, but the submitted jobs keep running (see squeue); once they finish, rerun the same "
            "command to collect them: finished work is skipped"
        ) from None
    return results


# --- ray: remote tasks --------------------------------------------------------------------------






def _ray_init(ray, address: str | None) -> None:
    _check_ray_address(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise StarlightError(f"cannot start or join Ray at {address or 'a local cluster'}: {str(e).splitlines()[0]}") from None


# Set inside `ray_session`: whether that session has joined Ray yet (it joins at its first jobs).
_ray_session: dict[str, bool] | None = None


@contextmanager
def ray_session() -> Iterator[None]:
    """One Ray connection for several `run_jobs` calls (a sweep's phases): joined or started at the
    first call that has jobs (a sweep found in the registry starts no Ray), kept for the later ones, and
    shut down at the end. Each call still names its address; the first to join uses it. Without a
    session each call joins (or, with no address, starts and stops a local Ray) on its own: seconds per
    phase on a cluster, much more locally."""
    global _ray_session
    outer, _ray_session = _ray_session, {"joined": False}
    try:
        yield
    finally:
        joined = _ray_session["joined"]
        _ray_session = outer
        if joined:
            require("ray", "ray").shutdown()


def _run_ray(todo: list, device, jobs, gpus_per_job, address, reporter) -> "_Results":
    ray = require("ray", "ray")
    started = not ray.is_initialized()
    if started:
        _ray_init(ray, address)
        if _ray_session is not None:  # the session shuts it down, after its last phase
            _ray_session["joined"], started = True, False
    try:
        available = ray.cluster_resources().get("GPU", 0)
        if gpus_per_job is None:
            gpus_per_job = 0 if device == "cpu" else (1 if device.startswith("cuda") or available else 0)
        if device.startswith("cuda") and not gpus_per_job:
            raise UsageError(f"--device {device} needs --gpus-per-job above 0 on Ray, or use --device cpu")
        # Ray would queue a task it can never place and wait forever: refuse up front instead.
        if gpus_per_job > available:
            raise StarlightError(
                f"each task asks for {gpus_per_job:g} GPU(s) but the Ray cluster has {available:g}; "
                "add GPU nodes, or pass --gpus-per-job 0 --device cpu"
            )
        task = ray.remote(num_gpus=gpus_per_job, num_cpus=1, max_retries=0)(run_job)
        # Ray pins each GPU task with CUDA_VISIBLE_DEVICES; a CPU task must not grab a GPU by `auto`.
        job_device = device if gpus_per_job else "cpu"
        queue = list(range(len(todo)))
        in_flight: dict[Any, int] = {}
        results = _Results(reporter, todo, "Ray")
        limit = jobs or len(todo)
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                i = queue.pop(0)
                in_flight[task.remote(replace(todo[i], device=job_device))] = i
            done, _ = ray.wait(list(in_flight), num_returns=1)
            i = in_flight.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except Exception as e:  # noqa: BLE001
                results[i] = _job_error(getattr(e, "cause", None) or e, "Ray task failed")
        return results
    finally:
        if started:
            ray.shutdown()


# --- shared --------------------------------------------------------------------------------------


def require(module: str, extra: str):
    """Import an optional dependency, or say in one line which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StarlightError(f"--executor {extra} needs {module}: pip install 'starlight-landscapes[{extra}]'") from None


def _job_error(e: BaseException, fallback: str) -> StarlightError:
    """A worker's failure as one line: its own StarlightError message, else the last line of its trace."""
    if isinstance(e, (StarlightError, RegistryError)):
        return StarlightError(str(e).strip().splitlines()[0])
    text = str(e)
    parts = text.split("----------------------")  # submitit quotes the job's traceback between these
    lines = [line.strip() for line in (parts[1] if len(parts) >= 3 else text).splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    for prefix in ("starcli.errors.StarlightError: ", "starcli.errors.UsageError: ", "starcli.registry.errors.CorruptBlobError: ", "registry.errors.CorruptBlobError: "):
        if last.startswith(prefix):
            return StarlightError(last[len(prefix):])
    return StarlightError(f"{fallback} ({last})")


class _Results(dict):
    """Each job's result or its error, by position, logged and counted as it arrives (a barrier batch
    counts its pairs, so progress reads pairs done of total)."""

    def __init__(self, reporter, todo: list, where: str):
        super().__init__()
        self.reporter = reporter
        self.todo = todo
        kind = todo[0].kind
        self.task = reporter.task(f"{sum(j.weight() for j in todo)} {kind}(s) on {where}", sum(j.weight() for j in todo))

    def __setitem__(self, i: int, result: Any) -> None:
        super().__setitem__(i, result)
        job = self.todo[i]
        if isinstance(result, BaseException):
            self.reporter.log(f"{job.label()}: failed: {result}")
        elif hasattr(job, "describe"):  # the instruments' jobs (sharpness, plane, curve) say what they did
            self.reporter.log(f"{job.label()}: {job.describe(result)}")
        elif job.kind == "pair":
            self.reporter.log(f"{job.label()}: {result[0]} computed, {result[1] - result[0]} already stored")
        elif isinstance(job, SeedGroupJob):  # one line per seed, as when each seed is a job
            for seed, (sid, trained) in zip(job.seeds(), job.per_seed(result)):
                self.reporter.log(f"seed {seed}: {'solution' if trained else 'already registered as solution'} {sid}")
        else:
            sid, trained = result
            self.reporter.log(f"{job.label()}: {'solution' if trained else 'already registered as solution'} {sid}")
        self.task.advance(job.weight())

    def ordered(self) -> list:
        return [self.get(i, StarlightError("not run")) for i in range(len(self.todo))]


def _trained(reg, todo: list, results: list) -> dict[int, "anchors.Outcome"]:
    """`anchors.Outcome` per seed the jobs ran (one seed or a group each)."""
    raise_failures(todo, results, "seed")
    by_seed = {seed: pair for job, result in zip(todo, results) for seed, pair in zip(job.seeds(), job.per_seed(result))}
    sols = {sol.id: sol for sol in records.get_many(reg, [sid for sid, _ in by_seed.values()])}
    return {seed: anchors.Outcome(sols[sid], trained) for seed, (sid, trained) in by_seed.items()}


def _str(path) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None
