"""Running a sweep: train what is missing, build every star, measure every barrier, write the report.

The sweep walks its grid (sweep_file.py) with the registry's idempotent calls: `anchors.train` skips
(config, seed) pairs already registered, `build_star` returns an existing star, and `measure` reads
cached curves. So a finished sweep re-runs in seconds, and an interrupted one resumes where it stopped.
The barrier-protocol axes (sweep_file.PROTOCOL_AXES: align, renorm, definition) measure every star once
per combination of their values; the anchors, stars and soups are built once, whatever the protocol.
The report folder (CSV, markdown, PNG) is rewritten each time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from starcli import models
from starcli.engine import data, devices, stacked
from starcli.engine.recipes import config_hash
from starcli.progress import Reporter
from starcli.registry import Registry
from starcli.reports import sweep_report
from starcli.runners.local import Submissions, local_pool
from starcli.runners.options import LOCAL, RunOptions
from starcli.runners.jobs import raise_failures
from starcli.solutions import anchors, barriers, records, stars, training

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
    run: RunOptions = LOCAL,
    reporter: Reporter | None = None,
    tracking=None,
) -> dict[str, Any]:
    """Train what is missing, build every star, measure every barrier, write the report folder.

    `run`: where every phase runs (the executor options). On Ray the whole sweep shares one connection
    (one local Ray, when no address is given), not one per phase.

    Returns the sweep's results (also written as results.json): `cells` (per star: its summary and
    pairs), `rows` (the summary table), `files` (what was written under `out`) and `computed` (how many
    training runs, stars and barrier pairs this call computed rather than found in the registry).
    """
    session = nullcontext()
    if run.executor == "ray":
        from starcli.runners.ray_tasks import ray_session

        session = ray_session()
    with session:
        return _run(reg, sweep, Path(out), device, data_dir, download, run, reporter or Reporter(), tracking)


def _run(reg, sweep: Sweep, out: Path, device, data_dir, download, run: RunOptions, reporter, tracking) -> dict[str, Any]:
    start = time.perf_counter()
    cells = sweep.cells()
    computed = {"training_runs": 0, "stars": 0, "soups": 0, "barrier_pairs": 0}
    # A star, then per barrier protocol its barriers (and its soup's).
    per_star = 1 + len(sweep.protocols()) * (2 if sweep.soup else 1)
    overall = reporter.task(f"sweep {sweep.name}", len(sweep.widths) + per_star * len(cells))

    configs = width_configs(sweep, run.policy_device(device))
    pool = local_pool(device, run.jobs) if run.executor == "local" else None
    if pool is not None:
        with pool:
            results = _run_on_pool(
                reg, sweep, cells, configs, pool, device, data_dir, download, reporter, tracking, overall, computed
            )
        return _finish(sweep, out, results, computed, start, device)

    ids: dict[Any, dict[int, int]] = {}  # width → seed → solution id
    for width in sweep.widths:
        outcomes = training.train_where(
            reg, configs[width], sweep.seeds_to_train(), run=run, device=device, data_dir=data_dir, download=download,
            reporter=reporter, tracking=tracking,
        )
        computed["training_runs"] += sum(o.trained for o in outcomes)
        ids[width] = {o.solution.seed: o.solution.id for o in outcomes}
        overall.advance(step=f"trained width {width}")

    # Every star of the sweep at once, through the executor (they need only the trained anchors).
    anchor_sets = [_anchor_ids(sweep, cell, ids) for cell in cells]
    built = stars.build_stars(
        reg, [_star_spec(sweep, cell, anchor_ids) for cell, anchor_ids in zip(cells, anchor_sets)],
        run=run, device=device, reporter=reporter, tracking=tracking,
    )
    # Barrier pairs run on the executor too, in --jobs batches (local: in this process unless --jobs > 1).

    results = []
    for cell, anchor_ids, (star, created) in zip(cells, anchor_sets, built):
        held_out = _held_out_ids(sweep, cell, ids)
        computed["stars"] += int(created)
        overall.advance(step=f"star {star.id}")
        for protocol in sweep.protocols():  # one star, measured under every barrier protocol of the grid
            measured, n_computed = _measure(reg, sweep, star.id, held_out, device, reporter, run, protocol)
            computed["barrier_pairs"] += n_computed
            overall.advance(step=f"barriers of star {star.id}{_label(protocol)}")
            result = _cell_result(reg, cell, star, anchor_ids, held_out, measured, protocol)
            if sweep.soup:
                _add_soup(reg, sweep, result, anchor_ids, held_out, measured, device, reporter, computed, overall, run=run,
                          protocol=protocol)
            results.append(result)
    overall.done()
    return _finish(sweep, out, results, computed, start, device)


def missing_work(reg: Registry | None, sweep: Sweep, device: str = "auto", run: RunOptions = LOCAL) -> dict[str, Any]:
    """What a run of `sweep` would still compute in `reg` (None: no registry yet), computing nothing:
    the training runs per width, the stars (by cell), and the barrier pairs of the stars already built
    (a star not built yet has all its pairs to measure, which are known once its anchors are)."""
    configs = width_configs(sweep, run.policy_device(device))
    ids: dict[Any, dict[int, int]] = {}
    seeds: dict[str, list[int]] = {}
    for width, config in configs.items():
        found = {s: records.by_key(reg, anchors.anchor_key(config, s)) if reg is not None else None
                 for s in sweep.seeds_to_train()}
        ids[width] = {s: sol.id for s, sol in found.items() if sol is not None}
        lacking = [s for s, sol in found.items() if sol is None]
        if lacking:
            seeds[str(width)] = lacking
    stars_missing = []
    # (cell, protocol, curves' key, pairs to measure); (curves' key, pair) already stored under any definition
    todo: list[tuple[Cell, dict[str, str], str, list[tuple[int, int]]]] = []
    stored: set[tuple[str, tuple[int, int]]] = set()
    for cell in sweep.cells():
        wanted = sweep.replicate_seeds(cell.replicate)
        if any(s not in ids[cell.width] for s in wanted[0][: cell.n_anchors] + wanted[1]):
            stars_missing.append(cell)
            continue
        plan = stars.plan_star(reg, _star_spec(sweep, cell, _anchor_ids(sweep, cell, ids)))
        if plan.existing is None:
            stars_missing.append(cell)
            continue
        for protocol in sweep.protocols():
            found = barriers.plan_barriers(reg, _barrier_spec(sweep, plan.existing.id, _held_out_ids(sweep, cell, ids), protocol))
            key = _curves_key(found.settings)
            stored.update((key, pair) for pair in found.cached)
            todo.append((cell, protocol, key, found.todo))
    # A pair stored under another definition is copied, not measured (barriers.reuse_other_definitions).
    pairs = {(key, pair) for _, _, key, found in todo for pair in found} - stored
    missing = {
        "training_runs": sum(len(v) for v in seeds.values()),
        "training_seeds": seeds,  # width -> seeds not trained yet
        "stars": len(stars_missing),
        "star_cells": [dataclasses.asdict(cell) for cell in stars_missing],
        "barrier_pairs_of_built_stars": len(pairs),
    }
    if sweep.protocol:  # per barrier protocol and per (star, protocol) cell: what is left to measure
        by_protocol: dict[str, set] = {_protocol_name(p): set() for p in sweep.protocols()}
        cells = []
        for cell, protocol, key, found in todo:
            left = [pair for pair in found if (key, pair) in pairs]
            by_protocol[_protocol_name(protocol)].update((key, pair) for pair in left)
            if left:
                cells.append(dataclasses.asdict(cell) | protocol | {"barrier_pairs": len(left)})
        missing["barrier_pairs_by_protocol"] = {k: len(v) for k, v in by_protocol.items()}
        missing["barrier_cells"] = cells
    return missing


def _curves_key(settings: dict[str, Any]) -> str:
    """What a pair's stored curves depend on: its settings but the definition, which only reads them."""
    return config_hash({k: v for k, v in settings.items() if k != "definition"})


def _protocol_name(protocol: dict[str, str]) -> str:
    """"align=activation, renorm=repair": one barrier protocol of the grid, as --plan names it."""
    return ", ".join(f"{k}={v}" for k, v in protocol.items())


def _label(protocol: dict[str, str]) -> str:
    """" (align=activation, renorm=repair)": a barrier protocol in a progress line; "" for none."""
    return f" ({_protocol_name(protocol)})" if protocol else ""


def _finish(sweep: Sweep, out: Path, results: list[dict[str, Any]], computed: dict[str, int], start: float, device: str):
    payload = {
        "sweep": sweep.name,
        "description": sweep.description,
        "source": sweep.source,
        "recipe": sweep.recipe,
        "train": sweep.train,
        "star": sweep.star,
        # As measured: "auto" alignment is reported as what it resolved to.
        "barriers": _barrier_settings(sweep) | ({"align": results[0]["align"]} if results else {}),
        **({"protocol_axes": dict(sweep.protocol)} if sweep.protocol else {}),  # only then: earlier reports unchanged
        "x": sweep.x_axis(),
        "replicates": sweep.replicates,
        "task": _task(sweep),
        "cells": results,
        "computed": computed,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "device": device,
    }
    rows = sweep_report.summary_rows(payload, sweep.paper)
    # The star-vs-regular line pools every row: not across barrier protocols, whose numbers mean other things.
    fit = (statistics.fit_line(*statistics.star_against_regular(rows))
           if payload["x"] == "width" and statistics.one_protocol(rows) else None)
    written = sweep_report.write_sweep(payload, out, rows, statistics.findings(rows, payload["x"], cells=results, task=payload["task"]), fit)
    return payload | {"out": str(out), "files": written["files"], "rows": written["rows"]}


def width_configs(sweep: Sweep, device: str) -> dict[Any, dict[str, Any]]:
    """Every width's training config, resolved once for the device its runs train on (`device`, as
    `RunOptions.policy_device` names it: its precision defaults are part of the key), and used by every
    path of the sweep alike, so a pooled sweep keys its anchors exactly as a sequential one does."""
    return {width: sweep.config(width, device) for width in sweep.widths}


def _run_on_pool(reg, sweep: Sweep, cells: list[Cell], configs: dict, pool, device, data_dir, download, reporter, tracking,
                 overall, computed) -> list[dict[str, Any]]:
    """The sweep on one pool of workers started once (each imports torch once for all its jobs), every
    phase fed as soon as what it needs is registered: all widths' seed groups at once, largest first; the
    stars once the anchors are registered; a star's barrier pairs as soon as that star is; then the soups.

    Anchor ids are given in the order a sequential sweep gives them (a soup's key still holds its
    anchors' ids, and reports show ids), whatever finishes first: the workers train anchors without registering
    them (`TrainAheadJob`) and this process registers them width by width, which runs no epoch and
    stores the very same bytes; no star is submitted before every anchor is registered, and the soups
    are built here after the stars. Star ids follow the order the stars finish in."""
    ids = _train_on_pool(reg, sweep, configs, pool, device, data_dir, download, reporter, tracking, overall, computed)
    anchor_sets = [_anchor_ids(sweep, cell, ids) for cell in cells]
    held_outs = [_held_out_ids(sweep, cell, ids) for cell in cells]
    plans, star_todo = stars.star_jobs(
        reg, [_star_spec(sweep, cell, anchor_ids) for cell, anchor_ids in zip(cells, anchor_sets)], device, reporter
    )
    built: list[tuple[Any, bool]] = [(plan.existing, False) for plan in plans]
    flow = Submissions(pool)  # tagged (kind, cell index)
    sent: set[tuple[str, tuple[int, int]]] = set()  # (curves' key, pair) already on the pool
    failed: dict[str, list[tuple[Any, BaseException]]] = {"star": [], "pairs": []}

    def send_pairs(i: int) -> None:
        for protocol in sweep.protocols():
            plan = barriers.plan_barriers(reg, _barrier_spec(sweep, built[i][0].id, held_outs[i], protocol))
            # Keyed by the curves, not the definition: a pair sent under one definition is copied under the
            # others once stored (barriers.reuse_other_definitions), not measured again.
            key = _curves_key(plan.settings)
            todo = [pair for pair in plan.todo if (key, pair) not in sent]
            sent.update((key, pair) for pair in todo)
            for job in barriers.barrier_jobs(reg, todo, plan.settings, plan.settings_hash, device, len(pool.slots)) if todo else []:
                flow.submit(job, ("pairs", i))

    for i, plan in enumerate(plans):
        if plan.existing is not None:
            send_pairs(i)
    # The widest stars first, so that no long one starts last while the other workers idle.
    for i, job in sorted(star_todo, key=lambda item: -_cost(configs[cells[item[0]].width], 1)):
        flow.submit(job, ("star", i))
    for (kind, i), job, outcome in flow:
        if isinstance(outcome, BaseException):  # reported together once the others have finished
            failed[kind].append((job, outcome))
            reporter.log(f"{job.label()}: failed: {outcome}")
        elif kind == "star":
            built[i] = (records.get(reg, outcome[0]), outcome[1])
            reporter.log(job.describe(outcome))
            send_pairs(i)
        else:
            computed["barrier_pairs"] += outcome[0]
    for kind, what in (("star", "star"), ("pairs", "barrier batch")):
        if failed[kind]:
            raise_failures([j for j, _ in failed[kind]], [e for _, e in failed[kind]], what)

    results = []
    for cell, anchor_ids, held_out, (star, created) in zip(cells, anchor_sets, held_outs, built):
        computed["stars"] += int(created)
        overall.advance(step=f"star {star.id}")
        for protocol in sweep.protocols():
            # Stored: read back (other definitions than the one sent are copied from it here).
            measured, n_computed = _measure(reg, sweep, star.id, held_out, device, reporter, protocol=protocol)
            computed["barrier_pairs"] += n_computed
            overall.advance(step=f"barriers of star {star.id}{_label(protocol)}")
            result = _cell_result(reg, cell, star, anchor_ids, held_out, measured, protocol)
            if sweep.soup:
                _add_soup(reg, sweep, result, anchor_ids, held_out, measured, device, reporter, computed, overall, pool=pool,
                          protocol=protocol)
            results.append(result)
    overall.done()
    return results


def _train_on_pool(reg, sweep: Sweep, by_width: dict, pool, device, data_dir, download, reporter, tracking, overall,
                   computed) -> dict:
    """Every width's missing seeds trained on the pool, registered here in the sequential sweep's order
    (width by width, seeds in order) as soon as a width and all before it are trained. width → seed → id."""
    widths, seeds = sweep.widths, sweep.seeds_to_train()
    configs = [by_width[width] for width in widths]
    missing = [[s for s in seeds if records.by_key(reg, anchors.anchor_key(config, s)) is None] for config in configs]
    work = [(cost, w, job) for w, config in enumerate(configs) for cost, job in _train_jobs(
        reg, config, missing[w], device, data_dir, download, pool, sum(_cost(c, len(m)) for c, m in zip(configs, missing)))]
    if work:
        # Generated datasets (MNIST-1D) are made once here and cached, not by every worker at once.
        data.load(configs[0]["dataset"], "train", data_dir=data_dir, download=download, cache_dir=records.dataset_cache(reg))
    left = [sum(1 for _, v, _ in work if v == w) for w in range(len(widths))]
    flow = Submissions(pool)  # tagged by width index
    for _, w, job in sorted(work, key=lambda item: -item[0]):
        flow.submit(job, w)
    failed: list[tuple[Any, BaseException]] = []
    ids: dict[Any, dict[int, int]] = {}

    def register_ready() -> None:
        while len(ids) < len(widths) and left[len(ids)] == 0 and not failed:
            w = len(ids)
            outcomes = anchors.train(reg, configs[w], seeds, device=device, data_dir=data_dir, download=download,
                                     reporter=reporter)
            computed["training_runs"] += sum(o.trained for o in outcomes)
            if tracking is not None:
                for o in outcomes:
                    if o.trained:
                        anchors.replay(tracking, reg, o.solution)
            ids[widths[w]] = {o.solution.seed: o.solution.id for o in outcomes}
            overall.advance(step=f"trained width {widths[w]}")

    register_ready()
    for w, job, outcome in flow:
        left[w] -= 1
        if isinstance(outcome, BaseException):  # reported once the others have finished: their work is kept
            failed.append((job, outcome))
            reporter.log(f"{job.label()} (width {widths[w]}): failed: {outcome}")
        register_ready()
    if failed:
        raise_failures([j for j, _ in failed], [e for _, e in failed], "seed")
    return ids


def _train_jobs(reg, config, seeds: list[int], device, data_dir, download, pool, total: float) -> list[tuple[float, Any]]:
    """(cost, job) for the seeds of one config: one stacked group where stacking applies, split across
    workers only when the group alone would be more than half a worker's share (stacking pays less for
    wide networks, and a long group started last would leave the other workers idle); else one per seed."""
    if not seeds:
        return []
    if stacked.stackable(config, devices.resolve(device)):
        workers = len(pool.slots)
        parts = max(1, min(workers, len(seeds), math.ceil(_cost(config, len(seeds)) * 2 * workers / max(total, 1e-9))))
        groups = training.seed_groups(seeds, parts)
    else:
        groups = [[seed] for seed in seeds]
    where = dict(home=str(reg.home), db_url=reg.url, config=config, device=device,
                 data_dir=data_dir and str(Path(data_dir).expanduser().resolve()), store_url=reg.store_url)
    return [(_cost(config, len(g)), training.TrainAheadJob(seed=g[0], more=tuple(g[1:]), **where)) for g in groups]


def _cost(config: dict[str, Any], seeds: int) -> float:
    """A training's relative CPU cost: per seed, a fixed part (a step's dispatch, measured on MNIST-1D MLPs
    as much as ~3850 weights) plus one per weight; times the epochs."""
    net = models.create(config["arch"], **config["arch_kwargs"])
    return seeds * config["epochs"] * (3850 + sum(p.numel() for p in net.parameters()))


def _anchor_ids(sweep: Sweep, cell: Cell, ids: dict[Any, dict[int, int]]) -> list[int]:
    """The registry ids of a cell's anchors: the first n anchor seeds of its replicate's block."""
    return [ids[cell.width][s] for s in sweep.replicate_seeds(cell.replicate)[0][: cell.n_anchors]]


def _held_out_ids(sweep: Sweep, cell: Cell, ids: dict[Any, dict[int, int]]) -> list[int]:
    return [ids[cell.width][s] for s in sweep.replicate_seeds(cell.replicate)[1]]


def _task(sweep: Sweep) -> str:
    return data.info(sweep.config(sweep.widths[0])["dataset"]).task


def _star_spec(sweep: Sweep, cell: Cell, anchor_ids: list[int]) -> stars.StarSpec:
    options = dict(sweep.star)
    return stars.StarSpec.preset(
        options.get("preset"), realign=options.get("realign"), init=options.get("init"), mu_star=options.get("mu_star"),
        anchor_ids=anchor_ids, epochs=options.get("epochs"), t_sampling=cell.t_sampling,
        samples_per_step=options.get("samples_per_step", 1), seed=sweep.star_seed_of(cell),
        realign_every=options.get("realign_every", 1),
    )


def _barrier_settings(sweep: Sweep) -> dict[str, Any]:
    # The paper permutes the second model of every pair to the first (weight matching) before
    # interpolating; "auto" does so wherever the architecture has a permutation spec.
    settings = {"points": 11, "splits": ["train", "test"], "bn_calibration": "full", "align": "auto"}
    settings.update(sweep.barriers)
    return settings


def _measure(reg, sweep: Sweep, star_id: int, held_out: list[int], device: str, reporter,
             run: RunOptions = LOCAL, protocol: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """A star's barriers under one barrier protocol, with how many pairs were computed now (the others were
    stored)."""
    plan = barriers.plan_barriers(reg, _barrier_spec(sweep, star_id, held_out, protocol), reporter)
    computed = barriers.compute(reg, plan, run, device, reporter)
    return barriers.finish(plan, computed), len(computed)


def _barrier_spec(sweep: Sweep, star_id: int, held_out: list[int], protocol: dict[str, str] | None = None) -> barriers.BarrierSpec:
    """The measurement of one star's pairs: the [barriers] settings, with `protocol` (one value of each
    barrier-protocol axis of the grid) over them."""
    return barriers.BarrierSpec(star=star_id, held_out=held_out, baseline="anchors", **_measure_options(sweep, protocol))


def _measure_options(sweep: Sweep, protocol: dict[str, str] | None) -> dict[str, Any]:
    """BarrierSpec's options of the sweep under `protocol`: renorm, definition and temperature only where
    the file or the axis names them (otherwise the spec's defaults, which keep earlier rows' hashes)."""
    settings = _barrier_settings(sweep) | (protocol or {})
    return {
        "points": settings["points"],
        "splits": tuple(settings["splits"]),
        "bn_calibration": settings["bn_calibration"],
        "batch_size": settings.get("batch_size"),
        "align": settings["align"],
    } | {k: settings[k] for k in ("renorm", "definition", "temperature") if k in settings}


def _soup(reg, sweep: Sweep, anchor_ids: list[int], held_out: list[int], align: str, device: str, reporter,
          run: RunOptions = LOCAL, pool=None, protocol: dict[str, str] | None = None) -> dict[str, Any]:
    """The reviewers' baseline for one star: the average of the same anchors, aligned when the star's pairs
    were (`align`, as `measure` resolved it), tested on the same held-outs with the same barrier settings
    and protocol. The soup's anchors are aligned by weight matching, as the star's are when it re-aligns
    them, whichever matching aligns the pairs (weight or activation): the protocol is how pairs are measured,
    not how centers are built; so one soup serves both."""
    options = _measure_options(sweep, protocol) | {"align": align}
    return soup_center(
        reg, anchor_ids, held_out, align_soup=align != "none", device=device, reporter=reporter, run=run, pool=pool,
        **options,
    )


def _add_soup(reg, sweep: Sweep, result, anchor_ids, held_out, measured, device, reporter, computed, overall,
              run: RunOptions = LOCAL, pool=None, protocol: dict[str, str] | None = None) -> None:
    soup = _soup(reg, sweep, anchor_ids, held_out, measured["settings"]["align"], device, reporter, run, pool, protocol)
    computed["soups"] += int(soup["created"])
    computed["barrier_pairs"] += soup["computed"]
    result["soup"] = {k: soup[k] for k in ("summary", "pairs")} | {
        "id": soup["solution"].id, "metrics": dict(soup["solution"].metrics or {})
    }
    overall.advance(step=f"soup {result['soup']['id']}")


def _cell_result(reg, cell: Cell, star, anchors: list[int], held_out: list[int], measured: dict[str, Any],
                 protocol: dict[str, str] | None = None) -> dict[str, Any]:
    """One (star, barrier protocol) measurement: the star's grid values, and with barrier-protocol axes
    their values (the align axis's is the resolved `align`) and `protocol_axes`, naming them for the report."""
    anchor_mean = records.anchor_mean_metrics(records.get_many(reg, anchors))
    axes = {k: v for k, v in (protocol or {}).items() if k != "align"} | (
        {"protocol_axes": list(protocol)} if protocol else {})
    return {
        "width": cell.width,
        "n_anchors": cell.n_anchors,
        "t_sampling": cell.t_sampling,
        "star_seed": cell.star_seed,
        "replicate": cell.replicate,
        "star": star.id,
        "align": measured["settings"]["align"],
        **axes,
        "anchors": anchors,
        "held_out": held_out,
        "star_metrics": dict(star.metrics or {}),
        "anchor_metrics": anchor_mean,
        "summary": measured.get("summary", {}),
        "pairs": measured.get("pairs", []),
    }
