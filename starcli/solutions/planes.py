"""`starlight plane` as a function: a loss/accuracy grid over the plane through three solutions or around
one along random filter-normalised directions, stored row by row in the landscapes table so that a killed
grid resumes (solutions/landscapes.py). The mathematics is starcli/engine/planes.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.runners.options import LOCAL, RunOptions
from starcli.registry import LandscapeResult, Registry
from starcli.selectors import MAX_ID, check_int, check_seed

from . import records
from .barriers import SPLITS  # the one torch-free copy of data.SPLITS
from .landscapes import (
    ALIGN_CHOICES,
    LandscapeJob,
    MAX_SUBSET,
    PLANE,
    Plan,
    cached,
    finite,
    row_record,
    run_plans,
    same_network_and_task,
    store,
)

# A plane's grid: at most this many points a side (each point is a BatchNorm re-estimation and an
# evaluation of every split, like a point of a barrier's line).
MAX_RESOLUTION = 101


@dataclass(frozen=True)
class PlaneSpec:
    """A loss/accuracy grid over a plane: through three solutions (B and C aligned to A first), or with
    `random`, around one solution along two seeded random directions (filter-normalised unless told
    otherwise, Li et al. 2018). `resolution` points a side; a three-solution grid covers the solutions
    with `margin` of their extent on each side, a random one spans [−span, span]². Checked when made."""

    solutions: tuple[int, ...]
    random: bool = False
    filter_normalised: bool = True
    resolution: int = 21
    margin: float = 0.2
    span: float = 1.0
    seed: int = 0
    splits: tuple[str, ...] = ("train", "test")
    bn_calibration: str | int = "full"
    batch_size: int = 4_096
    align: str = "auto"

    def __post_init__(self) -> None:
        ids = tuple(self.solutions)
        for sid in ids:
            check_int(sid, "ID", 0, MAX_ID)
        if self.random and len(ids) != 1:
            raise UsageError(f"--random draws a plane around one solution; name one, not {len(ids)}")
        if not self.random and len(ids) != 3:
            raise UsageError(f"a plane goes through three solutions (A B C), got {len(ids)}; or name one with --random")
        if len(set(ids)) != len(ids):
            raise UsageError(f"a plane needs three different solutions, got {'-'.join(map(str, ids))}")
        if not isinstance(self.resolution, int) or isinstance(self.resolution, bool) or not 2 <= self.resolution <= MAX_RESOLUTION:
            raise UsageError(f"--resolution must be from 2 to {MAX_RESOLUTION} points a side "
                             f"(at most {MAX_RESOLUTION ** 2:,} evaluations), got {self.resolution!r}")
        if not finite(self.margin) or not 0 <= self.margin <= 10:
            raise UsageError(f"--margin must be a fraction from 0 to 10 of the solutions' extent, got {self.margin!r}")
        if not finite(self.span) or not 0 < self.span <= 1e3:
            raise UsageError(f"--span must be a positive distance (in units of the filter norms), got {self.span!r}")
        check_seed(self.seed)
        unknown = [sp for sp in self.splits if sp not in SPLITS]
        if not self.splits or unknown:
            raise UsageError(f"--splits must name train and/or test, got {','.join(self.splits) or 'nothing'}")
        bn = self.bn_calibration
        if not (bn == "full" or (isinstance(bn, int) and not isinstance(bn, bool) and bn >= 1)):
            raise UsageError(f"--bn-calibration must be full or a positive number of samples, got {bn!r}")
        check_int(self.batch_size, "--batch-size", 1, MAX_SUBSET)
        if self.align not in ALIGN_CHOICES:
            raise UsageError(f"--align must be one of {', '.join(ALIGN_CHOICES)}, got {self.align!r}")

    def settings(self, align: str) -> dict[str, Any]:
        """Everything that changes the numbers, with `align` resolved (auto is never stored)."""
        out: dict[str, Any] = {"basis": "random" if self.random else "three-point", "resolution": self.resolution,
                               "splits": list(dict.fromkeys(self.splits)), "bn_calibration": self.bn_calibration,
                               "batch_size": self.batch_size}
        if self.random:
            out.update(span=float(self.span), seed=self.seed, filter_normalised=self.filter_normalised)
        else:
            out.update(margin=float(self.margin), align=align)
        return out


@dataclass(frozen=True, kw_only=True)
class PlaneJob(LandscapeJob):
    """One plane's grid under one set of settings. It stores the grid row by row as a partial row, so a
    killed or requeued job resumes at the first row not stored (and says so)."""

    solutions: tuple[int, ...]

    kind = PLANE

    def label(self) -> str:
        return f"plane {'-'.join(map(str, self.solutions))}"

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, bool]:
        """(landscape row id, computed now)."""
        subject = "-".join(map(str, self.solutions))
        row = cached(reg, PLANE, subject, self.settings_hash)
        if row is not None and row.result.get("complete") and not self.recompute:
            return row.id, False
        partial = row.result if row is not None and not row.result.get("complete") and not self.recompute else None
        row = compute_plane(reg, list(self.solutions), self.settings, self.settings_hash, self.device,
                            reporter or Reporter(), partial)
        return row.id, True


def plan(reg: Registry, spec: PlaneSpec, device: str = "auto", recompute: bool = False) -> Plan:
    """The stored complete grid, or the job that computes (or finishes) it; every solution exists and they
    share one task and architecture, else one line."""
    sols = records.get_many(reg, list(spec.solutions))
    same_network_and_task(sols, "the solutions of a plane")
    align = spec.align
    if align == "auto" and not spec.random:
        from starcli.alignment import has_spec

        align = "weight" if has_spec(sols[0].arch, sols[0].arch_kwargs) else "none"
    settings = spec.settings(align)
    settings_hash = config_hash(settings)
    subject = "-".join(map(str, spec.solutions))
    row = cached(reg, PLANE, subject, settings_hash)
    if row is not None and row.result.get("complete") and not recompute:
        return Plan(row)
    return Plan(None, [PlaneJob(home=str(reg.home), db_url=reg.url, solutions=tuple(spec.solutions), settings=settings,
                                settings_hash=settings_hash, device=device, recompute=recompute, store_url=reg.store_url)])


def measure(reg: Registry, specs: list[PlaneSpec], device: str = "auto", recompute: bool = False,
            run: RunOptions = LOCAL, reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """Each spec's grid, computed (or resumed) where missing on the runner `run` names, read back from the registry."""
    reporter = reporter or Reporter()
    plans = [plan(reg, spec, device, recompute) for spec in specs]
    run_plans(reg, plans, run, device, reporter, "plane job")
    out = []
    for p in plans:
        subject = "-".join(map(str, p.todo[0].solutions)) if p.todo else p.existing.subject
        row = cached(reg, PLANE, subject, p.settings_hash)
        if row is None or not row.result.get("complete"):
            raise StarlightError(f"the plane {subject} was not stored whole; rerun to resume it")
        out.append(row_record(row))
    return out


def compute_plane(reg: Registry, ids: list[int], settings: dict[str, Any], settings_hash: str, device: str,
                  reporter: Reporter, partial: dict[str, Any] | None = None) -> LandscapeResult:
    """The grid of one plane (engine/planes.py), stored after every grid row; `partial` resumes one."""
    import time

    from starcli.engine import devices, evaluation
    from starcli.engine import planes as engine
    from starcli.engine.data import load_split

    dev = devices.resolve(device)
    sols = records.get_many(reg, ids)
    first = sols[0]
    cache = records.dataset_cache(reg)
    states = [records.state_dict(reg, sol, dev) for sol in sols]
    names = tuple(str(i) for i in ids)
    try:
        if settings["basis"] == "random":
            basis = engine.random_basis(states[0], settings["seed"], settings["filter_normalised"], names[0])
            xs, ys = engine.grid_axes(basis, settings["resolution"], 0.0, span=settings["span"])
        else:
            if settings["align"] == "weight":
                from starcli.alignment import align_state

                states = [states[0]] + [align_state(first.arch, first.arch_kwargs, states[0], st, seed=0) for st in states[1:]]
            basis = engine.three_point_basis(*states, names=names)
            xs, ys = engine.grid_axes(basis, settings["resolution"], settings["margin"])
    except engine.DegeneratePlane as e:
        raise StarlightError(f"{e}; nothing was stored") from None
    splits = {sp: load_split(first.dataset, sp, dev, cache_dir=cache) for sp in settings["splits"]}
    calibration = evaluation.calibration_subset(load_split(first.dataset, "train", dev, cache_dir=cache).x,
                                                settings["bn_calibration"])
    evaluator = engine.PlaneEvaluator.for_arch(first.arch, first.arch_kwargs, dev, {k: (v.x, v.y) for k, v in splits.items()},
                                      calibration, settings["batch_size"], config=first.config)
    others = {k: v for k, v in states[0].items() if not v.is_floating_point()}
    subject = "-".join(names)
    done = partial["grid"] if partial else None
    rows_done = sum(r is not None for r in done[settings["splits"][0]]["loss"]) if done else 0
    if rows_done:
        reporter.log(f"plane {subject}: resuming at grid row {rows_done + 1} of {len(ys)} ({rows_done * len(xs)} points stored)")
    task = reporter.task(f"plane {subject}", len(ys), completed=rows_done)
    start = time.perf_counter()
    header = {"x": xs, "y": ys, "marks": {k: list(v) for k, v in basis.marks.items()}, "device": str(dev)}

    def save(grid: dict[str, Any], n: int) -> None:
        store(reg, PLANE, ids, settings, settings_hash, header | {"grid": grid, "complete": False, "rows_done": n})
        task.advance()

    grid = engine.evaluate_grid(evaluator, basis, others, xs, ys, done, on_row=save)
    task.done()
    seconds = round(time.perf_counter() - start + (partial or {}).get("seconds", 0.0), 4)
    return store(reg, PLANE, ids, settings, settings_hash,
                 header | {"grid": grid, "complete": True, "rows_done": len(ys), "seconds": seconds})
