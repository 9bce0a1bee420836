"""The executor options (--executor, --jobs and the SLURM/Ray ones) as one `RunOptions`, checked when
built, before any work.

Free of torch, so a command can refuse a misplaced option at once, and a barrier answered from the
registry still starts in well under a second.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass

from starcli.engine.devices import canonical
from starcli.errors import StarlightError, UsageError

EXECUTORS = ("local", "slurm", "ray")
SLURM_CLUSTERS = ("slurm", "local", "debug")
DEFAULT_TIME = "4:00:00"
# Jobs in flight at once: --jobs 100000 spawned workers until the machine stopped (and never exited).
MAX_JOBS = 256


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Where and how work runs: the seven executor options, checked once, when built.

    Options that only one executor understands are usage errors elsewhere, not silently ignored; every
    library call that runs work takes one of these (`run=`), and every command builds it from the one
    option bundle (commands/common.py `run_options`)."""

    executor: str = "local"
    jobs: int | None = None  # local: worker processes; slurm: array parallelism; ray: tasks in flight
    partition: str | None = None
    time: str = DEFAULT_TIME
    gpus_per_job: float | None = None
    slurm_cluster: str = "slurm"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        executor, jobs, gpus_per_job = self.executor, self.jobs, self.gpus_per_job
        if executor not in EXECUTORS:
            raise UsageError(f"unknown executor {executor!r}; use local, slurm or ray")
        misplaced = [
            ("--partition", "slurm", self.partition is not None),
            ("--time", "slurm", self.time != DEFAULT_TIME),
            ("--slurm-cluster", "slurm", self.slurm_cluster != "slurm"),
            ("--ray-address", "ray", self.ray_address is not None),
            ("--gpus-per-job", "slurm or ray", gpus_per_job is not None),
        ]
        for flag, owners, given in misplaced:
            if given and executor not in owners.split(" or "):
                raise UsageError(f"{flag} applies to --executor {owners}, not {executor}")
        if jobs is not None and jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {jobs}")
        if jobs is not None and jobs > MAX_JOBS:
            raise UsageError(f"--jobs must be at most {MAX_JOBS}, got {jobs}")
        if self.slurm_cluster not in SLURM_CLUSTERS:
            raise UsageError(f"unknown --slurm-cluster {self.slurm_cluster!r}; use slurm, local or debug")
        if gpus_per_job is not None and not math.isfinite(gpus_per_job):
            raise UsageError(f"--gpus-per-job must be a finite number >= 0, got {gpus_per_job}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise UsageError("--ray-address is empty; give HOST:PORT, ray://HOST:PORT, auto or local")
        if gpus_per_job is not None and (gpus_per_job < 0 or (executor == "slurm" and gpus_per_job != int(gpus_per_job))):
            raise UsageError(f"--gpus-per-job must be a whole number >= 0 for slurm (fractions are for ray), got {gpus_per_job:g}")
        if executor == "slurm":
            time_minutes(self.time)
        if executor == "ray" and self.ray_address is not None:
            # Before anything is opened or loaded: a wrong address is one line at once, not a minute of retries.
            check_ray_address(self.ray_address)

    @property
    def remote(self) -> bool:
        """Whether the workers have disks of their own (a remote Ray cluster): they load the data themselves."""
        return self.executor == "ray" and bool(self.ray_address or os.environ.get("RAY_ADDRESS"))

    def on_several_nodes(self) -> bool:
        """Whether jobs may land on other machines than this one (a real SLURM cluster, a remote Ray)."""
        return self.remote or (self.executor == "slurm" and self.slurm_cluster == "slurm")

    def policy_device(self, device: str) -> str:
        """`policy_device` for these options."""
        return policy_device(self.executor, device, self.gpus_per_job)


LOCAL = RunOptions()  # this process, or --jobs N local workers: what a call without `run=` gets


def policy_device(executor: str, device: str, gpus_per_job: float | None = None) -> str:
    """The device whose precision defaults (engine/precision.py) a submitted run's config gets.

    A config is resolved where the command is typed, but a SLURM or Ray job trains where it lands: with
    `--device auto` on a CPU login node, the defaults must be those of the GPU the job asks for, not of
    the login node. So: the device named, for local runs or any device but auto; "cuda" for a job that
    asks for GPUs (SLURM asks for one unless --gpus-per-job 0 or --device cpu); "cpu" for one that asks
    for none. A Ray job without --gpus-per-job takes a GPU only if the cluster has one, which is known
    only once connected: that case keeps the submitting machine's defaults (pass --device cuda or
    --gpus-per-job to decide)."""
    device = canonical(device)
    if executor == "local" or device != "auto":
        return device
    if gpus_per_job is not None:
        return "cuda" if gpus_per_job > 0 else "cpu"
    return "cuda" if executor == "slurm" else device


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


RAY_CONNECT_TIMEOUT = 10.0


def check_ray_address(address: str | None) -> None:
    """Ray retries an unreachable head for a minute or more: try its port once, briefly, and say so in one line."""
    if not address or address in ("auto", "local"):  # Ray finds or starts these itself (exactly these words)
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise StarlightError(f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT).close()
    except OSError as e:
        raise StarlightError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); is its head running?") from None
