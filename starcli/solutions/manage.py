"""Managing solutions: remove (with what depends on them), tag, note, and collecting what nothing references.

A blob is deleted only inside a write transaction that has just checked no row references its sha256; a
writer registering the same weights at that moment puts the blob back after its row is in
(records.add), so neither side can leave a row without its checkpoint.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlmodel import col, delete, or_, select

from starcli.errors import StarlightError, UsageError
from starcli.registry import BarrierResult, LandscapeResult, Registry, Solution

from . import records

STALE_RUN_SECONDS = 3600
# An orphan blob younger than this is never collected: a writer (an import, a training) may have put it
# and be about to insert its row. The writers also put their blobs back after the insert (records.add).
ORPHAN_GRACE_SECONDS = 3600


@dataclass
class Removal:
    solutions: list[int] = field(default_factory=list)
    barriers: list[int] = field(default_factory=list)  # barrier row ids
    blobs: list[str] = field(default_factory=list)  # sha256 of the checkpoints deleted
    landscapes: list[int] = field(default_factory=list)  # instrument row ids (sharpness, planes, curves)

    def as_dict(self) -> dict:
        return {"solutions": self.solutions, "barriers": self.barriers, "blobs": self.blobs, "landscapes": self.landscapes}


def dependents(sols: list[Solution], sol: Solution) -> list[tuple[int, str]]:
    """Which of `sols` are built from `sol`, and how (a star's or soup's anchor, an aligned copy's source/target)."""
    out = []
    for other in sols:
        if other.id == sol.id:
            continue
        if sol.id in (other.anchors or []):
            out.append((other.id, f"{other.kind} {other.id} has {sol.id} as an anchor"))
        elif other.kind == "bend" and sol.id in (other.source_id, other.target_id):
            out.append((other.id, f"bend {other.id} is a curve's control point between {other.source_id} and {other.target_id}"))
        elif other.source_id == sol.id:
            out.append((other.id, f"{other.kind} {other.id} was aligned from {sol.id}"))
        elif other.target_id == sol.id:
            out.append((other.id, f"{other.kind} {other.id} was aligned to {sol.id}"))
    return out


def plan_removal(reg: Registry, ids: list[int]) -> tuple[list[int], list[int], list[str]]:
    """(solution ids, barrier row ids) that removing `ids` with --cascade takes, and why each extra one goes."""
    with reg.session() as s:
        return _plan(s, ids)


def _plan(s, ids: list[int]) -> tuple[list[int], list[int], list[str]]:
    everyone = list(s.exec(select(Solution)))
    by_id = {sol.id: sol for sol in everyone}
    unknown = [i for i in ids if i not in by_id]
    if unknown:  # an error before anything is planned
        shown = ", ".join(map(str, unknown[:10])) + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise StarlightError(f"no solution with id {shown}; see `starlight list` for the ids that exist")
    going: list[int] = list(dict.fromkeys(ids))
    reasons: list[str] = []
    i = 0
    while i < len(going):  # the closure: whatever is built from something that goes, goes too
        for dep, why in dependents(everyone, by_id[going[i]]):
            if dep not in going:
                going.append(dep)
                reasons.append(why)
        i += 1
    rows = list(s.exec(select(BarrierResult).where(
        or_(col(BarrierResult.a_id).in_(going), col(BarrierResult.b_id).in_(going))).order_by(BarrierResult.id)))
    for r in rows:
        reasons.append(f"barrier row {r.id} (pair {r.a_id}-{r.b_id})")
    for r in _landscape_rows(s, going):
        reasons.append(f"{r.kind} row {r.id} (of {r.subject})")
    return going, [r.id for r in rows], reasons


def _landscape_rows(s, going: list[int]) -> list[LandscapeResult]:
    """The instrument rows (sharpness, planes, curves) that measure any solution in `going`."""
    return list(s.exec(select(LandscapeResult).where(or_(
        col(LandscapeResult.a_id).in_(going), col(LandscapeResult.b_id).in_(going), col(LandscapeResult.c_id).in_(going),
    )).order_by(LandscapeResult.id)))


def remove(reg: Registry, ids: list[int], cascade: bool = False) -> Removal:
    """Remove solutions; without cascade, refuse (changing nothing) when any other row depends on them.

    Planned and deleted in one write transaction, which a star registering on the same anchors waits
    for (it re-checks its anchors in its own, records.add): neither can leave a star without its anchor."""
    if not ids:
        raise UsageError("say which solutions to remove, e.g. `starlight rm 3` or `starlight rm seed=1-5`")
    with reg.session() as s:
        records.lock_for_references(s)
        going, barrier_ids, reasons = _plan(s, ids)
        if reasons and not cascade:
            raise StarlightError(
                f"refusing to remove {', '.join(map(str, ids))}: {'; '.join(reasons)}; "
                "pass --cascade to remove those too"
            )
        shas = sorted({sol.sha256 for sol in s.exec(select(Solution).where(col(Solution.id).in_(going)))})
        landscape_ids = [r.id for r in _landscape_rows(s, going)]
        s.exec(delete(BarrierResult).where(col(BarrierResult.id).in_(barrier_ids)))
        s.exec(delete(LandscapeResult).where(col(LandscapeResult.id).in_(landscape_ids)))
        s.exec(delete(Solution).where(col(Solution.id).in_(going)))
        s.commit()
    # Rows first, then blobs in a transaction of their own: a crash in between leaves only orphan blobs,
    # which `doctor --fix` collects, never a row without its checkpoint.
    return Removal(sorted(going), sorted(barrier_ids), collect_blobs(reg, shas), sorted(landscape_ids))


def collect_blobs(reg: Registry, shas: list[str] | None = None) -> list[str]:
    """Delete the blobs (the given ones, or every one in the store) that no row references; returns them."""
    candidates = reg.store.shas() if shas is None else list(shas)
    deleted = []
    table = Solution.__table__
    for sha in candidates:
        with reg.engine.begin() as conn:  # on SQLite BEGIN IMMEDIATE: the write lock, so no insert lands meanwhile
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("LOCK TABLE solutions IN SHARE ROW EXCLUSIVE MODE"))
            referenced = conn.execute(sa.select(table.c.id).where(table.c.sha256 == sha).limit(1)).first()
            if referenced is None and reg.store.delete(sha):
                deleted.append(sha)
    return deleted


def orphan_blobs(reg: Registry, grace: float = ORPHAN_GRACE_SECONDS, now: float | None = None) -> list[str]:
    """Blobs no row references and no writer has put for `grace` seconds (read-only: what `doctor`
    reports and `doctor --fix` deletes). A younger blob may be an import's or a training's whose row is
    about to be inserted: it is left for a later run."""
    with reg.session() as s:
        used = set(s.exec(select(Solution.sha256)))
    now = time.time() if now is None else now
    out = []
    for sha in reg.store.shas():
        if sha in used:
            continue
        put_at = reg.store.modified(sha) if grace > 0 else None
        if put_at is None or now - put_at > grace:
            out.append(sha)
    return out


# --- runs/: resume files of trainings in flight -------------------------------------------------------


def runs_dir(reg: Registry) -> Path:
    return reg.home / "runs"


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Held while a training may write `folder` (runs/<key>), so `doctor --fix` never deletes a live run."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f"{folder.name}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def release_run(folder: Path) -> None:
    """After the run's folder is gone: its lock file goes too (while still held, so no one reads it as free)."""
    if not folder.exists():
        (folder.parent / f"{folder.name}.lock").unlink(missing_ok=True)


def _locked(lock: Path) -> bool:
    try:
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def _newest_mtime(folder: Path) -> float:
    return max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.rglob("*") if p.exists()])


def stale_runs(reg: Registry, max_age: float = STALE_RUN_SECONDS, now: float | None = None) -> list[Path]:
    """runs/ folders untouched for `max_age` seconds whose lock no process holds (a crashed or killed training)."""
    base = runs_dir(reg)
    if not base.is_dir():
        return []
    now = time.time() if now is None else now
    out = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if now - _newest_mtime(folder) > max_age and not _locked(base / f"{folder.name}.lock"):
            out.append(folder)
    # A lock file whose run folder is gone: a training that failed before making it (a full disk) left it.
    for lock in sorted(base.glob("*.lock")):
        if not (base / lock.stem).exists() and now - lock.stat().st_mtime > max_age and not _locked(lock):
            out.append(lock)
    return out


def remove_runs(folders: list[Path]) -> list[str]:
    removed = []
    for folder in folders:
        lock = folder if folder.suffix == ".lock" and not folder.is_dir() else folder.parent / f"{folder.name}.lock"
        if _locked(lock):  # a training started again since it was listed
            continue
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
        removed.append(str(folder))
    return removed


def clear_registered_run(folder: Path) -> None:
    """The runs/ folder of a run whose row is already in: a process killed between its commit and the
    folder's removal left it. Removed at once (unless a training holds it), not an hour later by doctor."""
    if folder.exists():
        remove_runs([folder])


def gc(reg: Registry, fix: bool = False, max_age: float = STALE_RUN_SECONDS, grace: float = ORPHAN_GRACE_SECONDS) -> dict:
    """What `doctor` reports as garbage (orphan blobs older than `grace`, stale runs/ folders); with fix, removes it."""
    orphans, stale = orphan_blobs(reg, grace), stale_runs(reg, max_age)
    if not fix:
        return {"orphan_blobs": orphans, "stale_runs": [str(p) for p in stale]}
    return {"orphan_blobs": collect_blobs(reg, orphans), "stale_runs": remove_runs(stale)}


# --- labels ------------------------------------------------------------------------------------------


def tag(reg: Registry, ids: list[int], name: str, remove_it: bool = False) -> list[int]:
    """Add (or remove) a tag on solutions; returns the ids that changed."""
    name = name.strip()
    if not name or "," in name or "=" in name or len(name) > records.MAX_TAG_CHARS:
        raise UsageError(f"a tag is a non-empty word of at most {records.MAX_TAG_CHARS} characters without ',' or '=', got {name[:40]!r}")
    records.get_many(reg, ids)
    changed = []
    with reg.session() as s:
        for sol in s.exec(select(Solution).where(col(Solution.id).in_(ids))):
            tags = list(sol.tags or [])
            if remove_it and name in tags:
                tags.remove(name)
            elif not remove_it and name not in tags:
                if len(tags) >= records.MAX_TAGS:
                    raise UsageError(f"solution {sol.id} has {records.MAX_TAGS} tags already, the most it may have; untag some first")
                tags.append(name)
            else:
                continue
            sol.tags = tags  # a new list: SQLAlchemy sees the JSON column change
            s.add(sol)
            changed.append(sol.id)
        s.commit()
    return sorted(changed)


def note(reg: Registry, sid: int, text: str) -> None:
    """Set a solution's note (an empty text clears it)."""
    if len(text.strip()) > records.MAX_NOTE_CHARS:
        raise UsageError(f"a note is at most {records.MAX_NOTE_CHARS:,} characters, got {len(text.strip()):,}")
    with reg.session() as s:
        sol = s.get(Solution, sid)
        if sol is None:
            raise StarlightError(f"no solution with id {sid}; see `starlight list` for the ids that exist")
        sol.note = text.strip() or None
        s.add(sol)
        s.commit()

