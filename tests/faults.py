"""Real processes killed at named points: the wrapper a test runs instead of `python -m starcli`.

`python tests/faults.py POINT starlight-args...` patches one standard-library or starcli function so that
the process SIGKILLs itself exactly at POINT (nothing in the product knows about it), then runs the CLI's
entry point. A kill -9 cannot be caught: no `finally`, no atexit, no temp-file cleanup runs, as when the
machine loses power or the OOM killer strikes.

Points:
  blob-write      inside the blob write: the temp file is written and fsynced, before its rename into place
  blob-renamed    right after the blob's rename, before the row is inserted (an orphan blob)
  row-committed   after the row's commit, before the resume file (runs/<key>/) is removed
  resume-write    inside ResumeFile.save of the 2nd epoch: its temp file written, before its rename
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

POINTS = ("blob-write", "blob-renamed", "row-committed", "resume-write")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    real_replace = os.replace
    resume_saves = []

    def replace(src, dst, *args, **kwargs):
        dst_path = Path(os.fsdecode(dst))
        in_blobs = "blobs" in dst_path.parts
        if point == "blob-write" and in_blobs:
            die()
        if point == "resume-write" and dst_path.name == "last.safetensors":
            resume_saves.append(dst_path)
            if len(resume_saves) == 2:
                die()
        real_replace(src, dst, *args, **kwargs)
        if point == "blob-renamed" and in_blobs:
            die()

    os.replace = replace
    if point == "row-committed":
        from starcli.solutions import records

        real_add = records.add

        def add(*args, **kwargs):
            out = real_add(*args, **kwargs)
            die()
            return out

        records.add = add


def run(home: Path, point: str | None, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`starlight args` in `home` as a real process, killed at `point` (None: no fault)."""
    # A resume file every epoch (the default is every 60 s): "resume-write" kills inside the second one.
    env = dict(os.environ, STARLIGHT_HOME=str(home), OMP_NUM_THREADS="1", STARLIGHT_RESUME_EVERY_S="0")
    for name in ("STARLIGHT_DB_URL", "STARLIGHT_STORE_URL", "STARLIGHT_DATA_DIR"):
        env.pop(name, None)
    cmd = [sys.executable, __file__, point, *args] if point else [sys.executable, "-m", "starcli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def leftovers(home: Path) -> list[str]:
    """Temp files anywhere under the home's blobs/ and runs/ (what a killed writer could leave)."""
    return sorted(str(p) for sub in ("blobs", "runs") for p in (home / sub).rglob(".tmp*"))


if __name__ == "__main__":
    arm(sys.argv[1])
    from starcli.cli import main

    sys.exit(main(sys.argv[2:]))
