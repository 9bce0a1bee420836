"""Registered results -> the experiment trackers (starcli/trackers, which never sees the registry).

`live(tracker, dest)` is what `--log` hands to anchors.train / stars.build_star: a run per training that
receives each epoch's loss as it happens. `export(reg, tracker, ids, dest)` writes what is already
registered: a run per solution (resolved config as params, final metrics, history, checkpoint as an
artifact) and a run per stored barrier row among those solutions (barriers as metrics of the pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from starcli.registry import Registry

from . import barriers, records


def default_dest(reg: Registry, tracker: str) -> str | Path:
    """Where a tracker writes when no --log-dir is given: where the tracker's own environment says
    ($MLFLOW_TRACKING_URI), else beside the registry, in the home."""
    from starcli import trackers

    return trackers.default_dest(tracker, reg.home)


def check(tracker: str, option: str) -> None:
    """Fail before any training when the tracker is unknown or its library missing (one line naming the extra)."""
    from starcli import trackers

    trackers.get(tracker, option)


def live(tracker: str, dest: str | Path, group: str | None = None) -> Callable[[str, dict[str, Any], dict[str, Any]], Any]:
    """`group` names the sweep or command the runs belong to; each run is named by its kind, width and seed
    (`anchor w256 seed 3`) and its job type is its kind, so a sweep's runs can be told apart."""
    from starcli import trackers

    check(tracker, "--log")

    def start(name: str, config: dict[str, Any], tags: dict[str, Any]):
        kind = tags.get("kind")
        run = trackers.TrackedRun(
            name=trackers.run_name(kind, config, tags.get("seed")) if kind else name,
            params=config, tags=tags, group=group, job_type=kind,
        )  # fmt: skip
        return trackers.open_logger(tracker, run, dest)

    return start


def solution_runs(reg: Registry, ids: list[int]):
    from starcli.trackers.records import solution_run

    out = []
    for sol in records.get_many(reg, ids):
        rec = records.record(reg, sol, full=True)
        path = reg.store.path(sol.sha256)
        if isinstance(path, str) or not path.is_file():  # an object store: no local file to attach
            rec["checkpoint"] = None
        out.append(solution_run(rec, sol.history or []))
    return out


def pair_runs(reg: Registry, ids: list[int]):
    """The stored barrier rows whose both solutions are among `ids`, one TrackedPair each."""
    from starcli.engine.barriers import pair_record
    from starcli.trackers.records import pair_runs as to_pairs

    wanted = set(ids)
    out = []
    for row, kind in barriers.stored_rows(reg):
        if row.a_id in wanted and row.b_id in wanted:
            splits = tuple(s for s in row.settings["splits"] if s in row.result)
            settings = dict(row.settings, splits=list(splits))
            rec = pair_record(row.a_id, row.b_id, kind, row.result, splits, row.settings.get("definition", "eq1"))
            out += to_pairs({"settings": settings, "pairs": [rec]})
    return out


def export(reg: Registry, tracker: str, ids: list[int], dest: str | Path | None = None) -> dict[str, Any]:
    from starcli import trackers

    check(tracker, "--to")
    dest = dest or default_dest(reg, tracker)
    runs = solution_runs(reg, ids)
    pairs = pair_runs(reg, ids)
    return {
        "tracker": tracker,
        "destination": str(dest),
        "solutions": trackers.export(tracker, runs, dest),
        "pairs": trackers.export(tracker, pairs, dest),
    }
