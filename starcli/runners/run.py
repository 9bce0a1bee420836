"""`run_jobs`: a list of jobs of any kind on the executor the options name, each one's result back in order."""

from __future__ import annotations

from starcli.errors import StarlightError
from starcli.progress import Reporter
from starcli.registry import Registry, RegistryError

from .jobs import Job, Results
from .options import RunOptions


def run_jobs(
    reg: Registry,
    todo: list[Job],
    run: RunOptions,
    device: str,
    reporter: Reporter | None = None,
    slots: list | None = None,
    pool=None,
) -> list:
    """Run `todo` where `run` says; returns each job's result or exception, in order.

    With the local executor and a single slot the jobs run here, one after another, with this
    process's reporter (the same as calling the work directly). `pool`: an open `local.LocalPool` to
    run them on (kept open for the caller's next jobs).
    """
    reporter = reporter or Reporter()
    if not todo:
        return []
    from starcli.engine.devices import canonical  # torch-free

    device = canonical(device)  # the slurm and ray paths compare names ("cpu", "cuda...")
    if run.executor == "local":
        from . import local

        if pool is not None:
            return local.run_local(todo, pool.slots, reporter, pool).ordered()
        slots = local.pool_slots(device, run.jobs) if slots is None else slots
        if slots:
            return local.run_local(todo, slots, reporter).ordered()
        return run_here(reg, todo, reporter)
    if run.executor == "slurm":
        from .slurm import run_slurm

        return run_slurm(
            todo, device, run.jobs, reg.home, run.partition, run.time, run.gpus_per_job, run.slurm_cluster, reporter
        ).ordered()
    from .ray_tasks import run_ray

    return run_ray(todo, device, run.jobs, run.gpus_per_job, run.ray_address, reporter).ordered()


def run_here(reg: Registry, todo: list[Job], reporter: Reporter) -> list:
    """The jobs in this process, one after another, in `reg` (the registry already open here)."""
    results = Results(reporter, todo, "this process")
    for i, job in enumerate(todo):
        try:
            results[i] = job.run(reg, reporter)
        except (StarlightError, RegistryError) as e:
            results[i] = e
    return results.ordered()
