"""Statistics of a sweep's summary rows: line fits of star against regular barriers (the paper's width
study), rank correlations, and the plain findings a report prints beside its table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from starcli.engine.barriers import FITTED_TRAIN_ACC, REGULAR_PAIRS, STAR_PAIRS, replicates_of
from starcli.engine.evidence import Replicate, compare, describe_trend, trend
from starcli.reports.sweep_report import AXIS_LABELS, setting_keys, settings_of

from .sweep_file import PROTOCOL_AXES


def star_against_regular(rows: list[dict[str, Any]], split: str = "train") -> tuple[list[float], list[float]]:
    """(regular, star) mean loss barriers of the rows that have both: what `fit_line` fits."""
    pts = [(r.get(f"regular_{split}_loss_barrier_mean"), r.get(f"star_{split}_loss_barrier_mean")) for r in rows]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def one_protocol(rows: list[dict[str, Any]]) -> bool:
    """Whether every row's barriers were measured under one protocol (align, renorm, definition): a line
    fitted through rows of several would mix numbers that mean different things."""
    return len({tuple(r.get(axis) for axis in PROTOCOL_AXES) for r in rows}) <= 1


def fit_line(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Least-squares fits of y on x: through the origin (y = a·x, the paper's 'star ≈ 0.30 × regular')
    and affine (y = a·x + b, its depth result), with the affine fit's R²."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out: dict[str, float | None] = {"n": int(len(xs)), "slope_origin": None, "slope": None, "intercept": None, "r2": None}
    if len(xs) == 0 or float(xs @ xs) == 0:
        return out
    out["slope_origin"] = float(xs @ ys / (xs @ xs))
    if len(xs) >= 2 and float(np.ptp(xs)) > 0:
        slope, intercept = np.polyfit(xs, ys, 1)
        residual = ys - (slope * xs + intercept)
        total = float(((ys - ys.mean()) ** 2).sum())
        out.update(slope=float(slope), intercept=float(intercept), r2=1 - float(residual @ residual) / total if total else None)
    return out


def findings(rows: list[dict[str, Any]], x: str, split: str = "train", cells: list[dict[str, Any]] | None = None,
             task: str = "classification") -> list[str]:
    """Plain statements a reader can check against the table, each worded from its confidence interval:
    no claim without its numbers, replicates and held-outs."""
    star = [r.get(f"star_{split}_loss_barrier_mean") for r in rows]
    regular = [r.get(f"regular_{split}_loss_barrier_mean") for r in rows]
    valid = [(s, g, r) for s, g, r in zip(star, regular, rows) if s is not None and g is not None]
    if not valid:
        return []
    lines = []
    verdicts = [r.get(f"connects_better_{split}") for _, _, r in valid]
    reps = sorted({r.get("replicates", 1) for _, _, r in valid})
    design = sorted({f"{r.get('replicates', 1)} replicate(s) × {r['held_outs'] // max(1, r.get('replicates', 1))} held-outs"
                     for _, _, r in valid if r.get("held_outs") is not None})
    lines.append(
        f"the star connects better than regular pairs ({split} loss barrier, 95% CI of star/regular below 1) in "
        f"{verdicts.count('yes')} of {len(valid)} settings; no evidence either way (CI includes 1) in "
        f"{verdicts.count('no evidence')}; worse (CI above 1) in {verdicts.count('no')} ({'; '.join(design)} per setting)."
    )
    if reps == [1]:
        lines.append(
            "with one replicate per setting the CIs cover held-out variation only, not that of anchor sets or "
            "star seeds: rerun with [grid] replicates = 3 or more before drawing a conclusion."
        )
    underfit = [r for _, _, r in valid if r.get("anchor_train_acc") is not None and r["anchor_train_acc"] < FITTED_TRAIN_ACC
                and task != "regression"]  # R² at the noise floor is below 99% by design
    if underfit:
        lines.append(
            f"the anchors fit under {FITTED_TRAIN_ACC:g}% of their training set in {len(underfit)} of {len(valid)} settings "
            f"(mean train accuracy {min(r['anchor_train_acc'] for r in underfit):.1f}–{max(r['anchor_train_acc'] for r in underfit):.1f}%): "
            "there they are under-fitted models, and \"the star is a solution\" means only \"as good as they are\"."
        )
    worse = sum((r.get(f"star_{split}_loss") or 0) > (r.get(f"anchor_{split}_loss") or 0) for _, _, r in valid)
    peak = sum((r.get(f"star_{split}_peak_loss") or 0) > (r.get(f"regular_{split}_peak_loss") or 0) for _, _, r in valid)
    lines.append(
        f"the star's own {split} loss is above the anchors' mean in {worse} of {len(valid)} settings, and the highest "
        f"{split} loss on its segments is above that on regular segments in {peak} of {len(valid)} (peak column)."
    )
    soups = [(s, r[f"soup_{split}_loss_barrier_mean"], r) for s, _, r in valid if r.get(f"soup_{split}_loss_barrier_mean") is not None]
    if soups:
        lower = sum(p < s for s, p, _ in soups)
        better = sum((r.get(f"soup_{split}_loss") or 0) < (r.get(f"star_{split}_loss") or 0) for _, _, r in soups)
        lines.append(
            f"the aligned soup of the same anchors has a lower {split} barrier than the star in {lower} of {len(soups)} "
            f"settings, and a lower own {split} loss in {better} of {len(soups)}."
        )
    fit = fit_line([g for _, g, _ in valid], [s for s, _, _ in valid])
    # The paper fits star against regular across widths (and depths), where the regular barrier varies;
    # across anchor counts or t schemes it is one baseline and a line through it means nothing.
    if fit["slope_origin"] is not None and len(valid) >= 2 and x == "width" and one_protocol(rows):
        affine = ""
        if fit["slope"] is not None:
            affine = f"; affine fit star = {fit['slope']:.2f} × regular + {fit['intercept']:.3f}"
            affine += f" (R² {fit['r2']:.2f})" if fit["r2"] is not None else ""
        lines.append(f"least squares through the origin: star ≈ {fit['slope_origin']:.2f} × regular{affine}.")
    lines += trend_findings(rows, x, split, cells)
    lines += protocol_findings(cells or [], split)
    return lines


def trend_findings(rows: list[dict[str, Any]], x: str, split: str, cells: list[dict[str, Any]] | None) -> list[str]:
    """The star/regular ratio's trend along x, with CIs on the slope and on Spearman ρ from resampling every
    setting's replicates and held-outs; only when x is the one axis that varies and is numeric."""
    if not cells or x not in setting_keys(cells):
        return []
    groups = settings_of(cells)
    others = [k for k in setting_keys(cells) if k != x]
    if len({tuple(g[0][k] for k in others) for g in groups}) != 1:
        return []
    xs = [g[0][x] for g in groups]
    if len(groups) < 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs):
        return []
    per_setting = [replicates_of([c["pairs"] for c in g], split) for g in groups]
    if not all(per_setting):
        return []
    result = trend(xs, per_setting)
    return [describe_trend(result, f"the star/regular {split} loss-barrier ratio", AXIS_LABELS.get(x, x))]


def protocol_findings(cells: list[dict[str, Any]], split: str = "train") -> list[str]:
    """What a barrier-protocol axis does to the barriers, per setting of every other axis: for each value
    after the axis's first, the ratio of its barriers to the first value's on the same pairs (star-held-out,
    and regular-held-out with each held-out's anchors averaged), with its 95% CI as every ratio of the report
    has (engine/evidence.py: a t-interval over replicates, or with one a bootstrap over its held-outs). Only
    within a setting: cells of other align values measure the same stars, so pooling them would count one
    star several times."""
    axes = cells[0].get("protocol_axes") if cells else None
    if not axes:
        return []
    keys = setting_keys(cells)
    by_key = {(tuple(c[k] for k in keys), c["replicate"]): c for c in cells}
    replicates = sorted({c["replicate"] for c in cells})

    def cell_at(setting: dict[str, Any], replicate: int) -> dict[str, Any] | None:
        return by_key.get((tuple(setting[k] for k in keys), replicate))

    lines = []
    for axis in axes:
        values = list(dict.fromkeys(c[axis] for c in cells))
        # Every setting of the other axes, in grid order.
        rests = list(dict.fromkeys(tuple((k, c[k]) for k in keys if k != axis) for c in cells))
        for other in values[1:]:
            for rest in map(dict, rests):
                found = {}
                for kind, name in ((STAR_PAIRS, "star-held-out"), (REGULAR_PAIRS, "regular-held-out")):
                    reps = []
                    for r in replicates:
                        base, then = cell_at(rest | {axis: values[0]}, r), cell_at(rest | {axis: other}, r)
                        if base is not None and then is not None:
                            reps += _paired(base["pairs"], then["pairs"], kind, split)
                    if reps:
                        found[name] = compare(reps)
                if found:
                    shown = {k: v for k, v in rest.items() if len({c[k] for c in cells}) > 1}  # the other axes that vary
                    lines.append(_protocol_line(axis, values[0], other, shown, found, split))
    return lines


def _paired(base: list[dict], other: list[dict], kind: str, split: str) -> list[Replicate]:
    """One replicate's barriers of `kind` per held-out under two protocols (regular: the anchors' mean),
    as an evidence.Replicate(star=other's, regular=base's) so that its ratio reads other / base."""
    def per_held_out(pairs: list[dict]) -> dict[int, float]:
        values: dict[int, list[float]] = {}
        for p in pairs:
            if p["kind"] == kind and split in p and np.isfinite(p[split]["loss_barrier"]):
                values.setdefault(p["b"], []).append(p[split]["loss_barrier"])
        return {b: float(np.mean(v)) for b, v in values.items()}

    a, b = per_held_out(base), per_held_out(other)
    held = [h for h in a if h in b]
    return [Replicate(tuple(b[h] for h in held), tuple(a[h] for h in held))] if held else []


def _protocol_line(axis: str, base: str, other: str, rest: dict[str, Any], found: dict[str, dict], split: str) -> str:
    where = " (" + ", ".join(f"{AXIS_LABELS.get(k, k)} {v}" for k, v in rest.items()) + ")" if rest else ""
    parts = []
    for name, result in found.items():
        ratio, ci = result["ratio"], result["ratio_ci"]
        if ratio is None:
            parts.append(f"{name} undefined (barriers at 0)")
        elif ci is None:  # as evidence.describe: some resamples had no barrier on either side
            parts.append(f"{name} {ratio:.3f}, no CI (a resample of barriers at 0 has no ratio)")
        else:
            high = "∞" if not np.isfinite(ci[1]) else f"{ci[1]:.3f}"
            parts.append(f"{name} {ratio:.3f}, 95% CI [{ci[0]:.3f}, {high}]")
    design = next(iter(found.values()))
    unit = (f"{design['replicates']} replicates" if design["replicates"] > 1
            else "1 replicate, so the CI covers held-out variation only")
    return (f"{axis} {other} against {base}{where}: {split} loss barrier ratio {other}/{base} "
            f"{'; '.join(parts)} ({unit}; below 1: lower with {other}).")
