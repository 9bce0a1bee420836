"""`starlight curve` as a function: train the bend of a curved path between two solutions, register it
(kind bend), and store the path's and the straight line's curves and barriers in the landscapes table
(solutions/landscapes.py). The mathematics is starcli/engine/bends.py."""

from __future__ import annotations

import math
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
    CURVE,
    Plan,
    cached,
    finite,
    row_record,
    run_plans,
    same_network_and_task,
    store,
)

BEND_KINDS = ("bezier", "polychain")  # engine/bends.py's BENDS, copied so that parsing imports no torch
MAX_EPOCHS = 10_000
MAX_POINTS = 1_001


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
        if not finite(self.lr) or not 0 < self.lr <= 10:
            raise UsageError(f"--lr must be a positive learning rate (at most 10), got {self.lr!r}")
        unknown = [sp for sp in self.splits if sp not in SPLITS]
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


@dataclass(frozen=True, kw_only=True)
class CurveJob(LandscapeJob):
    """One curved path: train its bend, register it (kind bend), evaluate the path and the line."""

    a: int
    b: int

    kind = CURVE

    def label(self) -> str:
        return f"{self.settings['bend']} curve {self.a}-{self.b}"

    def run(self, reg: Registry, reporter: Reporter | None = None) -> tuple[int, bool]:
        """(landscape row id, computed now)."""
        if not self.recompute:
            row = cached(reg, CURVE, f"{self.a}-{self.b}", self.settings_hash)
            if row is not None:
                return row.id, False
        row = compute_curve(reg, self.a, self.b, self.settings, self.settings_hash, self.device, reporter or Reporter())
        return row.id, True


def plan(reg: Registry, spec: CurveSpec, device: str = "auto", recompute: bool = False) -> Plan:
    sols = records.get_many(reg, [spec.a, spec.b])
    same_network_and_task(sols, "the two ends of a curve")
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


def measure(reg: Registry, specs: list[CurveSpec], device: str = "auto", recompute: bool = False,
            run: RunOptions = LOCAL, reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """Each spec's curved path beside its straight line, trained and measured where missing on the runner `run` names."""
    reporter = reporter or Reporter()
    plans = [plan(reg, spec, device, recompute) for spec in specs]
    run_plans(reg, plans, run, device, reporter, "curve job")
    out = []
    for p, spec in zip(plans, specs):
        row = cached(reg, CURVE, f"{spec.a}-{spec.b}", p.settings_hash)
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
