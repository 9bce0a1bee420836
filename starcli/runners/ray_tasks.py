"""The Ray runner: one remote task per job, at most --jobs in flight, on a local or remote Ray cluster.

`ray_session` keeps one connection for several lists of jobs (a sweep's phases).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

from starcli.engine import threads as thread_policy
from starcli.errors import StarlightError, UsageError

from .jobs import Job, Results, job_error, require, run_job
from .options import check_ray_address


def _ray_init(ray, address: str | None) -> None:
    check_ray_address(address or os.environ.get("RAY_ADDRESS"))
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


def run_ray(todo: list[Job], device, jobs, gpus_per_job, address, reporter) -> Results:
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
        threads = thread_policy.current()  # each task computes with this process's thread count (its bits)
        queue = list(range(len(todo)))
        in_flight: dict[Any, int] = {}
        results = Results(reporter, todo, "Ray")
        limit = jobs or len(todo)
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                i = queue.pop(0)
                in_flight[task.remote(replace(todo[i], device=job_device), threads)] = i
            done, _ = ray.wait(list(in_flight), num_returns=1)
            i = in_flight.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except Exception as e:  # noqa: BLE001
                results[i] = job_error(getattr(e, "cause", None) or e, "Ray task failed")
        return results
    finally:
        if started:
            ray.shutdown()
