"""Running a sweep: train what is missing, build every star, measure every barrier, write the report.

The sweep walks its grid (sweep_file.py) with the registry's idempotent calls: `anchors.train` skips
(config, seed) pairs already registered, `build_star` returns an existing star, and `measure` reads
cached curves. So a finished sweep re-runs in seconds, and an interrupted one resumes where it stopped.
The report folder (CSV, markdown, PNG) is rewritten each time.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from starcli.engine import data
from starcli.engine.star_presets import star_settings
from starcli.progress import Reporter
from starcli.registry import Registry
from starcli.reports import sweep_report
from starcli.solutions import executors, records
from starcli.solutions.barriers import measure_counted

from . import statistics
from .baselines import soup_center
from .sweep_file import Cell, Sweep


def run(
    reg: Registry,
    sweep: Sweep,
    out: Path | str,
    device: str = "auto",
    data_dir=None,
    download: bool = False,
    executor: str = "local",
    jobs: int | None = None,
    reporter: Reporter | None = None,
    tracking=None,
) -> dict[str, Any]:
    """Train what is missing, build every star, measure every barrier, write the report folder.

    Returns the sweep's results (also written as results.json): `cells` (per star: its summary and
    pairs), `rows` (the summary table), `files` (what was written under `out`) and `computed` (how many
    training runs, stars and barrier pairs this call computed rather than found in the registry).
    """
    reporter = reporter or Reporter()
    out = Path(out)
    start = time.perf_counter()
    cells = sweep.cells()
    computed = {"training_runs": 0, "stars": 0, "soups": 0, "barrier_pairs": 0}
    overall = reporter.task(f"sweep {sweep.name}", len(sweep.widths) + (3 if sweep.soup else 2) * len(cells))

    ids: dict[Any, dict[int, int]] = {}  # width → seed → solution id
    for width in sweep.widths:
        outcomes = _train(
            reg, sweep.config(width, device), sweep.seeds_to_train(), device, data_dir, download, executor, jobs, reporter, tracking
        )
        computed["training_runs"] += sum(o.trained for o in outcomes)
        ids[width] = {o.solution.seed: o.solution.id for o in outcomes}
        overall.advance(step=f"trained width {width}")

    # Every star of the sweep at once, through the executor (they need only the trained anchors).
    anchor_sets = [[ids[cell.width][s] for s in sweep.anchor_seeds[: cell.n_anchors]] for cell in cells]
    built = executors.build_stars(
        reg, [_star_spec(sweep, cell, anchors) for cell, anchors in zip(cells, anchor_sets)],
        executor=executor, device=device, jobs=jobs, reporter=reporter, tracking=tracking,
    )
    # Barrier pairs run on the executor too, in --jobs batches (local: in this process unless --jobs > 1).
    fan_out = partial(executors.barrier, executor=executor, jobs=jobs)

    results = []
    for cell, anchors, (star, created) in zip(cells, anchor_sets, built):
        held_out = [ids[cell.width][s] for s in sweep.held_out_seeds]
        computed["stars"] += int(created)
        overall.advance(step=f"star {star.id}")
        measured, n_computed = _measure(reg, sweep, star.id, held_out, device, reporter, fan_out)
        computed["barrier_pairs"] += n_computed
        overall.advance(step=f"barriers of star {star.id}")
        result = _cell_result(reg, cell, star, anchors, held_out, measured)
        if sweep.soup:
            soup = _soup(reg, sweep, anchors, held_out, measured["settings"]["align"], device, reporter, fan_out)
            computed["soups"] += int(soup["created"])
            computed["barrier_pairs"] += soup["computed"]
            result["soup"] = {k: soup[k] for k in ("summary", "pairs")} | {
                "id": soup["solution"].id, "metrics": dict(soup["solution"].metrics or {})
            }
            overall.advance(step=f"soup {result['soup']['id']}")
        results.append(result)
    overall.done()

    payload = {
        "sweep": sweep.name,
        "description": sweep.description,
        "source": sweep.source,
        "recipe": sweep.recipe,
        "train": sweep.train,
        "star": sweep.star,
        # As measured: "auto" alignment is reported as what it resolved to.
        "barriers": _barrier_settings(sweep) | ({"align": results[0]["align"]} if results else {}),
        "x": sweep.x_axis(),
        "task": _task(sweep),
        "cells": results,
        "computed": computed,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "device": device,
    }
    rows = sweep_report.summary_rows(payload, sweep.paper)
    fit = statistics.fit_line(*statistics.star_against_regular(rows)) if payload["x"] == "width" else None
    written = sweep_report.write_sweep(payload, out, rows, statistics.findings(rows, payload["x"]), fit)
    return payload | {"out": str(out), "files": written["files"], "rows": written["rows"]}


def _task(sweep: Sweep) -> str:
    return data.info(sweep.config(sweep.widths[0])["dataset"]).task


def _train(reg, config, seeds, device, data_dir, download, executor, jobs, reporter, tracking=None):
    return executors.train(
        reg, config, seeds, executor=executor, device=device, jobs=jobs, data_dir=data_dir, download=download,
        reporter=reporter, tracking=tracking,
    )


def _star_spec(sweep: Sweep, cell: Cell, anchors: list[int]) -> dict[str, Any]:
    options = dict(sweep.star)
    settings = star_settings(
        options.get("preset"), align_anchors=options.get("align_anchors"), init=options.get("init"),
        mu_star=options.get("mu_star"),
    )
    return dict(
        anchor_ids=anchors,
        epochs=options.get("epochs"),
        t_sampling=cell.t_sampling,
        samples_per_step=options.get("samples_per_step", 1),
        seed=cell.star_seed,
        **settings,
    )


def _barrier_settings(sweep: Sweep) -> dict[str, Any]:
    # The paper permutes the second model of every pair to the first (weight matching) before
    # interpolating; "auto" does so wherever the architecture has a permutation spec.
    settings = {"points": 11, "splits": ["train", "test"], "bn_calibration": "full", "align": "auto"}
    settings.update(sweep.barriers)
    return settings


def _measure(reg, sweep: Sweep, star_id: int, held_out: list[int], device: str, reporter, measure=measure_counted) -> tuple[dict[str, Any], int]:
    settings = _barrier_settings(sweep)
    return measure(
        reg,
        star=star_id,
        held_out=held_out,
        baseline="anchors",
        points=settings["points"],
        splits=tuple(settings["splits"]),
        bn_calibration=settings["bn_calibration"],
        batch_size=settings.get("batch_size"),
        align=settings["align"],
        device=device,
        reporter=reporter,
    )


def _soup(reg, sweep: Sweep, anchors: list[int], held_out: list[int], align: str, device: str, reporter, measure=None) -> dict[str, Any]:
    """The reviewers' baseline for one star: the average of the same anchors, aligned when the star's pairs
    were (`align`, as `measure` resolved it), tested on the same held-outs with the same barrier settings."""
    settings = _barrier_settings(sweep)
    return soup_center(
        reg, anchors, held_out, align_soup=align == "weight", bn_calibration=settings["bn_calibration"],
        points=settings["points"], splits=tuple(settings["splits"]), batch_size=settings.get("batch_size"),
        align=align, device=device, reporter=reporter, measure=measure,
    )


def _cell_result(reg, cell: Cell, star, anchors: list[int], held_out: list[int], measured: dict[str, Any]) -> dict[str, Any]:
    anchor_mean = records.anchor_mean_metrics(records.get_many(reg, anchors))
    return {
        "width": cell.width,
        "n_anchors": cell.n_anchors,
        "t_sampling": cell.t_sampling,
        "star_seed": cell.star_seed,
        "star": star.id,
        "align": measured["settings"]["align"],
        "anchors": anchors,
        "held_out": held_out,
        "star_metrics": dict(star.metrics or {}),
        "anchor_metrics": anchor_mean,
        "summary": measured.get("summary", {}),
        "pairs": measured.get("pairs", []),
    }
