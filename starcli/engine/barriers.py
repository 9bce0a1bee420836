"""What a barrier is (paper Eq. 1), computed from the curves L(t) of a pair: per-pair barriers and
peaks, and the summary over groups of pairs. Plain numbers in, plain numbers out."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from .evidence import ZERO_BARRIER

STAR_PAIRS, REGULAR_PAIRS, PLAIN_PAIRS = "star-held-out", "regular-held-out", "pair"
# The solution rule: a star counts as a solution when its own train loss is at most this many times its
# anchors' mean train loss. A small barrier from a poor star is its own high loss at t = 0, not
# connectivity; the verdict is printed beside every barrier.
SOLUTION_LOSS_RATIO = 1.5
# At train losses near 0 a ratio flips on noise (0.003 vs 0.002 nats is "1.5×"): an excess this small
# over the anchors' mean counts as equal, whatever the ratio.
SOLUTION_LOSS_SLACK = 0.01
SOLUTION_RULE = (
    f"star train loss ≤ {SOLUTION_LOSS_RATIO:g} × the anchors' mean train loss, "
    f"or at most {SOLUTION_LOSS_SLACK:g} nats above it with a train accuracy within 1 point of theirs"
)
# "A solution" is relative to the anchors: below this mean train accuracy (%) the anchors have not fitted
# their training set, and a star as good as they are is an under-fitted model too; the verdict says so.
FITTED_TRAIN_ACC = 99.0


DEFINITIONS = (
    "On a split, L(t) is the mean cross-entropy of the network with weights (1−t)θ_A + tθ_B, t on a grid of "
    "{points} points in [0, 1]. Loss barrier = max over the grid of L(t) − ((1−t)L(0) + tL(1)), floored at 0; "
    "accuracy barrier = max over the grid of ((1−t)acc(0) + t·acc(1)) − acc(t), in percentage points, floored "
    "at 0. \"train\" is the training split without augmentation. Networks with BatchNorm get their running "
    "statistics reset and re-estimated (cumulative average) on {calibration} at every interior t.{alignment} Star-held-out "
    "pairs join the star to each held-out; regular-held-out pairs join each of the star's anchors to each "
    "held-out. Mean ± sample standard deviation over pairs."
)


ALIGNMENT_SENTENCE = {
    "none": " Models are interpolated as they are (no permutation alignment).",
    "weight": " Before interpolating, B's hidden units are permuted to match A's (weight matching), for every pair.",
    "activation": " Before interpolating, B's hidden units are permuted to fire like A's on the calibration samples "
    "(activation matching: correlations of hidden features, linear assignment), for every pair.",
}

# How a curve is read into a barrier: the paper's Eq. 1 (the excess over the line between the endpoints,
# largest over t); the excess over the endpoints' mean (Git Re-Basin, rethink-re-basin); Frankle et al.
# 2020's error barrier, the same reading of the error, with a pair linearly connected below 2 points.
DEFINITION_CHOICES = ("eq1", "endpoint-mean", "error")
DEFAULT_DEFINITION = "eq1"
ERROR_CONNECTED_BELOW = 2.0  # percentage points (Frankle et al. 2020)
DEFINITION_SENTENCE = {
    "eq1": "",
    "endpoint-mean": " Definition endpoint-mean (Git Re-Basin): each barrier is instead the largest excess over "
    "the mean of the endpoints' values, max_t L(t) − (L(0) + L(1))/2 (accuracy: its mirror).",
    "error": " Definition error (Frankle et al. 2020): each barrier is instead the largest excess over the mean of "
    "the endpoints' values (loss, and error = 100 − accuracy), and a pair is linearly connected when its error "
    f"barrier is below {ERROR_CONNECTED_BELOW:g} points.",
}
# Renormalisation at each interior t other than the default (engine/renormalisation.py).
RENORM_SENTENCE = {
    "none": " Renormalisation none: instead, the interpolated network is evaluated as it is, its BatchNorm running "
    "statistics interpolated with the weights.",
    "repair": " Renormalisation REPAIR: each hidden channel's pre-activation is given the mean and standard deviation "
    "interpolated between the endpoints', on the calibration samples.",
    "rescale": " Renormalisation rescale: each hidden channel's pre-activation standard deviation is set to the one "
    "interpolated between the endpoints', on the calibration samples.",
    "reshift": " Renormalisation reshift: each hidden channel's pre-activation mean is set to the one interpolated "
    "between the endpoints', on the calibration samples.",
    "reset": "",
}


def definitions(settings: dict[str, Any]) -> str:
    """The paragraph that states what the numbers under these settings mean."""
    calibration = settings["bn_calibration"]
    calibration = "the whole training split" if calibration == "full" else f"{calibration} training samples"
    return DEFINITIONS.format(
        points=settings["points"], calibration=calibration, alignment=ALIGNMENT_SENTENCE[settings["align"]]
    ) + RENORM_SENTENCE[settings.get("renorm", "reset")] + DEFINITION_SENTENCE[settings.get("definition", DEFAULT_DEFINITION)] + (
        f" Losses are at softmax temperature {settings['temperature']:g}: the cross-entropy of logits / {settings['temperature']:g}."
        if settings.get("temperature", 1.0) != 1.0 else ""
    )


def pair_record(
    a: int, b: int, kind: str, result: dict, splits: tuple[str, ...], definition: str = DEFAULT_DEFINITION
) -> dict[str, Any]:
    out: dict[str, Any] = {"a": a, "b": b, "kind": kind, "t": result["t"]}
    for split in splits:
        curve = result[split]
        out[split] = {
            "loss": curve["loss"],
            "acc": curve["acc"],
            "loss_barrier": read_barrier(definition, result["t"], curve["loss"]),
            "acc_barrier": read_barrier(definition, result["t"], curve["acc"], higher_is_worse=False),
        }
        if definition == "error":
            out[split]["connected"] = out[split]["acc_barrier"] < ERROR_CONNECTED_BELOW
    return out


def read_barrier(definition: str, ts: list[float], values: list[float], higher_is_worse: bool = True) -> float:
    """A curve's barrier under `definition` (DEFINITION_CHOICES)."""
    if definition == "eq1":
        return barrier(ts, values, higher_is_worse)
    return endpoint_mean_barrier(values, higher_is_worse)


def endpoint_mean_barrier(values: list[float], higher_is_worse: bool = True) -> float:
    """max_t v(t) − (v(0) + v(1))/2 (accuracy: (acc(0) + acc(1))/2 − min_t acc(t)). Never below 0: the
    endpoints are on the grid, and the larger of them is at least their mean."""
    if not all(math.isfinite(v) for v in values):
        return float("nan")
    sign = 1.0 if higher_is_worse else -1.0
    return max(sign * v for v in values) - sign * (values[0] + values[-1]) / 2


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(pairs: list[dict], splits: tuple[str, ...], evidence: bool = True) -> dict[str, Any]:
    """Mean ± std and n of each barrier and of the peak loss max_t L(t) per kind of pair and split, the
    star/regular ratio of the mean barriers, and (`evidence`) the comparison with its CI, the pairs read as
    one replicate (a sweep pools several stars' pairs for their means and computes its evidence per star)."""
    summary: dict[str, Any] = {}
    for kind in dict.fromkeys(p["kind"] for p in pairs):
        group = [p for p in pairs if p["kind"] == kind]
        summary[kind] = {
            split: {m: _stats([p[split][m] for p in group]) for m in ("loss_barrier", "acc_barrier")}
            | {"peak_loss": _stats([max(p[split]["loss"]) for p in group])}
            for split in splits
        }
    if STAR_PAIRS in summary:
        summary["ratio"] = {split: {m: None for m in ("loss_barrier", "acc_barrier")} for split in splits}
        if REGULAR_PAIRS in summary:
            for split in splits:
                for m in ("loss_barrier", "acc_barrier"):
                    regular = summary[REGULAR_PAIRS][split][m]["mean"]
                    star = summary[STAR_PAIRS][split][m]["mean"]
                    # The evidence module's rule: a baseline at the floating-point floor has no ratio.
                    summary["ratio"][split][m] = star / regular if regular > ZERO_BARRIER else None
            if evidence:
                summary["evidence"] = compare_pairs([pairs], splits)
    return summary


def replicates_of(pair_lists: Sequence[list[dict]], split: str, metric: str = "loss_barrier"):
    """One evidence.Replicate per star's pairs: per held-out, the star's barrier and the mean of its anchors'
    barriers to that held-out (the paired regular baseline). Held-outs without both are left out."""
    from .evidence import Replicate

    out = []
    for pairs in pair_lists:
        star = {p["b"]: p[split][metric] for p in pairs if p["kind"] == STAR_PAIRS and split in p}
        regular: dict[int, list[float]] = {}
        for p in pairs:
            if p["kind"] == REGULAR_PAIRS and split in p:
                regular.setdefault(p["b"], []).append(p[split][metric])
        # A diverged pair (NaN barrier) has no barrier to compare; its held-out is left out of the evidence.
        held = [h for h in star if h in regular and math.isfinite(star[h]) and all(map(math.isfinite, regular[h]))]
        if held:
            out.append(Replicate(tuple(star[h] for h in held), tuple(statistics.fmean(regular[h]) for h in held)))
    return out


def compare_pairs(pair_lists: Sequence[list[dict]], splits: Sequence[str]) -> dict[str, Any]:
    """evidence.compare of the loss barriers per split, over replicates (one list of pairs per star)."""
    from .evidence import compare

    out = {}
    for split in splits:
        reps = replicates_of(pair_lists, split)
        if reps:
            out[split] = compare(reps)
    return out


def barrier(ts: list[float], values: list[float], higher_is_worse: bool = True) -> float:
    """Largest excess over the straight line between the endpoint values, floored at 0.

    Loss: max_t L(t) − ((1−t)L(0) + tL(1)).
    Accuracy (higher_is_worse=False): max_t ((1−t)acc(0) + t·acc(1)) − acc(t).
    """
    if not all(math.isfinite(v) for v in values):
        # A diverged point has no barrier: NaN, never the 0 that max(0.0, nan) would give.
        return float("nan")
    first, last = values[0], values[-1]
    sign = 1.0 if higher_is_worse else -1.0
    # first + t·(last − first) rather than (1−t)·first + t·last: exactly `first` when the endpoints agree.
    return max(0.0, max(sign * (v - (first + t * (last - first))) for t, v in zip(ts, values)))


def peak_loss(pairs: list[dict[str, Any]], kind: str, split: str) -> float | None:
    """Mean over pairs of the highest loss on the segment, max_t L(t).

    The barrier is an excess over the line between the endpoints, so a center that is itself a poor
    model can have a low barrier on a segment that never gets as low as a regular one: the peak says
    how good the worst network on the segment is, whatever its endpoints."""
    peaks = [max(p[split]["loss"]) for p in pairs if p["kind"] == kind and split in p and p[split].get("loss")]
    return sum(peaks) / len(peaks) if peaks else None


REGRESSION_RULE = f"star train loss ≤ {SOLUTION_LOSS_RATIO:g} × the anchors' mean train loss"


def verdict(star_metrics: dict[str, Any] | None, anchor_metrics: dict[str, Any] | None,
            task: str = "classification") -> dict[str, Any]:
    """Whether the star is itself a solution, by SOLUTION_RULE, with the numbers the rule compares: the
    ratio, the absolute excess in nats, both train accuracies, and whether the anchors fitted at all.

    For a regression task the loss is a mean squared error in the targets' units and "acc" is R²: the nat
    slack and the accuracy flag mean nothing there, so only the ratio rule applies (REGRESSION_RULE).
    `star_is_solution` is None when either train loss is unknown (a diverged or imported model)."""
    regression = task == "regression"
    star_loss = (star_metrics or {}).get("train_loss")
    anchor_loss = (anchor_metrics or {}).get("train_loss")
    known = star_loss is not None and anchor_loss is not None
    ratio = star_loss / anchor_loss if known and anchor_loss > 0 else None
    excess = star_loss - anchor_loss if known else None
    star_acc = (star_metrics or {}).get("train_acc")
    anchor_acc = (anchor_metrics or {}).get("train_acc")
    # The slack also asks that the star fit the training set as well as its anchors (within a point), so a
    # star several times its anchors' tiny loss counts only while it makes no more training errors.
    slack_ok = (excess is not None and excess <= SOLUTION_LOSS_SLACK and
                (star_acc is None or anchor_acc is None or star_acc >= anchor_acc - 1.0))
    is_solution = None if not known else (
        star_loss <= SOLUTION_LOSS_RATIO * anchor_loss or (not regression and slack_ok)
    )
    return {
        "star_is_solution": is_solution,
        "rule": REGRESSION_RULE if regression else SOLUTION_RULE,
        "task": task,
        "star_train_loss": star_loss,
        "anchor_train_loss": anchor_loss,
        "loss_ratio": ratio,
        "loss_excess": excess,
        "star_train_acc": star_acc,
        "anchor_train_acc": anchor_acc,
        "anchors_fitted": None if anchor_acc is None or regression else anchor_acc >= FITTED_TRAIN_ACC,
    }
