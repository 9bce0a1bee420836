"""The thread policy: how many intra-op threads torch uses in this process.

One thread by default. starlight's models are small: a step is dominated by eager dispatch, not by
matrix multiplies, so extra threads buy little on an idle machine and cost everything on a shared one
(torch's default of one thread per core made one default anchor take 51× longer under load). The cores
go to seeds, widths and pairs instead (processes, stacked seeds).

The thread count can change a CPU checkpoint's bytes (MKL splits some matrix products by thread: on a
2-core machine `train --seed 1 --epochs 5` gives sha256 703d0a14… with 1 thread and 3bbe150a… with 2).
A fixed default therefore makes checkpoints the same on every machine, where torch's default (one
thread per core) made them depend on the core count. The count is not part of a solution's key.

`--threads N` overrides, then $OMP_NUM_THREADS, then the default. `apply` imports no torch: before
torch is imported it sets $OMP_NUM_THREADS, which torch (and every spawned worker, which inherits the
environment) reads when it starts; after, it calls torch.set_num_threads too.
"""

from __future__ import annotations

import os
import sys

from starcli.errors import UsageError

DEFAULT = 1
ENV = "OMP_NUM_THREADS"


def resolve(threads: int | None = None) -> int:
    """The thread count the policy picks: `threads`, else $OMP_NUM_THREADS, else DEFAULT."""
    if threads is not None:
        if int(threads) < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        return int(threads)
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise UsageError(f"${ENV} must be a positive integer, got {env!r}") from None
        if n >= 1:
            return n
    return DEFAULT


def current() -> int:
    """This process's intra-op thread count: torch's where torch is loaded (a library caller may have set
    it, or left torch's default of one per core), else the policy's. What a runner hands to the
    processes that run its jobs, so a job computes the bits it would compute here (MKL splits a matrix
    product by thread count)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return int(torch.get_num_threads())
    return resolve()


def apply(threads: int | None = None) -> int:
    """Apply the policy to this process (and to the processes it spawns); return the thread count."""
    n = resolve(threads)
    os.environ[ENV] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads") and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM allocation, a container's cpuset,
    `taskset`), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity call (macOS): every core
        return os.cpu_count() or 1


def spare_workers() -> int:
    """How many host threads of `current()` intra-op threads each fit on the usable cores: for work this
    process alone runs beside nothing else of its own (a lone star's re-alignment), never below one."""
    return max(1, usable_cores() // current())
