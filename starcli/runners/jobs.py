"""What a runner knows of a job (the `Job` protocol), running one, and what comes back.

Every executor runs a job the same way, `run_job(job)`: open the registry from the job's home,
database and store URL, and do the work with the same function a local run calls. Workers share
nothing but the registry: results go into the shared store and database, and each job is keyed as a
local run is, so a job whose result is registered is a no-op and a failed or preempted job is simply
submitted again. Torch-free: what a job imports, it imports when it runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from starcli.errors import StarlightError
from starcli.progress import Reporter
from starcli.registry import Registry, RegistryError


@runtime_checkable
class Job(Protocol):
    """One picklable unit of work: a frozen dataclass built by keyword. A runner reads nothing else.

    `home`, `db_url` and `store_url` name the registry the job works in (a worker on another node has
    no shared home, only the database and the object store); `device` is where it runs, which a runner
    replaces with the one its worker was given (`dataclasses.replace`)."""

    kind: ClassVar[str]  # what one unit of `weight` is called: "3 seed(s) on 2 local workers"
    home: str
    db_url: str
    store_url: str | None
    device: str

    def label(self) -> str:
        """The job in a few words, for progress lines and failures ("seed 3")."""

    def weight(self) -> int:
        """How many units of work it holds (seeds, pairs), for progress."""

    def run(self, reg: Registry, reporter: Reporter | None = None) -> Any:
        """Do the work in `reg`; the result must be picklable (it may come back from another machine)."""

    def describe(self, result: Any) -> str:
        """`run`'s result as log lines (one per line; empty: nothing to say)."""


def run_job(job: Job, threads: int | None = None) -> Any:
    """Run one job of any kind into the shared registry (what every worker calls). `threads`: the intra-op
    thread count of the process that submitted it (`threads.current()`), applied here first, so a job
    run on a worker gives the bits it gives in the submitting process (the count changes a CPU product's
    rounding; it is not part of any key)."""
    from starcli.engine import allocator

    allocator.apply()  # in every worker (local pool, Ray, SLURM): freed memory reused; the bits do not depend on it
    if threads is not None:
        from starcli.engine import threads as thread_policy

        thread_policy.apply(threads)
    reg = Registry(Path(job.home), job.db_url, job.store_url)
    try:
        return job.run(reg)
    finally:
        reg.close()


class RunJob:
    """`run_job` for submitit, which requeues a job whose callable has `checkpoint`: a seed or a star that
    hits the SLURM time limit or is preempted goes back in the queue and resumes from its last finished
    epoch (a barrier batch keeps the pairs it stored and computes the rest). `threads`: as `run_job`'s."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __call__(self, job: Job) -> Any:
        return run_job(job, self.threads)

    def checkpoint(self, job: Job):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, job)


def require(module: str, extra: str):
    """Import an optional dependency, or say in one line which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StarlightError(f"--executor {extra} needs {module}: pip install 'starlight-landscapes[{extra}]'") from None


def job_error(e: BaseException, fallback: str) -> StarlightError:
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


class Results(dict):
    """Each job's result or its error, by position, logged (as the job describes it) and counted as it
    arrives: progress reads units of weight (pairs, seeds) done of total."""

    def __init__(self, reporter: Reporter, todo: list[Job], where: str):
        super().__init__()
        self.reporter = reporter
        self.todo = todo
        total = sum(j.weight() for j in todo)
        self.task = reporter.task(f"{total} {todo[0].kind}(s) on {where}", total)

    def __setitem__(self, i: int, result: Any) -> None:
        super().__setitem__(i, result)
        job = self.todo[i]
        if isinstance(result, BaseException):
            self.reporter.log(f"{job.label()}: failed: {result}")
        else:
            for line in job.describe(result).splitlines():
                self.reporter.log(line)
        self.task.advance(job.weight())

    def ordered(self) -> list:
        return [self.get(i, StarlightError("not run")) for i in range(len(self.todo))]


def raise_failures(todo: list[Job], results: list, what: str) -> None:
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
