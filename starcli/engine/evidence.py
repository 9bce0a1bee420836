"""How much a star-vs-regular comparison can be believed: confidence intervals and tests over replicates.

The unit of evidence is a *replicate*: one anchor set (drawn from its own seeds), one star seed, and the
held-outs it is tested on. Within a replicate every held-out h gives a paired observation: the star's
barrier to h, s_h, and the regular baseline at h, g_h = the mean barrier of the star's anchors to h. One
anchor set, one star seed and three held-outs are a coin toss (a fresh machine turned the demo's 0.49 into
1.04), so every summary carries:

- the ratio Σs / Σg with a 95% CI, and the mean paired difference s − g with its CI. With one replicate
  the CI is a bootstrap over the held-outs (percentile, BOOTSTRAP_DRAWS draws) and speaks for this star and
  these held-outs only; the text says so. With several, the replicate is the unit: its held-outs share an
  anchor set and a star seed, so they are not independent. The CI is then a t-interval over the
  per-replicate ratios (and differences), df = R − 1. Why not the two-stage bootstrap that resamples
  replicates and then held-outs (kept here: `bootstrap`, used by `trend`): in a simulated null with a
  replicate effect as large as the held-out noise it covered the true ratio 86% of the time at 3 replicates
  × 5 held-outs (said "yes" 8.4% of the time, not 2.5%); the t-interval covered 95.7% (2.2%):
  benchmarks/study_interval_coverage.py, and tests/test_evidence.py bounds the null rate.
- a one-sided sign test and a sign-flip permutation test of "star below regular", at the replicate level
  (per-replicate mean differences; exact over 2^R sign patterns) when there are several replicates, over
  held-outs when there is one (3 replicates can never give p below 0.125, and say so honestly).
- a verdict worded from the ratio's CI: below 1 → yes, includes 1 → no evidence, above 1 → no.

Plain numbers in, plain numbers out; numpy and scipy only. tests/test_evidence.py checks every function
against a plain loop on fixed data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_DRAWS = 10_000
# A fixed seed: the same numbers give the same interval on every run and machine.
BOOTSTRAP_SEED = 0
EXACT_PERMUTATION_MAX = 16  # 2^16 = 65,536 sign patterns: exact below, Monte Carlo above
PERMUTATION_DRAWS = 20_000

CONNECTS_BETTER, NO_EVIDENCE, CONNECTS_WORSE = "yes", "no evidence", "no"
# A mean barrier below this (in loss units) is floating-point residue, not a barrier: a ratio of two such
# numbers (5.8e-19 / 3.1e-18 on a wide linear net) is noise, so it is reported as undefined.
ZERO_BARRIER = 1e-9


@dataclass(frozen=True)
class Replicate:
    """One replicate's paired observations: star[h] and regular[h] (the anchors' mean) per held-out h."""

    star: tuple[float, ...]
    regular: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.star) != len(self.regular) or not self.star:
            raise ValueError("a replicate needs one star and one regular value per held-out, and at least one held-out")
        if not all(math.isfinite(v) for v in (*self.star, *self.regular)):
            # A diverged curve has no barrier; letting NaN through turns it into "strong evidence" downstream.
            raise ValueError("a replicate's barriers must be finite (a NaN or infinite barrier means a diverged model)")


def hierarchical_draws(sizes: Sequence[int], draws: int, seed: int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap's resampling plan, as two arrays from one generator: `reps[d, j]`, the replicate in
    slot j of draw d (with replacement), and `held[d, j, k]`, the k-th held-out drawn from it, uniform
    over that replicate's held-outs (k below its size; the rest of the row is padding)."""
    rng = np.random.default_rng(seed)
    n = np.asarray(sizes)
    reps = rng.integers(0, len(n), size=(draws, len(n)))
    u = rng.random(size=(draws, len(n), int(n.max())))
    return reps, np.floor(u * n[reps][:, :, None]).astype(np.int64)


def _padded(values: Sequence[Sequence[float]]) -> np.ndarray:
    out = np.zeros((len(values), max(len(v) for v in values)))
    for i, v in enumerate(values):
        out[i, : len(v)] = v
    return out


def _resampled_sums(replicates: Sequence[Replicate], plan: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Σ star, Σ regular and the number of held-outs of every draw of `plan`, vectorised over draws."""
    reps, held = plan
    n = np.array([len(r.star) for r in replicates])
    star, regular = _padded([r.star for r in replicates]), _padded([r.regular for r in replicates])
    counts = n[reps]  # (draws, slots)
    real = np.arange(held.shape[2])[None, None, :] < counts[:, :, None]
    rows = np.broadcast_to(reps[:, :, None], held.shape)
    s = np.where(real, star[rows, held], 0.0).sum(axis=(1, 2))
    g = np.where(real, regular[rows, held], 0.0).sum(axis=(1, 2))
    return s, g, counts.sum(axis=1)


def bootstrap(replicates: Sequence[Replicate], draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """The ratio of means and the mean paired difference under each hierarchical resample."""
    s, g, count = _resampled_sums(replicates, hierarchical_draws([len(r.star) for r in replicates], draws, seed))
    return {"ratio": ratio_of_sums(s, g, count), "difference": (s - g) / count}


def ratio_of_sums(s, g, count):
    """Σ star / Σ regular, elementwise: +inf where only the star's barriers are above the floating-point floor
    (the star is worse, not "undefined"), NaN where both are at it (0/0: no barrier on either side)."""
    s, g, count = np.asarray(s, dtype=float), np.asarray(g, dtype=float), np.asarray(count, dtype=float)
    floor = ZERO_BARRIER * count
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g > floor, s / np.where(g > floor, g, 1.0), np.where(s > floor, np.inf, np.nan))


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The central percentile interval; None when any draw is undefined (0/0), since an interval over the
    draws that happened to be defined would be biased. +inf draws (star worse) stay in and may make the
    upper end infinite."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0 or np.isnan(values).any():
        return None
    tail = (1 - confidence) / 2 * 100
    # Interpolating towards +inf gives NaN (0 · inf): a finite stand-in, mapped back to +inf after.
    big = np.finfo(float).max / 4
    low, high = np.percentile(np.minimum(values, big), [tail, 100 - tail], method="linear")
    return tuple(float("inf") if v > 1e300 else float(v) for v in (low, high))  # type: ignore[return-value]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """mean ± t(R−1) · sd / √R over per-replicate values; None when any is not finite or fewer than 2."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.isfinite(v).all():
        return None
    half = float(t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


def sign_test(differences: Sequence[float]) -> dict[str, Any]:
    """One-sided sign test of "star below regular": among held-outs whose difference is not 0, how many are
    below, and P(at least that many | each side equally likely)."""
    below = sum(d < 0 for d in differences)
    n = sum(d != 0 for d in differences)
    from scipy.stats import binomtest

    p = float(binomtest(below, n, 0.5, alternative="greater").pvalue) if n else 1.0
    return {"below": int(below), "n": int(n), "p": p}


def sign_flip_test(differences: Sequence[float], draws: int = PERMUTATION_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Paired permutation test of "star below regular": under the null each difference's sign is a coin
    flip; p = share of sign patterns whose mean is at most the observed mean (one-sided). Exact when
    there are at most EXACT_PERMUTATION_MAX held-outs, else `draws` random patterns (+1 smoothing)."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        return {"p": 1.0, "exact": True, "n": 0}
    observed = d.mean()
    # The tolerance keeps ties (patterns whose mean equals the observed one) from being lost to rounding.
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if len(d) <= EXACT_PERMUTATION_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        means = signs @ np.abs(d) / len(d)
        return {"p": float((means <= observed + tol).mean()), "exact": True, "n": int(len(d))}
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(draws, len(d)))
    means = signs @ np.abs(d) / len(d)
    return {"p": float(((means <= observed + tol).sum() + 1) / (draws + 1)), "exact": False, "n": int(len(d))}


def connects_verdict(interval: tuple[float, float] | None) -> str:
    """The second verdict, worded from the ratio's CI alone."""
    if interval is None:
        return NO_EVIDENCE
    low, high = interval
    if high < 1:
        return CONNECTS_BETTER
    if low > 1:
        return CONNECTS_WORSE
    return NO_EVIDENCE


def compare(replicates: Sequence[Replicate], draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Everything a summary states about star vs regular barriers over these replicates (see the module
    docstring for which interval and which tests, by the number of replicates)."""
    star = np.concatenate([np.asarray(r.star, dtype=float) for r in replicates])
    regular = np.concatenate([np.asarray(r.regular, dtype=float) for r in replicates])
    differences = star - regular
    pooled = float(ratio_of_sums(star.sum(), regular.sum(), len(star)))
    out: dict[str, Any] = {
        "replicates": len(replicates),
        "held_outs": int(len(star)),
        "held_outs_per_replicate": sorted({len(r.star) for r in replicates}),
        "confidence": CONFIDENCE,
    }
    if len(replicates) == 1:
        samples = bootstrap(replicates, draws, seed)
        ratio_ci = percentile_interval(samples["ratio"])
        diff_ci = percentile_interval(samples["difference"])
        unit_diffs = differences
        out |= {"ratio": pooled, "interval": f"percentile bootstrap over held-outs ({draws} draws)", "level": "held-outs"}
    else:
        per_ratio = [float(ratio_of_sums(sum(r.star), sum(r.regular), len(r.star))) for r in replicates]
        unit_diffs = np.array([np.mean(np.subtract(r.star, r.regular)) for r in replicates])
        ratio_ci = t_interval(per_ratio)
        if ratio_ci is not None:  # a ratio of barriers is never negative: the normal approximation's tail is cut at 0
            ratio_ci = (max(0.0, ratio_ci[0]), ratio_ci[1])
        diff_ci = t_interval(unit_diffs)
        mean_ratio = float(np.mean(per_ratio)) if np.isfinite(per_ratio).all() else float("nan")
        out |= {"ratio": mean_ratio, "pooled_ratio": pooled, "replicate_ratios": per_ratio,
                "interval": f"t-interval over the {len(replicates)} replicates (df {len(replicates) - 1})",
                "level": "replicates"}
    if out["ratio"] is not None and not math.isfinite(out["ratio"]):
        out["ratio"] = None if math.isnan(out["ratio"]) else out["ratio"]
    out |= {
        "ratio_ci": list(ratio_ci) if ratio_ci else None,
        "difference": float(differences.mean()) if len(replicates) == 1 else float(np.mean(unit_diffs)),
        "difference_ci": list(diff_ci) if diff_ci else None,
        "sign_test": sign_test(list(map(float, unit_diffs))),
        "permutation_test": sign_flip_test(list(map(float, unit_diffs)), seed=seed),
        "connects_better": connects_verdict(ratio_ci),
    }
    return out


def trend(xs: Sequence[float], cells: Sequence[Sequence[Replicate]], draws: int = 2_000, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """A trend of the star/regular ratio along an axis (width, anchors): the least-squares slope of the ratio
    on log2(x) with a CI, and Spearman ρ. With replicates: every replicate's ratio is a point and the slope gets
    its t-interval. With one replicate per setting: a two-stage bootstrap over each setting's held-outs (CIs
    on slope and ρ), which covers held-out variation only, and the text says so. A single ρ from one draw of
    seeds is not a trend."""
    from scipy.stats import spearmanr

    # Settings whose ratio is undefined (regular barriers at the floating-point floor) carry no trend.
    all_x = list(map(float, xs))
    kept = [i for i, cell in enumerate(cells) if math.isfinite(float(ratio_of_sums(
        sum(sum(r.star) for r in cell), sum(sum(r.regular) for r in cell), sum(len(r.regular) for r in cell))))]
    cells = [cells[i] for i in kept]
    x = np.asarray([all_x[i] for i in kept], dtype=float)
    logx = np.log2(x) if (x > 0).all() else x

    def ratio_of(cell: Sequence[Replicate]) -> float:
        return float(ratio_of_sums(sum(sum(r.star) for r in cell), sum(sum(r.regular) for r in cell),
                                   sum(len(r.regular) for r in cell)))

    def stats(ratios: np.ndarray) -> tuple[float, float]:
        if len(ratios) < 3 or not np.isfinite(ratios).all() or np.ptp(ratios) == 0:
            return math.nan, math.nan
        rho = spearmanr(x, ratios).statistic
        slope = np.polyfit(logx, ratios, 1)[0]
        return float(rho), float(slope)

    observed = np.array([ratio_of(c) for c in cells])
    rho, slope = stats(observed)
    resampled = []
    for i, cell in enumerate(cells):
        s, g, count = _resampled_sums(cell, hierarchical_draws([len(r.star) for r in cell], draws, seed + 1 + i))
        resampled.append(ratio_of_sums(s, g, count))
    by_draw = np.stack(resampled, axis=1) if resampled else np.empty((draws, 0))  # (draws, cells)
    rhos, slopes = np.empty(draws), np.empty(draws)
    for d in range(draws):
        rhos[d], slopes[d] = stats(by_draw[d])
    slope_ci = percentile_interval(slopes)
    rho_ci = percentile_interval(rhos)
    per_setting = min((len(c) for c in cells), default=0)
    if per_setting >= 2:
        # With replicates the replicate is the unit, as in `compare`: least squares of every replicate's ratio
        # on log2(x), with the slope's t-interval (df = points − 2). The two-stage bootstrap is too narrow here.
        from scipy.stats import linregress, t

        px = np.concatenate([[lx] * len(cell) for lx, cell in zip(logx, cells)])
        py = np.concatenate([[float(ratio_of_sums(sum(r.star), sum(r.regular), len(r.star))) for r in cell]
                             for cell in cells])
        if np.isfinite(py).all() and len(px) > 2 and np.ptp(px) > 0:
            fit = linregress(px, py)
            half = float(t.ppf(0.5 + CONFIDENCE / 2, len(px) - 2) * fit.stderr)
            slope, slope_ci = float(fit.slope), (float(fit.slope) - half, float(fit.slope) + half)
        else:
            slope_ci = None
        rho_ci = None  # rank correlation of the setting means, shown without an interval
    return {
        "replicates_per_setting": per_setting,
        "interval": "t-interval of a least-squares slope over every replicate's ratio" if per_setting >= 2
        else f"two-stage bootstrap ({draws} draws)",
        "x": list(map(float, x)),
        "left_out": [all_x[i] for i in range(len(all_x)) if i not in kept],
        "ratios": observed.tolist(),
        "spearman": rho,
        "spearman_ci": rho_ci,
        "slope_per_doubling": slope if (x > 0).all() else None,
        "slope": slope,
        "slope_ci": slope_ci,
        "log2_x": bool((x > 0).all()),
        "confidence": CONFIDENCE,
        "bootstrap_draws": draws,
    }


def describe_trend(result: dict[str, Any], what: str, axis: str) -> str:
    """One sentence worded from the slope's CI: falls / rises / no clear trend."""
    ci = result.get("slope_ci")
    unit = "per doubling of " + axis if result.get("log2_x") else "per unit of " + axis
    rho_ci = result.get("spearman_ci")
    if rho_ci is None:
        rho = "" if not math.isfinite(result.get("spearman", math.nan)) else f"; Spearman ρ of the setting means {result['spearman']:+.2f}"
    else:
        rho = f"; Spearman ρ {result['spearman']:+.2f} [{rho_ci[0]:+.2f}, {rho_ci[1]:+.2f}]"
    if ci is None or not math.isfinite(result["slope"]):
        return f"{what}: no trend can be estimated as {axis} grows (too few finite values)."
    if result.get("left_out"):
        rho += f"; left out, ratio undefined: {axis} {', '.join(f'{v:g}' for v in result['left_out'])}"
    word = "falls" if ci[1] < 0 else "rises" if ci[0] > 0 else "shows no clear trend (the CI of its slope includes 0)"
    caveat = (" With one replicate per setting this CI covers held-out variation only: another anchor set could "
              "give another trend." if result.get("replicates_per_setting") == 1 else "")
    return (f"{what} {word} as {axis} grows: slope {result['slope']:+.3f} {unit}, "
            f"{int(result['confidence'] * 100)}% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]{rho}.{caveat}")


def describe(result: dict[str, Any], split: str = "train") -> str:
    """The claim a summary makes, worded from its own interval and counts."""
    reps, n = result["replicates"], result["held_outs"]
    ratio, ci = result["ratio"], result["ratio_ci"]
    pct = int(result["confidence"] * 100)
    per = result.get("held_outs_per_replicate") or [n]
    design = (f"{reps} replicate{'s' if reps != 1 else ''} × {per[0]} held-outs" if len(per) == 1
              else f"{reps} replicates, {n} held-outs in all")
    if ratio is None or ci is None:
        why = ("a diverged or undefined value" if ratio is not None else
               f"the barriers are 0 or floating-point residue below {ZERO_BARRIER:g} on both sides")
        return f"star/regular {split} loss barrier: undefined ({why}; {design})."
    sign, perm = result["sign_test"], result["permutation_test"]
    unit = "replicates" if result.get("level") == "replicates" else "held-outs"
    verdict = {
        CONNECTS_BETTER: "the star connects better than regular pairs",
        NO_EVIDENCE: "no evidence that the star connects better than regular pairs (the CI includes 1)",
        CONNECTS_WORSE: "the star connects worse than regular pairs",
    }[result["connects_better"]]
    high = "∞" if math.isinf(ci[1]) else f"{ci[1]:.3f}"
    text = (
        f"star/regular {split} loss barrier {ratio:.3f}, {pct}% CI [{ci[0]:.3f}, {high}] ({design}; "
        f"star below regular in {sign['below']} of {sign['n']} {unit}, sign test p = {sign['p']:.3g}, "
        f"permutation p = {perm['p']:.3g}): "
    )
    if reps == 1:
        text += (f"for this star and these held-outs, {verdict}. One replicate: the CI covers held-out variation "
                 "only, not that of anchor sets or star seeds.")
    else:
        text += f"{verdict}."
    return text
