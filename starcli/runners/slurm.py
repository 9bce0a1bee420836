"""The SLURM runner: a submitit job array per list of jobs, polled until every job is done.

`--slurm-cluster local|debug` runs the same submission on this machine (submitit's own executors).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from starcli.engine import threads as thread_policy
from starcli.errors import StarlightError

from .jobs import Job, Results, RunJob, job_error, require
from .options import time_minutes


def run_slurm(todo: list[Job], device, jobs, home: Path, partition, time, gpus_per_job, cluster, reporter) -> Results:
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
    params: dict[str, Any] = {"name": f"starlight-{todo[0].kind}", "timeout_min": time_minutes(time), "gpus_per_node": gpus}
    if cluster == "slurm":
        params.update(slurm_array_parallelism=jobs or len(todo))
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    # In the job, SLURM exposes the allocated GPUs as cuda:0..; `auto` finds them, cpu stays cpu.
    submitted = executor.map_array(RunJob(thread_policy.current()), [replace(job, device=device) for job in todo])
    by_id = {job.job_id: i for i, job in enumerate(submitted)}
    reporter.log(f"submitted {len(todo)} job(s) to {cluster}: {submitted[0].job_id.split('_')[0]} (logs in {folder.parent})")
    results = Results(reporter, todo, cluster)
    try:
        # sacct is polled: gently on a real cluster, briskly for the local executors.
        poll = 15 if cluster == "slurm" else 0.5
        for job in submitit.helpers.as_completed(submitted, poll_frequency=poll):
            i = by_id[job.job_id]
            try:
                results[i] = job.result()
            except Exception as e:  # noqa: BLE001
                results[i] = job_error(e, f"job {job.job_id} failed; its log: {job.paths.stderr}")
    except KeyboardInterrupt:
        raise StarlightError(
            "stopped waiting, but the submitted jobs keep running (see squeue); once they finish, rerun the same "
            "command to collect them: finished work is skipped"
        ) from None
    return results
