"""Statistics of a sweep's summary rows: line fits of star against regular barriers (the paper's width
study), rank correlations, and the plain findings a report prints beside its table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.stats import spearmanr

from starcli.reports.sweep_report import AXIS_LABELS


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


def findings(rows: list[dict[str, Any]], x: str, split: str = "train") -> list[str]:
    """Plain statements a reader can check against the table: no claim without its numbers."""
    star = [r.get(f"star_{split}_loss_barrier_mean") for r in rows]
    regular = [r.get(f"regular_{split}_loss_barrier_mean") for r in rows]
    valid = [(s, g, r) for s, g, r in zip(star, regular, rows) if s is not None and g is not None]
    if not valid:
        return []
    lines = []
    below = sum(s < g for s, g, _ in valid)
    lines.append(f"star-held-out below regular-held-out ({split} loss barrier) in {below} of {len(valid)} settings.")
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
    xs = [r[x] for _, _, r in valid]
    if len(valid) >= 3 and all(isinstance(v, (int, float)) for v in xs):
        for name, values in (("star-held-out", [s for s, _, _ in valid]), ("regular-held-out", [g for _, g, _ in valid])):
            rho = _spearman(xs, values)
            trend = "falls" if rho <= -0.5 else "rises" if rho >= 0.5 else "shows no clear trend"
            lines.append(f"{name} barrier {trend} as {AXIS_LABELS.get(x, x)} grows (Spearman ρ = {rho:+.2f}).")
    return lines


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    rho = spearmanr(x, y).statistic
    return float(rho) if rho == rho else 0.0
