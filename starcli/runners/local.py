"""The local runner: a spawn process pool, one slot per visible GPU (or --jobs CPU workers).

Each worker is pinned to its GPU before torch starts in it, computes with the intra-op thread count of
the process that started it (so a job's bits do not depend on where it ran), and dies with that process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import replace
from typing import Any, Iterator

import torch

from starcli.engine import devices
from starcli.engine import threads as thread_policy

from .jobs import Job, Results, run_job


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (ids or UUIDs)."""
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def pool_slots(device: str, jobs: int | None) -> list[tuple[str | None, str]]:
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


def pin_worker(slots_queue, threads: int, parent: int) -> None:
    # Runs first in each spawned worker, before torch initialises CUDA, so the worker sees one GPU.
    die_with(parent)
    visible, _ = slots_queue.get()
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    # The parent's count, not torch's default of one thread per core: N workers would fight over the cores,
    # and a matrix product's rounding depends on the count, so the worker's bits would differ from the
    # parent's for the same job (a library caller may run torch with any count).
    thread_policy.apply(threads)


def die_with(parent: int) -> None:
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
        threads = thread_policy.current()
        self._pool = ProcessPoolExecutor(
            len(self.slots), mp_context=ctx, initializer=pin_worker, initargs=(queue, threads, os.getpid())
        )
        return self

    def __exit__(self, *exc) -> None:
        # On an error or Ctrl-C the queued jobs are dropped, not run: a rerun resumes what was started.
        self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        self._pool = None

    def submit(self, job: Job) -> Future:
        return self._pool.submit(run_job, replace(job, device=self.slots[0][1]))


def local_pool(device: str, jobs: int | None) -> LocalPool | None:
    """A `LocalPool` for `--jobs`/the visible GPUs, or None where one slot means running here."""
    slots = pool_slots(device, jobs)
    return LocalPool(slots) if slots else None


def run_local(todo: list[Job], slots, reporter, pool: LocalPool | None = None) -> Results:
    """`todo` on `pool` (kept open for the caller's next jobs), or on a pool of `slots` opened for it."""
    if pool is None:
        with LocalPool(slots) as own:
            return run_local(todo, slots, reporter, own)
    results = Results(reporter, todo, f"{len(pool.slots)} local workers ({pool.where})")
    futures = {pool.submit(job): i for i, job in enumerate(todo)}
    for future in as_completed(futures):
        i = futures[future]
        try:
            results[i] = future.result()
        except Exception as e:  # noqa: BLE001 - every job's failure is reported, the others still finish
            results[i] = e
    return results


class Submissions:
    """Jobs on an open `LocalPool`, read back as each completes, whatever the order: `for tag, job, outcome
    in submissions`, where outcome is the job's result or its exception. More may be submitted while
    reading (a star's barrier pairs once the star is built); the loop ends when none is left.

        flow = Submissions(pool)
        flow.submit(job, tag)
        for tag, job, outcome in flow: ...
    """

    def __init__(self, pool: LocalPool):
        self.pool = pool
        self._pending: dict[Future, tuple[Any, Job]] = {}

    def submit(self, job: Job, tag: Any = None) -> None:
        self._pending[self.pool.submit(job)] = (tag, job)

    def __iter__(self) -> Iterator[tuple[Any, Job, Any]]:
        while self._pending:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for future in done:
                tag, job = self._pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as e:  # noqa: BLE001 - the caller reports it; the other jobs go on
                    outcome = e
                yield tag, job, outcome
