"""The instruments beyond lines, on the registry: sharpness at a solution (`starlight sharpness`), loss
planes through three solutions or around one (`starlight plane`), and curved paths between two
(`starlight curve`: the trained bend is registered as a solution of kind bend, the path's row here).

Each instrument is a kind of work in the house's shape: a typed spec (checked once, when made), a plan
(`plan(reg, spec) -> Plan(existing, todo)`: the stored row, or the jobs that make it) and jobs (frozen,
picklable, built by keyword) that any executor runs with `job.run(reg)`. A result is stored in the
`landscapes` table under (kind, the solutions measured, hash of the settings) with the settings whole,
so a repeated request is answered from the registry and two numbers are compared only when they mean
the same thing. The mathematics is starcli/engine/sharpness.py; nothing here imports torch at import
time, so listing stays instant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.registry import LandscapeResult, Registry
from starcli.selectors import MAX_ID, check_int, check_seed

from . import records

SHARPNESS = "sharpness"
PLANE = "plane"
CURVE = "curve"
KINDS = (SHARPNESS, PLANE, CURVE)
BEND_KINDS = ("bezier", "polychain")  # engine/bends.py's BENDS, copied so that parsing imports no torch
MAX_EPOCHS = 10_000
MAX_POINTS = 1_001

# Bounds that keep one request finite: Lanczos keeps every Krylov vector (memory max_iter × parameters),
# and the trace's probes cost one Hessian-vector product each.
MAX_TOP_K = 50
MAX_ITER = 1_000
MAX_PROBES = 100_000
MAX_SUBSET = 1_000_000
# A plane's grid: at most this many points a side (each point is a BatchNorm re-estimation and an
# evaluation of every split, like a point of a barrier's line).
MAX_RESOLUTION = 101
PLANE_SPLITS = ("train", "test")
ALIGN_CHOICES = ("auto", "weight", "none")


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
        if not _finite(self.margin) or not 0 <= self.margin <= 10:
            raise UsageError(f"--margin must be a fraction from 0 to 10 of the solutions' extent, got {self.margin!r}")
        if not _finite(self.span) or not 0 < self.span <= 1e3:
            raise UsageError(f"--span must be a positive distance (in units of the filter norms), got {self.span!r}")
        check_seed(self.seed)
        unknown = [sp for sp in self.splits if sp not in PLANE_SPLITS]
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


@dataclass(frozen=True)
class CurveSpec:
    """A curved path between solutions A and B (B aligned to A first): a `bend` (bezier | polychain)
    whose control point is trained for `epochs` on A's training split, then the path and the straight
    line both evaluated at `points` values of t. Checked when made."""

    a: int
    b: int
    bend: str = "bezier"
    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 128
    seed: int = 0
    points: int = 11
    splits: tuple[str, ...] = ("train", "test")
    bn_calibration: str | int = "full"
    align: str = "auto"

    def __post_init__(self) -> None:
        check_int(self.a, "A", 0, MAX_ID)
        check_int(self.b, "B", 0, MAX_ID)
        if self.a == self.b:
            raise UsageError(f"a curve needs two different solutions, got {self.a} twice")
        if self.bend not in BEND_KINDS:
            raise UsageError(f"--bend must be one of {', '.join(BEND_KINDS)}, got {self.bend!r}")
        check_int(self.epochs, "--epochs", 1, MAX_EPOCHS)
        check_int(self.batch_size, "--batch-size", 1, MAX_SUBSET)
        check_int(self.points, "--points", 3, MAX_POINTS)
        check_seed(self.seed)
        if not _finite(self.lr) or not 0 < self.lr <= 10:
            raise UsageError(f"--lr must be a positive learning rate (at most 10), got {self.lr!r}")
        unknown = [sp for sp in self.splits if sp not in PLANE_SPLITS]
        if not self.splits or unknown:
            raise UsageError(f"--splits must name train and/or test, got {','.join(self.splits) or 'nothing'}")
        bn = self.bn_calibration
        if not (bn == "full" or (isinstance(bn, int) and not isinstance(bn, bool) and bn >= 1)):
            raise UsageError(f"--bn-calibration must be full or a positive number of samples, got {bn!r}")
        if self.align not in ALIGN_CHOICES:
            raise UsageError(f"--align must be one of {', '.join(ALIGN_CHOICES)}, got {self.align!r}")

    def settings(self, align: str) -> dict[str, Any]:
        return {"bend": self.bend, "epochs": self.epochs, "lr": float(self.lr), "batch_size": self.batch_size,
                "seed": self.seed, "momentum": 0.9, "schedule": "dnn-mode-connectivity", "points": self.points,
                "splits": list(dict.fromkeys(self.splits)), "bn_calibration": self.bn_calibration, "align": align}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Plan:
    """What a request needs: the stored row (`existing`), or the jobs that will store it (`todo`)."""

    existing: LandscapeResult | None
    todo: list = field(default_factory=list)


@dataclass(frozen=True)
class SharpnessJob:
    """Sharpness of one solution under one set of settings; stores its row when it finishes."""

    home: str
    db_url: str
    solution: int
    settings: dict[str, Any]
    settings_hash: str
    device: str
    recompute: bool = False
    store_url: str | None = None
    along: int | None = None

    kind = SHARPNESS

    def subject(self) -> str:
        return str(self.solution) if self.along is None else f"{self.solution}-{self.along}"

    def label(self) -> str:
        where = f"solution {self.solution}" if self.along is None else f"the segment {self.solution}-{self.along}"
        return f"sharpness of {where}"

    def weight(self) -> int:
        return 1

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

    def describe(self, result: tuple[int, bool]) -> str:
        row_id, computed = result
        return f"stored as row {row_id}" if computed else f"already stored as row {row_id}"


def plan(reg: Registry, spec: "SharpnessSpec | PlaneSpec | CurveSpec", device: str = "auto", recompute: bool = False) -> Plan:
    """The stored row that answers `spec`, or the job that computes it, for any instrument's spec."""
    planner = {SharpnessSpec: plan_sharpness, PlaneSpec: plan_plane, CurveSpec: plan_curve}[type(spec)]
    return planner(reg, spec, device, recompute)


def plan_sharpness(reg: Registry, spec: SharpnessSpec, device: str = "auto", recompute: bool = False) -> Plan:
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
    _same_network_and_task(sols, "the two ends of a segment")
    align = spec.align
    if align == "auto":
        from starcli.alignment import has_spec

        align = "weight" if has_spec(sols[0].arch, sols[0].arch_kwargs) else "none"
    return spec.settings(align)


def sharpness(reg: Registry, specs: list[SharpnessSpec], device: str = "auto", recompute: bool = False,
              executor: str = "local", jobs: int | None = None, reporter: Reporter | None = None,
              **cluster: Any) -> list[dict[str, Any]]:
    """Sharpness of each spec's solution, computed where missing on `executor` (any of executors.py's)
    and read back from the registry: one record per spec, in order."""
    reporter = reporter or Reporter()
    plans = [plan_sharpness(reg, spec, device, recompute) for spec in specs]
    _run(reg, plans, executor, device, jobs, reporter, "sharpness job", cluster)
    out = []
    kinds = {sol.id: sol.kind for sol in records.get_many(reg, list(dict.fromkeys(spec.solution for spec in specs)))}
    for p, spec in zip(plans, specs):
        settings_hash = p.todo[0].settings_hash if p.todo else p.existing.settings_hash
        row = cached(reg, SHARPNESS, spec.subject(), settings_hash)
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


@dataclass(frozen=True)
class PlaneJob:
    """One plane's grid under one set of settings. It stores the grid row by row as a partial row, so a
    killed or requeued job resumes at the first row not stored (and says so)."""

    home: str
    db_url: str
    solutions: tuple[int, ...]
    settings: dict[str, Any]
    settings_hash: str
    device: str
    recompute: bool = False
    store_url: str | None = None

    kind = PLANE

    def label(self) -> str:
        return f"plane {'-'.join(map(str, self.solutions))}"

    def weight(self) -> int:
        return 1

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

    def describe(self, result: tuple[int, bool]) -> str:
        row_id, computed = result
        return f"stored as row {row_id}" if computed else f"already stored as row {row_id}"


def plan_plane(reg: Registry, spec: PlaneSpec, device: str = "auto", recompute: bool = False) -> Plan:
    """The stored complete grid, or the job that computes (or finishes) it; every solution exists and they
    share one task and architecture, else one line."""
    sols = records.get_many(reg, list(spec.solutions))
    _same_network_and_task(sols, "the solutions of a plane")
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


def planes(reg: Registry, specs: list[PlaneSpec], device: str = "auto", recompute: bool = False,
           executor: str = "local", jobs: int | None = None, reporter: Reporter | None = None,
           **cluster: Any) -> list[dict[str, Any]]:
    """Each spec's grid, computed (or resumed) where missing on `executor`, read back from the registry."""
    reporter = reporter or Reporter()
    plans = [plan_plane(reg, spec, device, recompute) for spec in specs]
    _run(reg, plans, executor, device, jobs, reporter, "plane job", cluster)
    out = []
    for p in plans:
        subject = "-".join(map(str, p.todo[0].solutions)) if p.todo else p.existing.subject
        settings_hash = p.todo[0].settings_hash if p.todo else p.existing.settings_hash
        row = cached(reg, PLANE, subject, settings_hash)
        if row is None or not row.result.get("complete"):
            raise StarlightError(f"the plane {subject} was not stored whole; rerun to resume it")
        out.append(row_record(row))
    return out


def _run(reg, plans: list[Plan], executor: str, device: str, jobs: int | None, reporter: Reporter, what: str,
         cluster: dict[str, Any]) -> None:
    """The plans' jobs: here one after another (a failure is its own one line), else on `executor`."""
    from .executor_options import DEFAULT_TIME, check_options

    check_options(executor, jobs, cluster.get("partition"), cluster.get("time", DEFAULT_TIME), cluster.get("gpus_per_job"),
                  cluster.get("slurm_cluster", "slurm"), cluster.get("ray_address"))
    todo = [job for p in plans for job in p.todo]
    answered = sum(p.existing is not None for p in plans)
    if answered:
        reporter.log(f"{answered} of {len(plans)} answered from the registry (--recompute to redo them)")
    if not todo:
        return
    from . import executors  # only now torch and the executors: a request answered from the registry stays instant

    if executor == "local" and executors.local_pool(device, jobs) is None:
        for job in todo:
            job.run(reg, reporter)
    else:
        results = executors.run_jobs(reg, todo, executor, device, jobs, reporter=reporter, **cluster)
        executors.raise_failures(todo, results, what)


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


@dataclass(frozen=True)
class CurveJob:
    """One curved path: train its bend, register it (kind bend), evaluate the path and the line."""

    home: str
    db_url: str
    a: int
    b: int
    settings: dict[str, Any]
    settings_hash: str
    device: str
    recompute: bool = False
    store_url: str | None = None

    kind = CURVE

    def label(self) -> str:
        return f"{self.settings['bend']} curve {self.a}-{self.b}"

    def weight(self) -> int:
        return 1

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, bool]:
        """(landscape row id, computed now)."""
        if not self.recompute:
            row = cached(reg, CURVE, f"{self.a}-{self.b}", self.settings_hash)
            if row is not None:
                return row.id, False
        row = compute_curve(reg, self.a, self.b, self.settings, self.settings_hash, self.device, reporter or Reporter())
        return row.id, True

    def describe(self, result: tuple[int, bool]) -> str:
        row_id, computed = result
        return f"stored as row {row_id}" if computed else f"already stored as row {row_id}"


def _same_network_and_task(sols: list, what: str) -> None:
    """One line when the solutions differ in dataset (task) or architecture."""
    records.require_same_task(sols, what)
    archs = {(sol.arch, repr(sorted(sol.arch_kwargs.items()))) for sol in sols}
    if len(archs) > 1:
        raise StarlightError(f"solutions {'-'.join(str(sol.id) for sol in sols)} have different architectures; "
                             f"{what} need one network shape")


def plan_curve(reg: Registry, spec: CurveSpec, device: str = "auto", recompute: bool = False) -> Plan:
    sols = records.get_many(reg, [spec.a, spec.b])
    _same_network_and_task(sols, "the two ends of a curve")
    align = spec.align
    if align == "auto":
        from starcli.alignment import has_spec

        align = "weight" if has_spec(sols[0].arch, sols[0].arch_kwargs) else "none"
    settings = spec.settings(align)
    settings_hash = config_hash(settings)
    row = None if recompute else cached(reg, CURVE, f"{spec.a}-{spec.b}", settings_hash)
    if row is not None:
        return Plan(row)
    return Plan(None, [CurveJob(home=str(reg.home), db_url=reg.url, a=spec.a, b=spec.b, settings=settings,
                                settings_hash=settings_hash, device=device, recompute=recompute, store_url=reg.store_url)])


def bent_paths(reg: Registry, specs: list[CurveSpec], device: str = "auto", recompute: bool = False,
               executor: str = "local", jobs: int | None = None, reporter: Reporter | None = None,
               **cluster: Any) -> list[dict[str, Any]]:
    """Each spec's curved path beside its straight line, trained and measured where missing on `executor`."""
    reporter = reporter or Reporter()
    plans = [plan_curve(reg, spec, device, recompute) for spec in specs]
    _run(reg, plans, executor, device, jobs, reporter, "curve job", cluster)
    out = []
    for p, spec in zip(plans, specs):
        settings_hash = p.todo[0].settings_hash if p.todo else p.existing.settings_hash
        row = cached(reg, CURVE, f"{spec.a}-{spec.b}", settings_hash)
        if row is None:
            raise StarlightError(f"the curve {spec.a}-{spec.b} was not stored; rerun to retry it")
        out.append(row_record(row))
    return out


def compute_curve(reg: Registry, a: int, b: int, settings: dict[str, Any], settings_hash: str, device: str,
                  reporter: Reporter) -> LandscapeResult:
    """Train the bend (engine/bends.py), register it, evaluate path and line, store both with their barriers."""
    import time

    from starcli import models
    from starcli.engine import bends, devices, evaluation
    from starcli.engine.barriers import barrier
    from starcli.engine.data import load_split
    from starcli.engine.interpolation import LineEvaluator

    dev = devices.resolve(device)
    sol_a, sol_b = records.get_many(reg, [a, b])
    cache = records.dataset_cache(reg)
    state_a, state_b = records.state_dict(reg, sol_a, dev), records.state_dict(reg, sol_b, dev)
    if settings["align"] == "weight":
        from starcli.alignment import align_state

        state_b = align_state(sol_a.arch, sol_a.arch_kwargs, state_a, state_b, seed=0)
    train = load_split(sol_a.dataset, "train", dev, cache_dir=cache)
    start = time.perf_counter()
    task = reporter.task(f"{settings['bend']} curve {a}-{b}: training its bend", 1)
    net = models.create(sol_a.arch, **sol_a.arch_kwargs).to(dev)
    control, history = bends.train_bend(net, settings["bend"], state_a, state_b, train.x, train.y, settings["epochs"],
                                        settings["lr"], settings["batch_size"], settings["seed"])
    task.advance()
    task.done()
    calibration = evaluation.calibration_subset(train.x, settings["bn_calibration"])
    # The bend as a usable network: BatchNorm re-estimated at its own weights, as at any point evaluated.
    net.load_state_dict(control)
    evaluation.recalibrate_bn(net, calibration)
    control = {k: v.detach().clone() for k, v in net.state_dict().items()}
    splits = {sp: load_split(sol_a.dataset, sp, dev, cache_dir=cache) for sp in settings["splits"]}
    line = LineEvaluator(sol_a.arch, sol_a.arch_kwargs, dev, {k: (v.x, v.y) for k, v in splits.items()}, calibration,
                         config=sol_a.config)
    ts = [i / (settings["points"] - 1) for i in range(settings["points"])]
    ends = (line.endpoint(state_a), line.endpoint(state_b))  # the solutions as stored, as a barrier's ends
    straight = line.curve(state_a, state_b, ts[1:-1])
    path: dict[str, dict[str, list[float]]] = {sp: {"loss": [], "acc": []} for sp in splits}
    for t in ts[1:-1]:
        theta = bends.point(settings["bend"], t, state_a, control, state_b)
        # lerp(θ, θ, 0) is θ exactly: the line evaluator's own interior path (BatchNorm re-estimated at θ)
        for sp, values in line.curve(theta, theta, [0.0]).items():
            path[sp]["loss"] += values["loss"]
            path[sp]["acc"] += values["acc"]
    result: dict[str, Any] = {"t": ts, "curve": {}, "line": {}, "barriers": {"curve": {}, "line": {}}}
    for name, interior in (("curve", path), ("line", straight)):
        for sp in splits:
            loss = [ends[0][sp][0]] + interior[sp]["loss"] + [ends[1][sp][0]]
            acc = [ends[0][sp][1]] + interior[sp]["acc"] + [ends[1][sp][1]]
            result[name][sp] = {"loss": loss, "acc": acc}
            result["barriers"][name][sp] = {"loss_barrier": barrier(ts, loss),
                                            "acc_barrier": barrier(ts, acc, higher_is_worse=False)}
    first = settings["splits"][0]
    if not all(math.isfinite(v) for v in result["curve"][first]["loss"]):
        raise StarlightError(f"the {settings['bend']} curve {a}-{b} diverged (a non-finite loss on it); lower --lr; "
                             "nothing was stored")
    metrics = evaluation.metrics(net, {sp: (v.x, v.y) for sp, v in splits.items()})
    # Keyed by what sets its bits (the training and the ends, by key), not by how the path is evaluated:
    # the same bend measured at other --points or splits is the same solution.
    trained_by = {k: settings[k] for k in ("bend", "epochs", "lr", "batch_size", "seed", "momentum", "schedule", "align")}
    config = {"bend": trained_by | {"a": sol_a.key, "b": sol_b.key}, "dataset": sol_a.dataset}
    bend_sol, _ = records.register(
        reg, control, key=records.solution_key("bend", config, settings["seed"]), kind="bend", arch=sol_a.arch,
        arch_kwargs=sol_a.arch_kwargs, dataset=sol_a.dataset, config=config, metrics=metrics, device=str(dev),
        recipe=sol_a.recipe, seed=settings["seed"], epochs=settings["epochs"], wall_seconds=time.perf_counter() - start,
        source_id=a, target_id=b, history=[{"epoch": i + 1, "loss": v} for i, v in enumerate(history)],
    )
    result.update(bend_solution=bend_sol.id, training_loss=history, device=str(dev),
                  seconds=round(time.perf_counter() - start, 4))
    return store(reg, CURVE, [a, b], settings, settings_hash, result, c_id=bend_sol.id)


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
