"""Files an export writes: checked before any work, written whole or not at all.

A target is a new path, or with --force an existing regular file; never a link (a write would land in
the file it points to), a folder, a device or a FIFO, and never inside the registry's home or store. The
bytes go to a temp file in the target's folder, which is renamed into place only once complete (a new
target by a hard link, so a file that appears meanwhile is never overwritten); any failure removes the
temp file and leaves the target as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, IO

from starcli.errors import StarlightError, UsageError


def check_outside(path: Path, protected: list[Path], option: str) -> None:
    """Refuse `path` when it is, or lies inside, one of `protected` (links resolved)."""
    where = path.parent.resolve() / path.name
    for p in protected:
        p = p.resolve()
        if where == p or p in where.parents:
            raise UsageError(f"{option} {path} is inside the registry ({p}); write exports outside the home")


def check_writable_file(path: Path, force: bool, option: str) -> None:
    """A new path, or with `force` an existing regular file (a link, folder, device or FIFO never)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        what = "a link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise UsageError(f"{option} {path} exists and is {what}; name a new file")
    if not force:
        raise UsageError(f"{option} {path} already exists; pass --force to replace it")


def write_files(writers: dict[Path, Callable[[IO[bytes]], None]], force: bool) -> None:
    """Write each path with its writer to a temp file beside it; rename all into place once all are complete."""
    temps: dict[Path, str] = {}
    try:
        for path, write in writers.items():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps[path] = tmp
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an export follows the umask
        for path, tmp in temps.items():
            _place(tmp, path, force)
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)


def write_new(path: Path, write: Callable[[IO[bytes]], None], force: bool) -> None:
    write_files({path: write}, force)


def _place(tmp: str, path: Path, force: bool) -> None:
    if force:
        check_writable_file(path, True, "the target")  # still a regular file or nothing
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the name exists: a file that appeared meanwhile is never replaced
    except FileExistsError:
        raise StarlightError(f"{path} appeared while it was written; nothing was replaced (pass --force to replace it)") from None
    except OSError:  # a file system without hard links
        check_writable_file(path, False, "the target")
        os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
