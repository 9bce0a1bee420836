"""One actionable line for every failure that is not a StarlightError: the environment's (disk, permissions,
database, damaged files, memory) and, for anything unforeseen, a request to report it.

Matched by class name where the class lives in a library the CLI must not import eagerly (SQLAlchemy,
safetensors), so `--help`, `list` and `show` stay free of torch.
"""

from __future__ import annotations

import errno
import zipfile

REPORT = "please report it (rerun with --debug for the traceback)"


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _os_error(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}; free some space (or point --home elsewhere) and rerun"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; fix the permissions or choose another path (--home, --out, --plot)"
    if e.errno == errno.EROFS:
        return f"read-only file system{where}; choose a writable --home or output path"
    if e.errno == errno.ELOOP:
        return f"symbolic link loop{where}; fix or remove the link"
    if e.errno == errno.ENAMETOOLONG:
        return f"file name too long{where}; choose a shorter path"
    if e.errno == errno.ENOENT:
        return f"no such file or folder{where}"
    if e.errno == errno.ENOTDIR:
        return f"a path component is a file, not a folder{where}"
    if e.errno == errno.EIO:
        return f"input/output error{where}; the disk may be failing — check it and rerun"
    return f"{e.strerror or e}{where}"


def _database(e: BaseException) -> str:
    text = _first_line(e)
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return "the registry is read-only; this command writes, so use a writable --home (read-only commands such as list and show work)"
    if "locked" in low or "busy" in low:
        return "the registry is locked by another process that holds it too long; wait for it to finish and rerun"
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        return f"the registry database is damaged ({text}); restore registry.db from a backup or choose another --home"
    if "disk is full" in low or "disk i/o" in low:
        return f"the registry could not write ({text}); free disk space and rerun"
    if "unable to open" in low:
        return f"cannot open the registry database ({text}); check --home / STARLIGHT_DB_URL and its folder's permissions"
    return f"database error: {text}; check STARLIGHT_DB_URL and that the database server is reachable"


def describe(e: BaseException) -> tuple[str, int]:
    """The one line (without the `error: ` prefix) and the exit code for an exception main() did not expect."""
    names = _names(e)
    if isinstance(e, MemoryError) or "OutOfMemoryError" in names or "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
        return ("out of memory; use a smaller --batch-size, fewer --jobs, a smaller model, or a machine with more memory", 1)
    if isinstance(e, zipfile.BadZipFile):
        return (f"a file is damaged or truncated ({e}); if it is a dataset cache under <home>/data, delete it and rerun to rebuild it", 1)
    if "SafetensorError" in names or "HeaderTooLarge" in str(e) or "header too small" in str(e).lower():
        return (f"a .safetensors file is damaged ({_first_line(e)}); delete it (a resume file under <home>/runs is rebuilt) and rerun", 1)
    if "ArgumentError" in names and "sqlalchemy" in type(e).__module__:
        return (f"STARLIGHT_DB_URL is not a valid database URL ({_first_line(e)}); e.g. postgresql://user@host/db", 2)
    if "NoSuchModuleError" in names:
        return (f"STARLIGHT_DB_URL names an unknown database dialect ({_first_line(e)}); use sqlite:///PATH or postgresql://...", 2)
    if isinstance(e, ModuleNotFoundError):
        return (f"a required module is missing: {e.name}; install the package that provides it (for a database URL: its driver) and rerun", 1)
    if "OperationalError" in names or "DatabaseError" in names:
        return (_database(e), 1)
    if isinstance(e, OSError):
        return (_os_error(e), 1)
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not valid UTF-8 text ({e.reason} at byte {e.start}); check that the path names the right file", 1)
    return (f"unexpected {type(e).__name__}: {_first_line(e)} — {REPORT}", 1)
