"""`starlight sharpness` as a function: top-k Hessian eigenvalues and Hutchinson's trace at a solution,
or at points of the segment to another (`along`), stored in the landscapes table (solutions/landscapes.py).
The mathematics is starcli/engine/sharpness.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.runners.options import LOCAL, RunOptions
from starcli.registry import Registry
from starcli.selectors import MAX_ID, check_int, check_seed

from . import records
from .landscapes import (
    ALIGN_CHOICES,
    LandscapeJob,
    MAX_SUBSET,
    SHARPNESS,
    Plan,
    cached,
    row_record,
    run_plans,
    same_network_and_task,
    store,
)

# Bounds that keep one request finite: Lanczos keeps every Krylov vector (memory max_iter × parameters),
# and the trace's probes cost one Hessian-vector product each.
MAX_TOP_K = 50
MAX_ITER = 1_000
MAX_PROBES = 100_000


@dataclass(frozen=True)
class SharpnessSpec:
    """Sharpness at one solution: the `top_k` largest Hessian eigenvalues (Lanczos, `max_iter` products at
    most, converged when every relative residual is below `tol`) and Hutchinson's trace over `probes`
    Rademacher vectors (0: no trace), of the mean training loss over a fixed subset of `subset` training
    samples drawn with `seed` (which also seeds Lanczos' start and the probes). Checked when made."""

    solution: int
    top_k: int = 1
    probes: int = 100
    subset: int = 1_000
    seed: int = 0
    max_iter: int = 100
    tol: float = 1e-4
    batch_size: int = 4_096
    # Along the segment to another solution (e.g. star to held-out): sharpness at `points` values of t,
    # the other end aligned to this one first, BatchNorm re-estimated at interior points.
    along: int | None = None
    points: int = 5
    align: str = "auto"

    def __post_init__(self) -> None:
        check_int(self.solution, "ID", 0, MAX_ID)
        if self.along is not None:
            check_int(self.along, "--along", 0, MAX_ID)
            check_int(self.points, "--points", 2, 101)
            if self.along == self.solution:
                raise UsageError(f"--along names solution {self.solution} itself; name the other end of the segment")
            if self.align not in ALIGN_CHOICES:
                raise UsageError(f"--align must be one of {', '.join(ALIGN_CHOICES)}, got {self.align!r}")
        check_int(self.top_k, "--top-k", 1, MAX_TOP_K)
        check_int(self.max_iter, "--max-iter", 1, MAX_ITER)
        check_int(self.subset, "--subset", 1, MAX_SUBSET)
        check_int(self.batch_size, "--batch-size", 1, MAX_SUBSET)
        check_seed(self.seed)
        if not isinstance(self.probes, int) or isinstance(self.probes, bool) or self.probes == 1 or not 0 <= self.probes <= MAX_PROBES:
            raise UsageError(f"--probes must be 0 (no trace) or from 2 to {MAX_PROBES:,} (the standard error needs two), got {self.probes!r}")
        if self.max_iter < self.top_k:
            raise UsageError(f"--max-iter ({self.max_iter}) must be at least --top-k ({self.top_k}): each eigenvalue needs a product")
        if not isinstance(self.tol, (int, float)) or isinstance(self.tol, bool) or not 0 < self.tol < 1:
            raise UsageError(f"--tol must be a relative residual between 0 and 1 (exclusive), got {self.tol!r}")

    def settings(self, align: str | None = None) -> dict[str, Any]:
        """Everything that changes the numbers (the solutions are the row's subject, not settings); along a
        segment also its points, the alignment (resolved: auto is never stored) and the BN policy."""
        out = {k: v for k, v in asdict(self).items() if k not in ("solution", "along", "points", "align")}
        out.update(split="train", mode="eval", tol=float(self.tol))
        if self.along is not None:
            out.update(along=True, points=self.points, align=align or self.align, bn_calibration="full")
        return out

    def subject(self) -> str:
        return str(self.solution) if self.along is None else f"{self.solution}-{self.along}"


@dataclass(frozen=True, kw_only=True)
class SharpnessJob(LandscapeJob):
    """Sharpness of one solution under one set of settings; stores its row when it finishes."""

    solution: int
    along: int | None = None

    kind = SHARPNESS

    def subject(self) -> str:
        return str(self.solution) if self.along is None else f"{self.solution}-{self.along}"

    def label(self) -> str:
        where = f"solution {self.solution}" if self.along is None else f"the segment {self.solution}-{self.along}"
        return f"sharpness of {where}"

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, bool]:
        """(landscape row id, computed now)."""
        if not self.recompute:
            row = cached(reg, SHARPNESS, self.subject(), self.settings_hash)
            if row is not None:
                return row.id, False
        if self.along is None:
            result = compute_sharpness(reg, self.solution, self.settings, self.device, reporter or Reporter())
        else:
            result = compute_sharpness_along(reg, self.solution, self.along, self.settings, self.device,
                                             reporter or Reporter())
        ids = [self.solution] if self.along is None else [self.solution, self.along]
        row = store(reg, SHARPNESS, ids, self.settings, self.settings_hash, result)
        return row.id, True


def plan(reg: Registry, spec: SharpnessSpec, device: str = "auto", recompute: bool = False) -> Plan:
    settings_hash = config_hash(_sharpness_settings(reg, spec))
    existing = None if recompute else cached(reg, SHARPNESS, spec.subject(), settings_hash)
    if existing is not None:
        return Plan(existing)
    return Plan(None, [SharpnessJob(home=str(reg.home), db_url=reg.url, solution=spec.solution,
                                    settings=_sharpness_settings(reg, spec), settings_hash=settings_hash, device=device,
                                    recompute=recompute, store_url=reg.store_url, along=spec.along)])


def _sharpness_settings(reg: Registry, spec: SharpnessSpec) -> dict[str, Any]:
    """The spec's settings once its solutions are checked (one line when one does not exist, or the two
    ends of a segment differ in task or architecture) and `--align auto` is resolved."""
    if spec.along is None:
        records.get(reg, spec.solution)
        return spec.settings()
    sols = records.get_many(reg, [spec.solution, spec.along])
    same_network_and_task(sols, "the two ends of a segment")
    align = spec.align
    if align == "auto":
        from starcli.alignment import has_spec

        align = "weight" if has_spec(sols[0].arch, sols[0].arch_kwargs) else "none"
    return spec.settings(align)


def measure(reg: Registry, specs: list[SharpnessSpec], device: str = "auto", recompute: bool = False,
            run: RunOptions = LOCAL, reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """Sharpness of each spec's solution, computed where missing on the runner `run` names
    and read back from the registry: one record per spec, in order."""
    reporter = reporter or Reporter()
    plans = [plan(reg, spec, device, recompute) for spec in specs]
    run_plans(reg, plans, run, device, reporter, "sharpness job")
    out = []
    kinds = {sol.id: sol.kind for sol in records.get_many(reg, list(dict.fromkeys(spec.solution for spec in specs)))}
    for p, spec in zip(plans, specs):
        row = cached(reg, SHARPNESS, spec.subject(), p.settings_hash)
        if row is None:  # stored by a worker, then removed by someone else before we read it
            raise StarlightError(f"the sharpness of {spec.subject()} was not stored; rerun to retry it")
        out.append(row_record(row) | {"solution_kind": kinds[spec.solution]})
    return out


def compute_sharpness(reg: Registry, sid: int, settings: dict[str, Any], device: str, reporter: Reporter) -> dict[str, Any]:
    """The engine's measurement of one solution (engine/sharpness.py); non-convergence is one line."""
    import time

    from starcli.engine import devices
    from starcli.engine import sharpness as engine
    from starcli.engine.data import load_split

    dev = devices.resolve(device)
    sol = records.get(reg, sid)
    split = load_split(sol.dataset, settings["split"], dev, cache_dir=records.dataset_cache(reg))
    x, y = engine.fixed_subset(split.x, split.y, settings["subset"], settings["seed"])
    net = records.network(reg, sol, dev).float()  # products in float32, whatever precision it trained in
    task = reporter.task(f"sharpness of solution {sid}", 1)
    start = time.perf_counter()
    try:
        result = engine.measure(net, x, y, settings["top_k"], settings["probes"], settings["max_iter"], settings["tol"],
                                seed=settings["seed"], batch_size=settings["batch_size"])
    except engine.NotConverged as e:
        raise StarlightError(f"solution {sid}: {e}; nothing was stored (raise --max-iter or --tol)") from None
    except ValueError as e:
        raise StarlightError(f"solution {sid}: {e}; nothing was stored") from None
    task.advance()
    task.done()
    result.update(samples=len(x), device=str(dev), seconds=round(time.perf_counter() - start, 4))
    return result


def compute_sharpness_along(reg: Registry, sid: int, other: int, settings: dict[str, Any], device: str,
                            reporter: Reporter) -> dict[str, Any]:
    """Sharpness at `points` values of t on the segment from `sid` to `other` (aligned to `sid` first):
    the ends as stored, interior points with BatchNorm re-estimated on the training split, as a barrier's."""
    import time

    from starcli import models
    from starcli.engine import devices, evaluation
    from starcli.engine import sharpness as engine
    from starcli.engine.data import load_split
    from starcli.engine.interpolation import interpolate_state

    dev = devices.resolve(device)
    sol_a, sol_b = records.get_many(reg, [sid, other])
    state_a, state_b = records.state_dict(reg, sol_a, dev), records.state_dict(reg, sol_b, dev)
    if settings["align"] == "weight":
        from starcli.alignment import align_state

        state_b = align_state(sol_a.arch, sol_a.arch_kwargs, state_a, state_b, seed=0)
    split = load_split(sol_a.dataset, settings["split"], dev, cache_dir=records.dataset_cache(reg))
    x, y = engine.fixed_subset(split.x, split.y, settings["subset"], settings["seed"])
    train_x = load_split(sol_a.dataset, "train", dev, cache_dir=records.dataset_cache(reg)).x
    net = models.create(sol_a.arch, **sol_a.arch_kwargs).to(dev).float()
    ts = [i / (settings["points"] - 1) for i in range(settings["points"])]
    task = reporter.task(f"sharpness along {sid}-{other}", len(ts))
    start = time.perf_counter()
    measured = []
    for t in ts:
        net.load_state_dict(state_a if t == 0 else state_b if t == 1 else interpolate_state(state_a, state_b, t))
        if 0 < t < 1:
            evaluation.recalibrate_bn(net, train_x)
        try:
            measured.append(engine.measure(net, x, y, settings["top_k"], settings["probes"], settings["max_iter"],
                                           settings["tol"], seed=settings["seed"], batch_size=settings["batch_size"]))
        except engine.NotConverged as e:
            raise StarlightError(f"segment {sid}-{other} at t = {t:g}: {e}; nothing was stored (raise --max-iter or --tol)") from None
        except ValueError as e:
            raise StarlightError(f"segment {sid}-{other} at t = {t:g}: {e}; nothing was stored") from None
        task.advance()
    task.done()
    return {"t": ts, "points": measured, "samples": len(x), "device": str(dev),
            "seconds": round(time.perf_counter() - start, 4)}
