"""The instruments beyond lines on the registry: what they share. Sharpness at a solution
(solutions/sharpness.py), planes through three solutions or around one (solutions/planes.py) and curved
paths between two (solutions/bends.py) are each a kind of work in the house's shape: a typed spec (checked
once, when made), `plan(reg, spec) -> Plan(existing, todo)` (the stored row, or the jobs that make it) and
jobs (frozen, picklable, built by keyword) that any executor runs with `job.run(reg)`.

Here: the `landscapes` table's rows (one per kind, the solutions measured and the hash of the settings,
with the settings whole, so a repeated request is answered from the registry and two numbers are compared
only when they mean the same thing), running a plan's jobs here or on an executor, and the listing. Nothing
here imports torch at import time, so listing stays instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.runners.options import RunOptions
from starcli.registry import LandscapeResult, Registry

from . import records

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

SHARPNESS = "sharpness"
PLANE = "plane"
CURVE = "curve"
KINDS = (SHARPNESS, PLANE, CURVE)
ALIGN_CHOICES = ("auto", "weight", "none")
MAX_SUBSET = 1_000_000


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class LandscapeJob:
    """What the instruments' jobs share (a `runners.jobs.Job`): the registry they store into, one set of
    settings and its hash, and a result that is (landscape row id, computed now). Each kind adds what it is
    measured on, its `kind`, `label` and `run`."""

    home: str
    db_url: str
    settings: dict[str, Any]
    settings_hash: str
    device: str
    recompute: bool = False
    store_url: str | None = None

    def weight(self) -> int:
        return 1

    def describe(self, result: tuple[int, bool]) -> str:
        row_id, computed = result
        return f"stored as row {row_id}" if computed else f"already stored as row {row_id}"


@dataclass(frozen=True)
class Plan:
    """What a request needs: the stored row (`existing`), or the jobs that will store it (`todo`)."""

    existing: LandscapeResult | None
    todo: list = field(default_factory=list)

    @property
    def settings_hash(self) -> str:
        """The hash the request's row is stored under: the stored row's, else its job's."""
        return self.todo[0].settings_hash if self.todo else self.existing.settings_hash


def same_network_and_task(sols: list, what: str) -> None:
    """One line when the solutions differ in dataset (task) or architecture."""
    records.require_same_task(sols, what)
    archs = {(sol.arch, repr(sorted(sol.arch_kwargs.items()))) for sol in sols}
    if len(archs) > 1:
        raise StarlightError(f"solutions {'-'.join(str(sol.id) for sol in sols)} have different architectures; "
                             f"{what} need one network shape")


def run_plans(reg, plans: list[Plan], run: RunOptions, device: str, reporter: Reporter, what: str) -> None:
    """The plans' jobs: here one after another (a failure is its own one line), else on the runner `run` names."""
    todo = [job for p in plans for job in p.todo]
    answered = sum(p.existing is not None for p in plans)
    if answered:
        reporter.log(f"{answered} of {len(plans)} answered from the registry (--recompute to redo them)")
    if not todo:
        return
    # Only now torch and the runners: a request answered from the registry stays instant.
    from starcli.runners.jobs import raise_failures
    from starcli.runners.local import pool_slots
    from starcli.runners.run import run_jobs

    if run.executor == "local" and not pool_slots(device, run.jobs):
        for job in todo:
            job.run(reg, reporter)
    else:
        raise_failures(todo, run_jobs(reg, todo, run, device, reporter), what)


# --- the table --------------------------------------------------------------------------------------


def cached(reg: Registry, kind: str, subject: str, settings_hash: str) -> LandscapeResult | None:
    with reg.session() as s:
        return s.exec(select(LandscapeResult).where(
            LandscapeResult.kind == kind, LandscapeResult.subject == subject, LandscapeResult.settings_hash == settings_hash,
        )).first()


def store(reg: Registry, kind: str, ids: list[int], settings: dict, settings_hash: str, result: dict,
          c_id: int | None = None) -> LandscapeResult:
    """Insert (or replace, for --recompute) the row of (kind, ids, settings); `c_id`: a third solution the
    row refers to without it being part of the subject (a curve's registered bend)."""
    subject = "-".join(map(str, ids))
    a, b, c = (list(ids) + [None, None])[:3]
    c = c if c_id is None else c_id
    for _ in range(2):
        with reg.session() as s:
            row = s.exec(select(LandscapeResult).where(
                LandscapeResult.kind == kind, LandscapeResult.subject == subject, LandscapeResult.settings_hash == settings_hash,
            )).first()
            if row is None:
                row = LandscapeResult(kind=kind, subject=subject, a_id=a, b_id=b, c_id=c, settings_hash=settings_hash,
                                      settings=settings, result=result)
            else:
                row.result = result
                row.c_id = c
            s.add(row)
            try:
                s.commit()
                s.refresh(row)
                return row
            except IntegrityError:  # a concurrent writer stored the same row first: replace it
                s.rollback()
    raise StarlightError(f"could not store the {kind} result of {subject}; try again")


def row_record(row: LandscapeResult) -> dict[str, Any]:
    """One stored row as plain data: what was measured, under what, and the numbers."""
    return {"id": row.id, "kind": row.kind, "subject": row.subject, "settings": row.settings,
            "settings_hash": row.settings_hash[:12], "result": row.result,
            "created_at": row.created_at.isoformat(timespec="seconds") + "Z"}


def stored(reg: Registry | None, kind: str | None = None, solution: int | None = None) -> list[dict[str, Any]]:
    """The stored rows as a flat table (one row per measurement, headline numbers as columns), oldest first."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown instrument {kind!r}; the kinds are {', '.join(KINDS)}")
    if reg is None:
        return []
    with reg.session() as s:
        stmt = select(LandscapeResult).order_by(LandscapeResult.id)
        if kind is not None:
            stmt = stmt.where(LandscapeResult.kind == kind)
        rows = list(s.exec(stmt))
    if solution is not None:
        rows = [r for r in rows if solution in (r.a_id, r.b_id, r.c_id)]
    return [flat_record(r) for r in rows]


def flat_record(row: LandscapeResult) -> dict[str, Any]:
    item: dict[str, Any] = {"id": row.id, "kind": row.kind, "subject": row.subject}
    res, st = row.result, row.settings
    if row.kind == SHARPNESS:
        # along a segment: the path's sharpest point (its largest λ_max and the trace there)
        at = max(res["points"], key=lambda p: p["eigenvalues"][0]) if st.get("along") else res
        item.update(top_k=st["top_k"], subset=st["subset"], probes=st["probes"], seed=st["seed"],
                    loss=at["loss"], lambda_max=at["eigenvalues"][0])
        item["trace"] = at["trace"]["mean"] if "trace" in at else None
        item["trace_se"] = at["trace"]["se"] if "trace" in at else None
    if row.kind == PLANE:
        losses = [v for r in res["grid"][st["splits"][0]]["loss"] if r is not None for v in r]
        item.update(basis=st["basis"], resolution=st["resolution"], align=st.get("align"),
                    complete=res.get("complete", False), rows_done=res.get("rows_done"),
                    min_loss=min(losses) if losses else None, max_loss=max(losses) if losses else None)
    if row.kind == CURVE:
        first = st["splits"][0]
        item.update(bend=st["bend"], epochs=st["epochs"], align=st["align"], bend_solution=res["bend_solution"],
                    split=first, curve_loss_barrier=res["barriers"]["curve"][first]["loss_barrier"],
                    line_loss_barrier=res["barriers"]["line"][first]["loss_barrier"])
    item["settings_hash"] = row.settings_hash[:12]
    item["created_at"] = row.created_at.isoformat(timespec="seconds") + "Z"
    return item
