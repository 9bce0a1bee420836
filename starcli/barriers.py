"""Loss and accuracy barriers of star–held-out and regular–held-out pairs (paper Eq. 1), stored in the registry.

On a split, L(t) is the mean cross-entropy of the network with weights (1−t)θ_A + tθ_B for t on a grid
of `points` values in [0, 1]. Loss barrier = max_t L(t) − ((1−t)L(0) + tL(1)), floored at 0; accuracy
barrier = max_t ((1−t)acc(0) + t·acc(1)) − acc(t) in percentage points, floored at 0. "train" is the
training split without augmentation. Each pair's curves are stored under (a, b, hash of the settings)
and a repeated query is answered from the registry.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from registry import BarrierResult

from . import data, solutions
from .errors import StarlightError, UsageError
from .recipes import config_hash

DEFINITIONS = (
    "On a split, L(t) is the mean cross-entropy of the network with weights (1−t)θ_A + tθ_B, t on a grid of "
    "{points} points in [0, 1]. Loss barrier = max over the grid of L(t) − ((1−t)L(0) + tL(1)), floored at 0; "
    "accuracy barrier = max over the grid of ((1−t)acc(0) + t·acc(1)) − acc(t), in percentage points, floored "
    "at 0. \"train\" is the training split without augmentation. Networks with BatchNorm get their running "
    "statistics reset and re-estimated (cumulative average) on {calibration} at every interior t.{alignment} Star–held-out "
    "pairs join the star to each held-out; regular–held-out pairs join each of the star's anchors to each "
    "held-out. Mean ± sample standard deviation over pairs."
)
ALIGN_CHOICES = ("none", "weight")
ALIGNMENT_SENTENCE = {
    "none": " Models are interpolated as they are (no permutation alignment).",
    "weight": " Before interpolating, B's hidden units are permuted to match A's (weight matching), for every pair.",
}
BASELINES = ("anchors", "none")
STAR_PAIRS, REGULAR_PAIRS, PLAIN_PAIRS = "star-held-out", "regular-held-out", "pair"
CALIBRATION_SEED = 0  # the fixed subset behind --bn-calibration N


def definitions(settings: dict[str, Any]) -> str:
    """The paragraph that states what the numbers under these settings mean."""
    calibration = settings["bn_calibration"]
    calibration = "the whole training split" if calibration == "full" else f"{calibration} training samples"
    return DEFINITIONS.format(
        points=settings["points"], calibration=calibration, alignment=ALIGNMENT_SENTENCE[settings["align"]]
    )


def settings_for(points: int, splits: tuple[str, ...], bn_calibration: str | int, batch_size: int, align: str) -> dict:
    """Everything that changes a pair's numbers (batch size: it sets BatchNorm's calibration batches)."""
    return {
        "points": points,
        "splits": list(splits),
        "bn_calibration": bn_calibration,
        "batch_size": batch_size,
        "align": align,
    }


def plan_pairs(reg, star: int | None, held_out: list[int] | None, pairs: list[tuple[int, int]] | None, baseline: str):
    """(a, b, kind) for every pair to report, and the solutions they involve (star first)."""
    if pairs:
        if star is not None or held_out:
            raise UsageError("use either --star with --held-out, or --pair A B, not both")
        plan = [(a, b, PLAIN_PAIRS) for a, b in pairs]
        sols = solutions.get_many(reg, list(dict.fromkeys(i for pair in pairs for i in pair)))
        solutions.require_same_task(sols, "both solutions of a pair")
        return plan, sols
    if star is None or not held_out:
        raise UsageError("say what to measure: --star S --held-out IDS, or --pair A B")
    if len(set(held_out)) != len(held_out):
        raise UsageError(f"--held-out lists a solution twice: {held_out}")
    star_sol = solutions.get(reg, star)
    anchors = list(star_sol.anchors or [])
    if baseline == "anchors" and not anchors:
        raise StarlightError(
            f"solution {star} ({star_sol.kind}) records no anchors, so there is no regular–held-out baseline; "
            "pass a star id, or --baseline none"
        )
    overlap = [h for h in held_out if h in anchors or h == star]
    if overlap:
        raise StarlightError(
            f"solution {overlap[0]} helped build star {star}; held-outs must be solutions the star never saw"
        )
    plan = [(star, h, STAR_PAIRS) for h in held_out]
    if baseline == "anchors":
        plan += [(a, h, REGULAR_PAIRS) for a in anchors for h in held_out]
    sols = solutions.get_many(reg, [star] + held_out + (anchors if baseline == "anchors" else []))
    solutions.require_same_task(sols, "the star, its anchors and the held-outs")
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


def pair_record(a: int, b: int, kind: str, result: dict, splits: tuple[str, ...]) -> dict[str, Any]:
    from .interpolation import barrier

    out: dict[str, Any] = {"a": a, "b": b, "kind": kind, "t": result["t"]}
    for split in splits:
        curve = result[split]
        out[split] = {
            "loss": curve["loss"],
            "acc": curve["acc"],
            "loss_barrier": barrier(result["t"], curve["loss"]),
            "acc_barrier": barrier(result["t"], curve["acc"], higher_is_worse=False),
        }
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(pairs: list[dict], splits: tuple[str, ...]) -> dict[str, Any]:
    """Mean ± std and n of each barrier per kind of pair and split, and the star/regular ratio of the means."""
    summary: dict[str, Any] = {}
    for kind in dict.fromkeys(p["kind"] for p in pairs):
        group = [p for p in pairs if p["kind"] == kind]
        summary[kind] = {
            split: {m: _stats([p[split][m] for p in group]) for m in ("loss_barrier", "acc_barrier")} for split in splits
        }
    if STAR_PAIRS in summary:
        summary["ratio"] = {split: {m: None for m in ("loss_barrier", "acc_barrier")} for split in splits}
        if REGULAR_PAIRS in summary:
            for split in splits:
                for m in ("loss_barrier", "acc_barrier"):
                    regular = summary[REGULAR_PAIRS][split][m]["mean"]
                    star = summary[STAR_PAIRS][split][m]["mean"]
                    summary["ratio"][split][m] = star / regular if regular > 0 else None
    return summary


def _mean_metrics(sols) -> dict[str, float]:
    keys = [k for k in sols[0].metrics if all(k in s.metrics for s in sols)]
    return {k: statistics.fmean(s.metrics[k] for s in sols) for k in keys}


def _parse_options(points, splits, bn_calibration, batch_size, baseline, align):
    if not isinstance(points, int) or points < 2:
        raise UsageError(f"--points must be an integer ≥ 2 (the endpoints count), got {points!r}")
    splits = tuple(dict.fromkeys(splits))
    unknown = [s for s in splits if s not in data.SPLITS]
    if not splits or unknown:
        raise UsageError(f"--splits must name train and/or test, got {','.join(splits) or 'nothing'}")
    if isinstance(bn_calibration, str) and bn_calibration != "full":
        try:
            bn_calibration = int(bn_calibration)
        except ValueError:
            raise UsageError(f"--bn-calibration must be full or a number of samples, got {bn_calibration!r}") from None
    if not isinstance(bn_calibration, str) and (not isinstance(bn_calibration, int) or bn_calibration < 1):
        raise UsageError(f"--bn-calibration must be full or a positive number of samples, got {bn_calibration!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if baseline not in BASELINES:
        raise UsageError(f"--baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if align not in ALIGN_CHOICES + ("auto",):
        raise UsageError(f"--align must be one of auto, {', '.join(ALIGN_CHOICES)}, got {align!r}")
    return splits, bn_calibration


def _aligner(align: str, arch: str, arch_kwargs: dict) -> Callable | None:
    if align == "none":
        return None
    try:
        from .alignment import align_state
    except ImportError:
        raise StarlightError(
            "alignment is unavailable in this installation (starcli.alignment is missing); use --align none"
        ) from None
    return lambda state_a, state_b: align_state(arch, arch_kwargs, state_a, state_b, seed=0)


def measure(
    reg,
    star: int | None = None,
    held_out: list[int] | None = None,
    pairs: list[tuple[int, int]] | None = None,
    baseline: str = "anchors",
    points: int = 11,
    splits: tuple[str, ...] = ("train", "test"),
    bn_calibration: str | int = "full",
    batch_size: int | None = None,
    recompute: bool = False,
    device: str = "auto",
    align: str = "auto",
    reporter=None,
) -> dict[str, Any]:
    """Barriers of star–held-out and regular–held-out pairs (or of `pairs`), with curves and a summary."""
    from . import evaluation
    from .progress import Reporter

    reporter = reporter or Reporter()
    splits, bn_calibration = _parse_options(points, splits, bn_calibration, batch_size, baseline, align)
    batch_size = batch_size or evaluation.EVAL_BATCH
    plan, sols = plan_pairs(reg, star, held_out, pairs, baseline)
    if align == "auto":
        # As the paper measures: modulo permutations, wherever the architecture has a spec. Resolved
        # before hashing, so the stored settings say which one was used.
        from .alignment import has_spec

        align = "weight" if has_spec(sols[0].arch, sols[0].arch_kwargs) else "none"
    settings = settings_for(points, splits, bn_calibration, batch_size, align)
    settings_hash = config_hash(settings)
    wanted = {(a, b) for a, b, _ in plan}
    results = {} if recompute else cached_results(reg, settings_hash, wanted)
    todo = [pair for pair in dict.fromkeys((a, b) for a, b, _ in plan) if pair not in results]
    if len(results):
        reporter.log(f"{len(results)} of {len(wanted)} pairs answered from the registry (--recompute to redo them)")
    if todo:
        by_id = {s.id: s for s in sols}
        results.update(compute_pairs(reg, by_id, todo, settings, settings_hash, device, reporter))

    records = [pair_record(a, b, kind, results[(a, b)], splits) for a, b, kind in plan]
    summary = summarize(records, splits)
    if star is not None:
        by_id = {s.id: s for s in sols}
        anchors = [by_id[i] for i in by_id[star].anchors or [] if i in by_id]
        summary["star_metrics"] = dict(by_id[star].metrics)
        summary["anchor_metrics"] = _mean_metrics(anchors) if anchors else None
    return {"star": star, "settings": settings, "pairs": records, "summary": summary}


def compute_pairs(reg, by_id: dict, todo: list[tuple[int, int]], settings: dict, settings_hash: str, device: str, reporter):
    """Curves of the pairs in `todo`; every solution is loaded and evaluated at its endpoint once."""
    import torch

    from . import devices, training
    from .interpolation import LineEvaluator

    dev = devices.resolve(device)
    first = by_id[todo[0][0]]
    splits = {s: training.load_split(first.dataset, s, dev, home=reg.home) for s in settings["splits"]}
    calibration = training.load_split(first.dataset, "train", dev, home=reg.home).x
    if settings["bn_calibration"] != "full" and settings["bn_calibration"] < len(calibration):
        g = torch.Generator().manual_seed(CALIBRATION_SEED)
        calibration = calibration[torch.randperm(len(calibration), generator=g)[: settings["bn_calibration"]].to(dev)]
    interior = [i / (settings["points"] - 1) for i in range(1, settings["points"] - 1)]
    line = LineEvaluator(
        first.arch, first.arch_kwargs, dev, {s: (sp.x, sp.y) for s, sp in splits.items()}, calibration,
        settings["batch_size"], T_BATCH,
    )
    align = _aligner(settings["align"], first.arch, first.arch_kwargs)
    states: dict[int, dict] = {}
    ends: dict[int, dict] = {}

    def load(sid: int) -> dict:
        if sid not in states:
            states[sid] = solutions.state_dict(reg, by_id[sid], dev)
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
