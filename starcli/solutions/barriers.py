"""Barriers of registered pairs: which pairs to measure, computing the missing ones, and every query of
the barrier table. Each pair's curves are stored under (a, b, hash of the settings) and a repeated query
is answered from the registry. What the numbers mean (paper Eq. 1) is starcli/engine/barriers.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select

from starcli.engine import devices
from starcli.engine.barriers import (
    DEFAULT_DEFINITION, DEFINITION_CHOICES, PLAIN_PAIRS, REGULAR_PAIRS, STAR_PAIRS, compare_pairs, pair_record, summarize, verdict,
)
from starcli.engine.recipes import config_hash
from starcli.errors import StarlightError, UsageError
from starcli.progress import Reporter
from starcli.registry import BarrierResult, Registry, Solution
from starcli.runners.jobs import raise_failures
from starcli.runners.options import LOCAL, RunOptions

from . import records

ALIGN_CHOICES = ("none", "weight", "activation")
BASELINES = ("anchors", "none")

# A query answered from the registry imports no torch (seconds of start-up): torch, alignment and the
# evaluation engine are imported inside compute_pairs and has_spec only. So these two copies of
# engine constants (data.SPLITS, evaluation.EVAL_BATCH) live here, the only ones outside the engine (the
# instruments, bends.py and planes.py, import SPLITS from here); tests/test_startup.py checks they agree.
SPLITS = ("train", "test")
EVAL_BATCH = 4096
# The datasets whose task is regression (engine/data.py's DatasetInfo.task), for the solution verdict.
REGRESSION_DATASETS = ("linreg",)
# Each grid point is one evaluation of both splits; 1,001 resolves any barrier far finer than needed.
MAX_POINTS = 1_001


def settings_for(
    points: int, splits: tuple[str, ...], bn_calibration: str | int, batch_size: int, align: str,
    renorm: str | None = None, definition: str = DEFAULT_DEFINITION, temperature: float = 1.0,
) -> dict:
    """Everything that changes a pair's numbers (batch size: it sets BatchNorm's calibration batches)."""
    return {
        "points": points,
        "splits": list(splits),
        "bn_calibration": bn_calibration,
        "batch_size": batch_size,
        "align": align,
    } | protocol_keys(renorm, definition, temperature)


# --- the barrier's definition and renormalisation policy (issue 22) -------------------------------------
# Stored in the settings only where they differ from what barriers always were (renorm None: BatchNorm
# statistics reset where the network has BatchNorm, nothing otherwise; definition eq1; temperature 1, the
# plain cross-entropy), so the settings hash of every earlier row, and its cache, stay as they were.
RENORM_CHOICES = ("none", "reset", "repair", "rescale", "reshift")
TEMPERATURE = 1.0  # the default softmax temperature: the plain cross-entropy


def protocol_keys(renorm: str | None, definition: str, temperature: float = TEMPERATURE) -> dict:
    return (
        ({"renorm": renorm} if renorm is not None else {})
        | ({"definition": definition} if definition != DEFAULT_DEFINITION else {})
        | ({"temperature": temperature} if temperature != TEMPERATURE else {})
    )


def protocol(settings: dict, result: dict | None = None) -> dict:
    """A stored row's full protocol: renorm (the policy applied, which the row's result records since
    issue 22; "default" for older rows: reset with BatchNorm, none without), definition, temperature."""
    renorm = settings.get("renorm") or (result or {}).get("renorm") or "default"
    return {"renorm": renorm, "definition": settings.get("definition", DEFAULT_DEFINITION),
            "temperature": settings.get("temperature", TEMPERATURE)}


def canonical_renorm(renorm: str | None, arch: str, arch_kwargs: dict) -> str | None:
    """None for the network's default policy (so the row keeps the default's settings hash), else the
    policy; UsageError (one line) where it cannot apply. Builds the network on the meta device: torch."""
    if renorm is None:
        return None
    if renorm not in RENORM_CHOICES:
        raise UsageError(f"--renorm must be one of {', '.join(RENORM_CHOICES)}, got {renorm!r}")
    import torch

    from starcli import models
    from starcli.engine import evaluation, renormalisation

    with torch.device("meta"):
        has_bn = evaluation.has_batchnorm(models.create(arch, **arch_kwargs))
    renormalisation.check(renorm, has_bn)
    return None if renorm == renormalisation.default_policy(has_bn) else renorm


def reuse_other_definitions(reg, settings: dict, settings_hash: str, todo: list[tuple[int, int]]) -> dict:
    """The definition is a reading of the same curves: pairs stored under another definition (and otherwise
    the same settings) are copied under this one instead of measured again."""
    found: dict[tuple[int, int], dict] = {}
    for other in DEFINITION_CHOICES:
        if other == settings.get("definition", DEFAULT_DEFINITION) or len(found) == len(todo):
            continue
        sibling = {k: v for k, v in settings.items() if k != "definition"} | protocol_keys(None, other, TEMPERATURE)
        found |= cached_results(reg, config_hash(sibling), set(todo) - set(found))
    store_results(reg, found, settings, settings_hash)
    return found
# --------------------------------------------------------------------------------------------------------


def plan_pairs(reg, star: int | None, held_out: list[int] | None, pairs: list[tuple[int, int]] | None, baseline: str):
    """(a, b, kind) for every pair to report, and the solutions they involve (star first)."""
    if pairs:
        if star is not None or held_out:
            raise UsageError("use either --star with --held-out, or --pair A B, not both")
        plan = [(a, b, PLAIN_PAIRS) for a, b in pairs]
        sols = records.get_many(reg, list(dict.fromkeys(i for pair in pairs for i in pair)))
        records.require_same_task(sols, "both solutions of a pair")
        return plan, sols
    if star is None or not held_out:
        raise UsageError("say what to measure: --star S --held-out IDS, or --pair A B")
    if len(set(held_out)) != len(held_out):
        raise UsageError(f"--held-out lists a solution twice: {held_out}")
    ends = records.get_many(reg, [star] + held_out)  # the star and the held-outs, read once
    star_sol = ends[0]
    anchors = list(star_sol.anchors or [])
    if baseline == "anchors" and not anchors:
        raise StarlightError(
            f"solution {star} ({star_sol.kind}) records no anchors, so there is no regular-held-out baseline; "
            "pass a star id, or --baseline none"
        )
    overlap = [h for h in held_out if h in anchors or h == star]
    if overlap:
        raise StarlightError(
            f"solution {overlap[0]} helped build star {star}; held-outs must be solutions the star never saw"
        )
    with reg.session() as s:  # the anchors that still exist (with --baseline none one may have been removed)
        built_from = list(s.exec(select(Solution).where(col(Solution.id).in_(anchors)))) + ends[:1]
    by_sha = {sol.sha256: sol.id for sol in built_from}
    copies = [(sol.id, by_sha[sol.sha256]) for sol in ends[1:] if sol.sha256 in by_sha]
    if copies:
        # The same weights under another id (an imported or registered copy): not a solution the star never saw.
        held, seen = copies[0]
        raise StarlightError(
            f"held-out {held} holds the same weights as solution {seen}, which helped build star {star}; "
            "held-outs must be solutions the star never saw"
        )
    plan = [(star, h, STAR_PAIRS) for h in held_out]
    if baseline == "anchors":
        plan += [(a, h, REGULAR_PAIRS) for a in anchors for h in held_out]
    sols = ends + (records.get_many(reg, anchors) if baseline == "anchors" else [])
    records.require_same_task(sols, "the star, its anchors and the held-outs")
    return plan, sols


def cached_results(reg, settings_hash: str, ids: set[tuple[int, int]]) -> dict[tuple[int, int], dict]:
    a_ids = {a for a, _ in ids}
    with reg.session() as s:
        rows = s.exec(
            select(BarrierResult).where(BarrierResult.settings_hash == settings_hash, col(BarrierResult.a_id).in_(a_ids))
        )
        return {(r.a_id, r.b_id): r.result for r in rows if (r.a_id, r.b_id) in ids}


def store_results(reg, results: dict[tuple[int, int], dict], settings: dict, settings_hash: str) -> None:
    """Insert the pairs' results, replacing rows of the same pair and settings (--recompute)."""
    if not results:
        return
    for attempt in range(2):
        with reg.session() as s:
            existing = {
                (r.a_id, r.b_id): r
                for r in s.exec(
                    select(BarrierResult).where(
                        BarrierResult.settings_hash == settings_hash,
                        col(BarrierResult.a_id).in_({a for a, _ in results}),
                    )
                )
            }
            for (a, b), result in results.items():
                row = existing.get((a, b))
                if row is None:
                    row = BarrierResult(a_id=a, b_id=b, settings_hash=settings_hash, settings=settings, result=result)
                else:
                    row.result = result
                s.add(row)
            try:
                s.commit()
                return
            except IntegrityError:  # a concurrent writer inserted one of these pairs first: replace it
                s.rollback()
    raise StarlightError("could not store the barrier results; try again")


@dataclass(frozen=True, kw_only=True)
class BarrierSpec:
    """What to measure and how, checked once, when built: by the command line, a sweep file's [barriers]
    and the library alike. What (a star against held-outs, or pairs) is checked against the registry
    by `plan_barriers`; how (the grid, splits, BatchNorm calibration, batch size, alignment) is here,
    and what of it changes the numbers is `settings`, whose hash keys the stored pairs."""

    star: int | None = None
    held_out: tuple[int, ...] | None = None
    pairs: tuple[tuple[int, int], ...] | None = None
    baseline: str = "anchors"  # with a star: also every (anchor, held-out) pair | none
    points: int = 11
    splits: tuple[str, ...] = SPLITS
    bn_calibration: str | int = "full"
    batch_size: int | None = None  # None: EVAL_BATCH
    align: str = "auto"
    # How the curve is made and read (issue 22): None is the network's own default (reset with BatchNorm).
    renorm: str | None = None
    definition: str = DEFAULT_DEFINITION
    temperature: float = TEMPERATURE
    recompute: bool = False

    def __post_init__(self) -> None:
        points, bn_calibration, batch_size = self.points, self.bn_calibration, self.batch_size
        if not isinstance(points, int) or isinstance(points, bool) or not 2 <= points <= MAX_POINTS:
            raise UsageError(f"--points must be an integer from 2 to {MAX_POINTS:,} (the endpoints count), got {points!r}")
        if isinstance(self.splits, str):
            raise UsageError(f"--splits must be a list of train and/or test, got {self.splits!r}")
        splits = tuple(dict.fromkeys(self.splits))
        unknown = [s for s in splits if s not in SPLITS]
        if not splits or unknown:
            raise UsageError(f"--splits must be train and/or test, got {','.join(map(str, splits)) or 'nothing'}")
        if isinstance(bn_calibration, str) and bn_calibration != "full":
            try:
                bn_calibration = int(bn_calibration)
            except ValueError:
                raise UsageError(f"--bn-calibration must be full or a number of samples, got {bn_calibration!r}") from None
        if not isinstance(bn_calibration, str) and (
            not isinstance(bn_calibration, int) or isinstance(bn_calibration, bool) or bn_calibration < 1
        ):
            raise UsageError(f"--bn-calibration must be full or a positive number of samples, got {bn_calibration!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise UsageError(f"--batch-size must be a positive integer, got {batch_size!r}")
        if self.baseline not in BASELINES:
            raise UsageError(f"--baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.align not in ALIGN_CHOICES + ("auto",):
            raise UsageError(f"--align must be one of auto, {', '.join(ALIGN_CHOICES)}, got {self.align!r}")
        if self.renorm is not None and self.renorm not in RENORM_CHOICES:
            raise UsageError(f"--renorm must be one of {', '.join(RENORM_CHOICES)}, got {self.renorm!r}")
        if self.definition not in DEFINITION_CHOICES:
            raise UsageError(f"--definition must be one of {', '.join(DEFINITION_CHOICES)}, got {self.definition!r}")
        temperature = self.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
            raise UsageError(f"--temperature must be a positive number (1: the plain cross-entropy), got {temperature!r}")
        object.__setattr__(self, "temperature", float(temperature))
        object.__setattr__(self, "splits", splits)
        object.__setattr__(self, "bn_calibration", bn_calibration)
        if self.held_out is not None:
            object.__setattr__(self, "held_out", tuple(self.held_out))
        if self.pairs is not None:
            object.__setattr__(self, "pairs", tuple((a, b) for a, b in self.pairs))

    def settings(self, align: str, renorm: str | None = None) -> dict:
        """The stored settings of these options, with `align` as resolved (auto is never stored) and `renorm`
        as `canonical_renorm` made it (None: the network's default, which keeps earlier rows' hashes)."""
        return settings_for(self.points, self.splits, self.bn_calibration, self.batch_size or EVAL_BATCH, align,
                            renorm, self.definition, self.temperature)


def _aligner(align: str, arch: str, arch_kwargs: dict, calibration) -> Callable | None:
    if align == "none":
        return None
    from starcli.alignment import align_state, align_state_by_activation

    if align == "activation":  # on the same calibration samples as BatchNorm's and REPAIR's statistics
        return lambda state_a, state_b: align_state_by_activation(arch, arch_kwargs, state_a, state_b, calibration)
    return lambda state_a, state_b: align_state(arch, arch_kwargs, state_a, state_b, seed=0)


def resolve_auto_align(reg, sols, wanted: set[tuple[int, int]], settings_weight: dict) -> str:
    """`--align auto`: weight matching wherever the architecture has a spec (as the paper measures).

    Stored rows measured with weight matching prove the spec exists (no weight row is made without one),
    so a repeated query resolves without deriving the spec, which needs torch.
    """
    if cached_results(reg, config_hash(settings_weight), wanted):
        return "weight"
    from starcli.alignment import has_spec

    return "weight" if has_spec(sols[0].arch, sols[0].arch_kwargs) else "none"


@dataclass
class BarrierPlan:
    """A measurement checked against the registry, nothing computed: every pair to report (with its kind),
    the solutions involved, the settings and their hash, the pairs already stored and those to compute."""

    spec: BarrierSpec
    pairs: list[tuple[int, int, str]]
    solutions: dict[int, Solution]
    settings: dict
    settings_hash: str
    cached: dict[tuple[int, int], dict]
    todo: list[tuple[int, int]]


def plan_barriers(reg, spec: BarrierSpec, reporter: Reporter | None = None) -> BarrierPlan:
    """Which pairs `spec` reports, under which settings, and which of them the registry lacks (all of
    them with `recompute`). What a caller sends to workers, or computes here, before `finish`."""
    plan, sols = plan_pairs(reg, spec.star, list(spec.held_out) if spec.held_out else None,
                            list(spec.pairs) if spec.pairs else None, spec.baseline)
    wanted = {(a, b) for a, b, _ in plan}
    renorm = canonical_renorm(spec.renorm, sols[0].arch, sols[0].arch_kwargs)  # before hashing, as align
    align = spec.align
    if align == "auto":
        # Resolved before hashing, so the stored settings say which one was used.
        align = resolve_auto_align(reg, sols, wanted, spec.settings("weight", renorm))
    settings = spec.settings(align, renorm)
    settings_hash = config_hash(settings)
    cached = {} if spec.recompute else cached_results(reg, settings_hash, wanted)
    todo = [pair for pair in dict.fromkeys((a, b) for a, b, _ in plan) if pair not in cached]
    if todo and not spec.recompute and not reg.read_only:
        cached |= reuse_other_definitions(reg, settings, settings_hash, todo)
        todo = [pair for pair in todo if pair not in cached]
    if cached and reporter is not None:
        reporter.log(f"{len(cached)} of {len(wanted)} pairs answered from the registry (--recompute to redo them)")
    return BarrierPlan(spec, plan, {s.id: s for s in sols}, settings, settings_hash, cached, todo)


def compute(reg, plan: BarrierPlan, run: RunOptions = LOCAL, device: str = "auto", reporter: Reporter | None = None,
            pool=None) -> dict[tuple[int, int], dict]:
    """The plan's missing pairs computed and stored, here or in `run.jobs` batches on the runner `run`
    names (or on `pool`, an open local pool: a sweep's); their results. Each batch stores its pairs as it
    finishes, so a rerun computes only what is still missing; the numbers equal a single process's,
    each pair being computed from its two solutions alone."""
    if not plan.todo:
        return {}
    reporter = reporter or Reporter()
    from starcli.runners.local import pool_slots  # torch: only once there is something to compute

    if run.executor == "local" and pool is None and not pool_slots(device, run.jobs):
        return compute_pairs(reg, plan.solutions, plan.todo, plan.settings, plan.settings_hash, device, reporter)
    from starcli.runners.run import run_jobs

    if pool is not None:
        n = len(pool.slots)
    else:
        n = run.jobs or (len(pool_slots(device, run.jobs)) if run.executor == "local" else len(plan.todo))
    work = barrier_jobs(reg, plan.todo, plan.settings, plan.settings_hash, device, n, plan.spec.recompute)
    raise_failures(work, run_jobs(reg, work, run, device, reporter, pool=pool), "barrier batch")
    stored = cached_results(reg, plan.settings_hash, set(plan.todo))
    missing = [pair for pair in plan.todo if pair not in stored]
    if missing:
        raise StarlightError(f"{len(missing)} pair(s) were not stored by the workers (first {missing[0]}); rerun to retry them")
    return stored


def finish(plan: BarrierPlan, computed: dict[tuple[int, int], dict] | None = None) -> dict[str, Any]:
    """The plan's barriers, from its stored pairs and those `compute` returned: star-held-out and
    regular-held-out pairs (or the plan's pairs) with curves, and a summary."""
    results = plan.cached | (computed or {})
    missing = [(a, b) for a, b, _ in plan.pairs if (a, b) not in results]
    if missing:
        raise StarlightError(f"pair {missing[0]} is not measured yet; compute the plan's pairs first")
    splits, star, by_id = plan.spec.splits, plan.spec.star, plan.solutions
    pairs_out = [pair_record(a, b, kind, results[(a, b)], splits, plan.spec.definition) for a, b, kind in plan.pairs]
    summary = summarize(pairs_out, splits)
    if star is not None:
        anchors = [by_id[i] for i in by_id[star].anchors or [] if i in by_id]
        summary["star_metrics"] = dict(by_id[star].metrics)
        summary["anchor_metrics"] = records.anchor_mean_metrics(anchors) if anchors else None
        task = "regression" if by_id[star].dataset in REGRESSION_DATASETS else "classification"
        summary["verdict"] = verdict(summary["star_metrics"], summary["anchor_metrics"], task)
        built = (by_id[star].config or {}).get("star") or {}
        summary["verdict"]["star_settings"] = {k: built.get(k) for k in ("mu_star", "align_anchors", "realign_every", "init", "epochs")}
    return {"star": star, "settings": plan.settings, "pairs": pairs_out, "summary": summary}


def measure(reg, spec: BarrierSpec | None = None, *, run: RunOptions = LOCAL, device: str = "auto",
            reporter: Reporter | None = None, **fields: Any) -> dict[str, Any]:
    """Barriers of star-held-out and regular-held-out pairs (or of `pairs`), with curves and a summary:
    `plan_barriers`, `compute` (here, or on the runner `run` names) and `finish`. The spec, or its
    fields as keywords (`measure(reg, star=9, held_out=[6, 7])`)."""
    if spec is None:
        spec = BarrierSpec(**fields)
    elif fields:
        raise TypeError(f"measure() takes a spec or its fields, not both ({', '.join(fields)})")
    reporter = reporter or Reporter()
    devices.check(device)  # before the cache: pairs answered from the registry must not hide --device tpu
    plan = plan_barriers(reg, spec, reporter)
    return finish(plan, compute(reg, plan, run, device, reporter))


def check_replicate_stars(reg, stars: list[int]) -> None:
    """Stars to be read as replicates, checked before anything is measured: each must be a star of the same
    task, and no two may share an anchor (a replicate is its own anchor set)."""
    sols = records.get_many(reg, stars)
    records.require_same_task(sols, "stars read as replicates")
    for sol in sols:
        if not sol.anchors:
            raise StarlightError(f"solution {sol.id} ({sol.kind}) records no anchors, so it is no star to read as a replicate")
    _require_own_anchor_sets([(sol.id, sol.anchors) for sol in sols])


def _require_own_anchor_sets(stars: list[tuple[int, list[int]]]) -> None:
    """No two replicates (star id, its anchors) share an anchor: a replicate is its own anchor set."""
    seen: dict[int, int] = {}
    for star, anchors in stars:
        for a in anchors:
            if a in seen:
                raise StarlightError(f"stars {seen[a]} and {star} share anchor {a}: replicates need their own anchor sets")
            seen[a] = star


def replicates(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several stars' `measure` results read as replicates (`check_replicate_stars` first): each star's own
    result (its anchors and held-outs named), and the comparison over them (engine/evidence.py: the
    replicate is the unit)."""
    reps = []
    for result in results:
        kinds = {p["kind"] for p in result["pairs"]}
        anchors = sorted({p["a"] for p in result["pairs"] if p["kind"] == REGULAR_PAIRS})
        held = list(dict.fromkeys(p["b"] for p in result["pairs"] if p["kind"] == STAR_PAIRS))
        reps.append(result | {"anchors": anchors, "held_out": held, "kinds": sorted(kinds)})
    splits = tuple(results[0]["settings"]["splits"]) if results else ()
    for rep in reps[1:]:
        if rep["settings"] != reps[0]["settings"]:
            raise StarlightError(f"stars {reps[0]['star']} and {rep['star']} were measured under different settings; "
                                 "replicates must share one protocol")
    _require_own_anchor_sets([(rep["star"], rep["anchors"]) for rep in reps])
    held = [set(r["held_out"]) for r in reps]
    out = {"replicates": reps, "settings": results[0]["settings"] if results else {},
           "evidence": compare_pairs([r["pairs"] for r in results], splits)}
    if len(reps) > 1 and set.intersection(*held):
        # Crossed, not nested: a held-out's own effect is shared by every star, so the replicates are not
        # independent and the interval is too narrow; said beside it rather than hidden.
        out["shared_held_outs"] = len(set.union(*held))
    return out


def compute_pairs(reg, by_id: dict, todo: list[tuple[int, int]], settings: dict, settings_hash: str, device: str, reporter):
    """Curves of the pairs in `todo`; every solution is loaded and evaluated at its endpoint once."""
    from starcli.engine import devices, evaluation
    from starcli.engine.data import load_split
    from starcli.engine.interpolation import LineEvaluator

    dev = devices.resolve(device)
    first = by_id[todo[0][0]]
    cache = records.dataset_cache(reg)
    splits = {s: load_split(first.dataset, s, dev, cache_dir=cache) for s in settings["splits"]}
    train_x = load_split(first.dataset, "train", dev, cache_dir=cache).x
    calibration = evaluation.calibration_subset(train_x, settings["bn_calibration"])
    interior = [i / (settings["points"] - 1) for i in range(1, settings["points"] - 1)]
    line = LineEvaluator(
        first.arch, first.arch_kwargs, dev, {s: (sp.x, sp.y) for s, sp in splits.items()}, calibration,
        settings["batch_size"], T_BATCH, config=first.config,  # the first's precision and memory format
        renorm=settings.get("renorm"), temperature=settings.get("temperature", TEMPERATURE),
    )
    renorm_applied = "reset" if line.reset_bn else (settings.get("renorm") or "none")
    align = _aligner(settings["align"], first.arch, first.arch_kwargs, calibration)
    states: dict[int, dict] = {}
    ends: dict[int, dict] = {}

    def load(sid: int) -> dict:
        if sid not in states:
            states[sid] = records.state_dict(reg, by_id[sid], dev)
            ends[sid] = line.endpoint(states[sid])
        return states[sid]

    out: dict[tuple[int, int], dict] = {}
    task = reporter.task("barriers", len(todo))
    try:
        for a, b in todo:
            start = time.perf_counter()
            state_a, state_b = load(a), load(b)
            if align is not None:
                state_b = align(state_a, state_b)  # a permutation: b's endpoint metrics are unchanged
            curves = line.curve(state_a, state_b, interior)
            result: dict[str, Any] = {"t": [0.0] + interior + [1.0]}
            for split in settings["splits"]:
                result[split] = {
                    m: [ends[a][split][k]] + curves[split][m] + [ends[b][split][k]] for k, m in enumerate(("loss", "acc"))
                }
            result["renorm"] = renorm_applied  # the policy the default resolved to, for listings
            result["device"] = str(dev)
            result["seconds"] = round(time.perf_counter() - start, 4)
            out[(a, b)] = result
            task.advance()
    finally:
        # One transaction for all pairs; an interrupted run still keeps the pairs it finished.
        store_results(reg, out, settings, settings_hash)
    task.done()
    return out


# t per pass. Several t in one vmapped pass measured slower than one at a time on the MNIST-1D MLP,
# on 2 CPU threads and on an H200 alike (benchmarks/bench_barrier.py), so one it is.
T_BATCH = 1


def report_settings(reg, star) -> dict[str, Any]:
    """The barrier settings last used with this star (so the report reads the cache), else the paper's:
    11 points, train and test, full BatchNorm re-estimation, weight-matching alignment when possible."""
    with reg.session() as s:
        row = s.exec(
            select(BarrierResult).where(BarrierResult.a_id == star.id).order_by(BarrierResult.id.desc())  # type: ignore[union-attr]
        ).first()
    if row is None:
        return {"align": "auto"}
    saved = row.settings
    return {"points": saved["points"], "splits": tuple(saved["splits"]), "bn_calibration": saved["bn_calibration"],
            "batch_size": saved["batch_size"], "align": saved["align"], "renorm": saved.get("renorm"),
            "definition": saved.get("definition", DEFAULT_DEFINITION), "temperature": saved.get("temperature", TEMPERATURE)}


def measured_held_outs(reg, star) -> list[int]:
    """Solutions whose barrier against the star is already cached, anchors excluded."""
    with reg.session() as s:
        rows = s.exec(select(BarrierResult).where(or_(BarrierResult.a_id == star.id, BarrierResult.b_id == star.id))).all()
    others = {r.b_id if r.a_id == star.id else r.a_id for r in rows}
    return sorted(others - set(star.anchors) - {star.id})


# --- on a runner: batches of pairs as jobs ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BarrierJob:
    """A batch of barrier pairs under one set of settings; the batch's results are stored as it finishes,
    and pairs already stored are skipped (unless `recompute`)."""

    kind: ClassVar[str] = "pair"

    home: str
    db_url: str
    pairs: tuple[tuple[int, int], ...]
    settings: dict[str, Any]
    settings_hash: str
    device: str
    recompute: bool = False
    store_url: str | None = None

    def label(self) -> str:
        return f"{len(self.pairs)} pair(s) from {self.pairs[0]}"

    def weight(self) -> int:
        return len(self.pairs)

    def describe(self, result: tuple[int, int]) -> str:
        computed, total = result
        return f"{self.label()}: {computed} computed, {total - computed} already stored"

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, int]:
        """(pairs computed, pairs in the batch)."""
        wanted = set(self.pairs)
        done = set() if self.recompute else set(cached_results(reg, self.settings_hash, wanted))
        todo = [pair for pair in self.pairs if pair not in done]
        if todo:
            sols = records.get_many(reg, list(dict.fromkeys(i for pair in todo for i in pair)))
            compute_pairs(
                reg, {s.id: s for s in sols}, todo, self.settings, self.settings_hash, self.device, reporter or Reporter()
            )
        return len(todo), len(self.pairs)


def barrier_jobs(reg, todo: list[tuple[int, int]], settings: dict, settings_hash: str, device: str, batches: int,
                 recompute: bool = False) -> list[BarrierJob]:
    """`todo` in `batches` contiguous batches (pairs that share a solution, a star's, load it once per batch)."""
    n = max(1, min(len(todo), batches))
    parts = [tuple(todo[k * len(todo) // n:(k + 1) * len(todo) // n]) for k in range(n)]
    return [BarrierJob(home=str(reg.home), db_url=reg.url, pairs=b, settings=settings, settings_hash=settings_hash,
                       device=device, recompute=recompute, store_url=reg.store_url)
            for b in parts if b]


# --- what is stored: `starlight barriers`, `starlight curves` ------------------------------------------

STORED_KINDS = (STAR_PAIRS, REGULAR_PAIRS, PLAIN_PAIRS)


def _kind_of(a, b, stars_of_b: list) -> str:
    """A stored row's kind: star-held-out when A is a star (or soup) and B not one of its anchors;
    regular-held-out when A is an anchor of a star measured against B; otherwise a plain pair."""
    if a.anchors and b.id not in a.anchors and b.id != a.id:
        return STAR_PAIRS
    if any(a.id in (s.anchors or []) for s in stars_of_b):
        return REGULAR_PAIRS
    return PLAIN_PAIRS


def stored_rows(reg, star: int | None = None, kinds: list[str] | None = None, pairs: list[tuple[int, int]] | None = None):
    """(row, kind) of stored barrier rows: all, those of one star (its pairs and its anchors' against its
    held-outs), or of the given (a, b) pairs; kinds filter by kind."""
    for kind in kinds or []:
        if kind not in STORED_KINDS:
            raise UsageError(f"unknown pair kind {kind!r}; the kinds are {', '.join(STORED_KINDS)}")
    star_sol = records.get(reg, star) if star is not None else None
    with reg.session() as s:
        stmt = select(BarrierResult).order_by(BarrierResult.id)
        if star_sol is not None:
            held = measured_held_outs(reg, star_sol)
            stmt = stmt.where(or_(
                BarrierResult.a_id == star_sol.id,
                col(BarrierResult.a_id).in_(star_sol.anchors or []) & col(BarrierResult.b_id).in_(held),
            ))
        rows = list(s.exec(stmt))
    if pairs is not None:
        wanted = set(pairs)
        rows = [r for r in rows if (r.a_id, r.b_id) in wanted]
    by_id = {sol.id: sol for sol in records.get_many(reg, sorted({i for r in rows for i in (r.a_id, r.b_id)}))}
    with reg.session() as s:  # every (star, b) measured, to tell an anchor's baseline pair from a plain one
        star_rows = [(r.a_id, r.b_id) for r in s.exec(select(BarrierResult))]
    stars = {sol.id: sol for sol in records.get_many(reg, sorted({a for a, _ in star_rows})) if sol.anchors}
    stars_of: dict[int, list] = {}
    for a, b in star_rows:
        if a in stars and b not in stars[a].anchors:
            stars_of.setdefault(b, []).append(stars[a])
    if star_sol is not None:  # with --star, the baseline is that star's
        stars_of = {b: [star_sol] for b in stars_of}
    out = [(r, _kind_of(by_id[r.a_id], by_id[r.b_id], stars_of.get(r.b_id, []))) for r in rows]
    return [(r, k) for r, k in out if not kinds or k in kinds]


def stored(
    reg, star: int | None = None, kinds: list[str] | None = None, renorm: str | None = None,
    definition: str | None = None, align: str | None = None,
) -> list[dict[str, Any]]:
    """One record per stored row: the pair, its kind, the settings it was measured under (its protocol:
    alignment, renormalisation, definition, temperature) and its barriers; renorm, definition and align
    keep only rows of that protocol ("default" is the renorm of rows stored before it was recorded)."""
    if renorm is not None and renorm not in RENORM_CHOICES + ("default",):
        raise UsageError(f"--renorm must be one of {', '.join(RENORM_CHOICES)}, default, got {renorm!r}")
    if definition is not None and definition not in DEFINITION_CHOICES:
        raise UsageError(f"--definition must be one of {', '.join(DEFINITION_CHOICES)}, got {definition!r}")
    if align is not None and align not in ALIGN_CHOICES:
        raise UsageError(f"--align must be one of {', '.join(ALIGN_CHOICES)}, got {align!r}")
    out = []
    for row, kind in stored_rows(reg, star, kinds):
        proto = protocol(row.settings, row.result)
        if (renorm, definition, align) != (
            renorm and proto["renorm"], definition and proto["definition"], align and row.settings["align"]
        ):
            continue
        splits = tuple(s for s in row.settings["splits"] if s in row.result)
        rec = pair_record(row.a_id, row.b_id, kind, row.result, splits, proto["definition"])
        item: dict[str, Any] = {"id": row.id, "a": row.a_id, "b": row.b_id, "kind": kind}
        item.update({k: row.settings[k] for k in ("points", "bn_calibration", "batch_size", "align")})
        item.update(proto)
        item["splits"] = ",".join(splits)
        for split in ("train", "test"):
            if split in rec:
                item[f"{split}_loss_barrier"] = rec[split]["loss_barrier"]
                item[f"{split}_acc_barrier"] = rec[split]["acc_barrier"]
        item["settings_hash"] = row.settings_hash[:12]
        item["created_at"] = row.created_at.isoformat(timespec="seconds") + "Z"
        out.append(item)
    return out


def curves(
    reg, pairs: list[tuple[int, int]] | None = None, star: int | None = None, renorm: str | None = None,
    definition: str | None = None, align: str | None = None,
) -> list[dict[str, Any]]:
    """The tidy table of stored curves: one row per (pair, settings, split, t) with loss and accuracy, and
    the protocol they were measured under; renorm, definition and align filter as in `stored`."""
    keep = {r["id"] for r in stored(reg, star, None, renorm, definition, align)}
    if not pairs and star is None:
        raise UsageError("say which curves: pairs like 6-7 7-8, or --star S")
    rows = stored_rows(reg, star, None, pairs)
    if pairs:
        missing = [f"{a}-{b}" for a, b in pairs if not any((r.a_id, r.b_id) == (a, b) for r, _ in rows)]
        if missing:
            raise StarlightError(
                f"no stored barrier for pair {', '.join(missing)}; measure it with `starlight barrier --pair A B`"
            )
    out = []
    for row, kind in rows:
        if row.id not in keep:
            continue
        proto = {"align": row.settings["align"]} | protocol(row.settings, row.result)
        for split in row.settings["splits"]:
            curve = row.result.get(split)
            if curve is None:
                continue
            for t, loss, acc in zip(row.result["t"], curve["loss"], curve["acc"]):
                out.append({"pair": f"{row.a_id}-{row.b_id}", "a": row.a_id, "b": row.b_id, "kind": kind,
                            "settings_hash": row.settings_hash[:12], **proto, "split": split, "t": t, "loss": loss,
                            "acc": acc})
    return out
