"""Statistics of a sweep's summary rows: line fits of star against regular barriers (the paper's width
study), rank correlations, and the plain findings a report prints beside its table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from starcli.engine.barriers import FITTED_TRAIN_ACC, replicates_of
from starcli.engine.evidence import describe_trend, trend
from starcli.reports.sweep_report import AXIS_LABELS, setting_keys, settings_of


def star_against_regular(rows: list[dict[str, Any]], split: str = "train") -> tuple[list[float], list[float]]:
    """(regular, star) mean loss barriers of the rows that have both: what `fit_line` fits."""
    pts = [(r.get(f"regular_{split}_loss_barrier_mean"), r.get(f"star_{split}_loss_barrier_mean")) for r in rows]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


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
    if fit["slope_origin"] is not None and len(valid) >= 2 and x == "width":
        affine = ""
        if fit["slope"] is not None:
            affine = f"; affine fit star = {fit['slope']:.2f} × regular + {fit['intercept']:.3f}"
            affine += f" (R² {fit['r2']:.2f})" if fit["r2"] is not None else ""
        lines.append(f"least squares through the origin: star ≈ {fit['slope_origin']:.2f} × regular{affine}.")
    lines += trend_findings(rows, x, split, cells)
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
