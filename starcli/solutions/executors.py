"""Where the seeds of `starlight train` run: here, a local process pool, SLURM (submitit) or Ray.

Every executor runs the same unit of work, `run_job(Job)`: open the registry from its home and
database URL, and train one seed with `anchors.train`. Workers share nothing but the registry: the
checkpoint goes into the shared store and the row into the shared database, and the (config, seed)
key makes a job that already finished a no-op, so a failed or preempted job is simply submitted again.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from registry import Registry, RegistryError
from starcli.engine import data, devices
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter

from . import anchors, records

EXECUTORS = ("local", "slurm", "ray")
SLURM_CLUSTERS = ("slurm", "local", "debug")
DEFAULT_TIME = "4:00:00"


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


def run_job(job: Job) -> tuple[int, bool]:
    """Train one seed into the shared registry; returns (solution id, trained)."""
    reg = Registry(Path(job.home), job.db_url, job.store_url)
    try:
        [outcome] = anchors.train(
            reg, job.config, [job.seed], device=job.device, data_dir=job.data_dir, download=job.download
        )
        return outcome.solution.id, outcome.trained
    finally:
        reg.close()


class TrainSeed:
    """`run_job` for submitit, which requeues a job whose callable has `checkpoint`: a seed that hits the
    SLURM time limit or is preempted goes back in the queue and resumes from its last finished epoch."""

    def __call__(self, job: Job) -> tuple[int, bool]:
        return run_job(job)

    def checkpoint(self, job: Job):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, job)


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
    if executor == "local" and not slots:
        return anchors.train(
            reg, config, seeds, device=device, data_dir=data_dir, download=download, reporter=reporter, tracking=tracking
        )
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

    def job(seed: int, dev: str) -> Job:
        return Job(str(reg.home), reg.url, config, seed, dev, _str(data_dir), download and remote, reg.store_url)

    if executor == "local":
        results = _run_local(job, seeds, slots, reporter)
    elif executor == "slurm":
        results = _run_slurm(job, seeds, device, jobs, reg.home, partition, time, gpus_per_job, slurm_cluster, reporter)
    else:
        results = _run_ray(job, seeds, device, jobs, gpus_per_job, ray_address, reporter)
    outcomes = _outcomes(reg, seeds, results)
    if tracking is not None:
        for o in outcomes:
            if o.trained:
                anchors.replay(tracking, reg, o.solution)
    return outcomes


def check_options(
    executor: str,
    jobs: int | None = None,
    partition: str | None = None,
    time: str = DEFAULT_TIME,
    gpus_per_job: float | None = None,
    slurm_cluster: str = "slurm",
    ray_address: str | None = None,
) -> None:
    """Options that only one executor understands are usage errors elsewhere, not silently ignored."""
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; use local, slurm or ray")
    misplaced = [
        ("--partition", "slurm", partition is not None),
        ("--time", "slurm", time != DEFAULT_TIME),
        ("--slurm-cluster", "slurm", slurm_cluster != "slurm"),
        ("--ray-address", "ray", ray_address is not None),
        ("--gpus-per-job", "slurm or ray", gpus_per_job is not None),
    ]
    for flag, owners, given in misplaced:
        if given and executor not in owners.split(" or "):
            raise UsageError(f"{flag} applies to --executor {owners}, not {executor}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if slurm_cluster not in SLURM_CLUSTERS:
        raise UsageError(f"unknown --slurm-cluster {slurm_cluster!r}; use slurm, local or debug")
    if gpus_per_job is not None and (gpus_per_job < 0 or (executor == "slurm" and gpus_per_job != int(gpus_per_job))):
        raise UsageError(f"--gpus-per-job must be a whole number >= 0 for slurm (fractions are for ray), got {gpus_per_job:g}")
    if executor == "slurm":
        time_minutes(time)


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


def _pin_worker(slots_queue, threads: int) -> None:
    # Runs first in each spawned worker, before torch initialises CUDA, so the worker sees one GPU.
    visible, _ = slots_queue.get()
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    # Without this every worker starts one thread per core and N workers fight over the same cores.
    torch.set_num_threads(threads)


def _run_local(make: Callable[[int, str], Job], seeds, slots, reporter) -> dict[int, Any]:
    ctx = multiprocessing.get_context("spawn")  # fork would copy CUDA and lock state from this process
    queue = ctx.Queue()
    for slot in slots:
        queue.put(slot)
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    where = ", ".join(sorted({f"GPU {v}" if v is not None else d for v, d in slots}))
    results = _Results(reporter, seeds, f"{len(slots)} local workers ({where})")
    with ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_pin_worker, initargs=(queue, threads)) as pool:
        futures = {pool.submit(run_job, make(seed, slots[0][1])): seed for seed in seeds}
        for future in as_completed(futures):
            seed = futures[future]
            try:
                results[seed] = future.result()
            except Exception as e:  # noqa: BLE001 - every seed's failure is reported, the others still finish
                results[seed] = e
    return results


# --- slurm: submitit job arrays -----------------------------------------------------------------


def time_minutes(text: str) -> int:
    """A SLURM time limit, `MINUTES`, `H:MM:SS`, `H:MM` or `D-H:MM:SS`, in whole minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise UsageError(f"malformed --time {text!r}; use minutes (90), H:MM:SS (4:00:00) or D-H:MM:SS (1-12:00:00)")
    days, a, b, c = m.groups()
    if b is None and days is None:
        minutes = int(a)
    else:
        hours, mins, secs = int(a), int(b or 0), int(c or 0)
        minutes = int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    if minutes < 1:
        raise UsageError(f"--time {text!r} is shorter than a minute")
    return minutes


def _run_slurm(make, seeds, device, jobs, home: Path, partition, time, gpus_per_job, cluster, reporter) -> dict[int, Any]:
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
    params: dict[str, Any] = {"name": "starlight-train", "timeout_min": time_minutes(time), "gpus_per_node": gpus}
    if cluster == "slurm":
        params.update(slurm_array_parallelism=jobs or len(seeds))
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    # In the job, SLURM exposes the allocated GPUs as cuda:0..; `auto` finds them, cpu stays cpu.
    submitted = executor.map_array(TrainSeed(), [make(seed, device) for seed in seeds])
    by_id = {job.job_id: seed for job, seed in zip(submitted, seeds)}
    reporter.log(f"submitted {len(seeds)} job(s) to {cluster}: {submitted[0].job_id.split('_')[0]} (logs in {folder.parent})")
    results = _Results(reporter, seeds, cluster)
    try:
        # sacct is polled: gently on a real cluster, briskly for the local executors.
        poll = 15 if cluster == "slurm" else 0.5
        for job in submitit.helpers.as_completed(submitted, poll_frequency=poll):
            seed = by_id[job.job_id]
            try:
                results[seed] = job.result()
            except Exception as e:  # noqa: BLE001
                results[seed] = _job_error(e, f"job {job.job_id} failed; its log: {job.paths.stderr}")
    except KeyboardInterrupt:
        raise StarlightError(
            "stopped waiting, but the submitted jobs keep running (see squeue); once they finish, rerun the same "
            "command to collect them: seeds already registered are skipped"
        ) from None
    return results


# --- ray: remote tasks --------------------------------------------------------------------------


def _run_ray(make, seeds, device, jobs, gpus_per_job, address, reporter) -> dict[int, Any]:
    ray = require("ray", "ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR")
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
        queue = list(seeds)
        in_flight: dict[Any, int] = {}
        results = _Results(reporter, seeds, "Ray")
        limit = jobs or len(seeds)
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                seed = queue.pop(0)
                in_flight[task.remote(make(seed, job_device))] = seed
            done, _ = ray.wait(list(in_flight), num_returns=1)
            seed = in_flight.pop(done[0])
            try:
                results[seed] = ray.get(done[0])
            except Exception as e:  # noqa: BLE001
                results[seed] = _job_error(getattr(e, "cause", None) or e, "Ray task failed")
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
        raise StarlightError(f"--executor {extra} needs {module}: pip install 'starlight[{extra}]'") from None


def _job_error(e: BaseException, fallback: str) -> StarlightError:
    """A worker's failure as one line: its own StarlightError message, else the last line of its trace."""
    if isinstance(e, (StarlightError, RegistryError)):
        return StarlightError(str(e).strip().splitlines()[0])
    text = str(e)
    parts = text.split("----------------------")  # submitit quotes the job's traceback between these
    lines = [line.strip() for line in (parts[1] if len(parts) >= 3 else text).splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    for prefix in ("starcli.errors.StarlightError: ", "starcli.errors.UsageError: ", "registry.errors.CorruptBlobError: "):
        if last.startswith(prefix):
            return StarlightError(last[len(prefix):])
    return StarlightError(f"{fallback} ({last})")


class _Results(dict):
    """Each seed's (solution id, trained) or its error, logged and counted as it arrives."""

    def __init__(self, reporter, seeds: list[int], where: str):
        super().__init__()
        self.reporter = reporter
        self.task = reporter.task(f"{len(seeds)} seed(s) on {where}", len(seeds))

    def __setitem__(self, seed: int, result: Any) -> None:
        super().__setitem__(seed, result)
        if isinstance(result, BaseException):
            self.reporter.log(f"seed {seed}: failed: {result}")
        else:
            sid, trained = result
            self.reporter.log(f"seed {seed}: {'solution' if trained else 'already registered as solution'} {sid}")
        self.task.advance()


def _outcomes(reg, seeds: Iterable[int], results: dict[int, Any]) -> list:
    seeds = list(seeds)
    failed = [(s, results[s]) for s in seeds if isinstance(results.get(s), BaseException)]
    if failed:
        seed, error = failed[0]
        detail = str(error).splitlines()[0]
        if not detail.startswith(f"seed {seed}:"):
            detail = f"seed {seed}: {detail}"
        raise StarlightError(
            f"{len(failed)} of {len(seeds)} seed(s) failed ({detail}); "
            "rerun the same command to retry them: registered seeds are skipped"
        )
    sols = records.get_many(reg, [results[s][0] for s in seeds])
    return [anchors.Outcome(sol, results[s][1]) for s, sol in zip(seeds, sols)]


def _str(path) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None
