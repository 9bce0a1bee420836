"""A sweep's report folder: tidy pairs.csv, summary.csv and summary.md (one row per star), figures and
results.json. It lays out the numbers the sweep measured and the findings it computed
(starcli/experiments/statistics.py); it computes nothing of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starcli.engine.barriers import (
    DEFINITION_SENTENCE, REGRESSION_RULE, SOLUTION_RULE, compare_pairs, peak_loss, summarize, verdict,
)
from starcli.engine.evidence import describe

from .figures import bar_plot, curves_plot, line_plot, scatter_fit
from .tables import fmt, markdown_table, mean_std, write_csv

GROUPS = ("star-held-out", "regular-held-out", "soup-held-out")
LOG_AXES = ("width", "n_anchors")  # grids that double
# (pair kind, column prefix): the centers every summary compares.
CENTERS = (("star-held-out", "star"), ("regular-held-out", "regular"), ("soup-held-out", "soup"))
AXIS_LABELS = {"width": "width", "n_anchors": "anchors", "t_sampling": "t sampling", "star_seed": "star seed",
               "align": "alignment", "renorm": "renormalisation", "definition": "barrier definition"}


SETTING = ("width", "n_anchors", "t_sampling", "star_seed")
# The barrier-protocol axes (sweep_file.PROTOCOL_AXES), in the order their columns follow SETTING's.
PROTOCOL_AXES = ("align", "renorm", "definition")


def setting_keys(cells: list[dict[str, Any]]) -> tuple[str, ...]:
    """The keys of one grid setting: SETTING, and the barrier-protocol axes the cells were measured over
    (each cell names them in `protocol_axes`; a sweep without such axes has SETTING alone)."""
    axes = set(cells[0].get("protocol_axes", ())) if cells else set()
    return SETTING + tuple(a for a in PROTOCOL_AXES if a in axes)


def settings_of(cells: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The cells grouped by grid setting (every replicate of one setting together), in grid order."""
    keys = setting_keys(cells)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell[k] for k in keys), []).append(cell)
    return list(groups.values())


def summary_rows(payload: dict[str, Any], paper: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per grid setting, pooling its replicates, with the paper's reference numbers where the sweep
    file gives them."""
    splits = list(payload["barriers"]["splits"])
    rows = [summary_row(group, splits, payload.get("task", "classification")) for group in settings_of(payload["cells"])]
    _attach_paper(rows, paper or {})
    return rows


def write_sweep(
    payload: dict[str, Any],
    out: Path,
    rows: list[dict[str, Any]],
    findings: list[str],
    fit: dict[str, Any] | None = None,
    paper: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """pairs.csv (every pair, tidy), summary.csv and summary.md (one row per star), figures, results.json.
    `fit` (star against regular across widths) draws its line into the scatter figure."""
    out.mkdir(parents=True, exist_ok=True)
    cells, x = payload["cells"], payload["x"]
    splits = list(payload["barriers"]["splits"])
    pairs = [row for cell in cells for row in pair_rows(cell)]
    write_csv(out / "pairs.csv", pairs, pair_columns(setting_keys(cells)))
    write_csv(out / "summary.csv", rows)
    for stale in [f for suffix in ("png", "pdf", "svg") for f in out.glob(f"*.{suffix}")]:
        # Figures of an earlier run of another grid would sit next to a report that no longer shows them.
        if stale.stem.startswith(FIGURE_STEMS):
            stale.unlink()
    figures = sweep_figures(cells, rows, x, splits, out, fit)
    (out / "summary.md").write_text(sweep_markdown(payload, rows, figures, findings, paper or {}))
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    files = ["pairs.csv", "summary.csv", "summary.md", "results.json"] + [f.name for f in figures]
    return {"rows": rows, "files": files}


FIGURE_STEMS = ("barrier-", "scatter-", "own-train-loss", "curves-")
PAIR_COLUMNS = [
    "width", "n_anchors", "t_sampling", "star_seed", "replicate", "star", "group", "a", "b", "split", "loss_barrier", "acc_barrier",
]


def pair_columns(keys: tuple[str, ...] = SETTING) -> list[str]:
    """pairs.csv's columns: the barrier-protocol axes' (when the sweep has them) after the star's grid values."""
    return PAIR_COLUMNS[:4] + list(keys[len(SETTING):]) + PAIR_COLUMNS[4:]


def pair_rows(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (pair, split) of a sweep cell, labelled with the cell's grid values."""
    labels = pair_columns(setting_keys([cell]))
    base = {k: cell.get(k, 0) for k in labels[: labels.index("star") + 1]}  # the cell's grid values and its star
    rows = []
    for pair in cell["pairs"] + (cell.get("soup") or {}).get("pairs", []):
        for split, values in _pair_splits(pair).items():
            rows.append(
                base
                | {"group": pair["kind"], "a": pair.get("a"), "b": pair.get("b"), "split": split}
                | {"loss_barrier": values.get("loss_barrier"), "acc_barrier": values.get("acc_barrier")}
            )
    return rows


def _pair_splits(pair: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in pair.items() if k in ("train", "test") and isinstance(v, dict)}


def summary_stat(summary: dict[str, Any], group: str, split: str, metric: str) -> dict[str, Any]:
    return ((summary.get(group) or {}).get(split) or {}).get(metric) or {}


def summary_row(cells: list[dict[str, Any]] | dict[str, Any], splits: list[str], task: str = "classification") -> dict[str, Any]:
    """One setting's row, pooling its replicates (one cell each): grid values, the stars' and anchors' mean
    metrics, barrier mean ± std over all pairs, and the star/regular ratio with its CI (engine/evidence.py),
    the paired difference, the sign and permutation tests and the verdict worded from the CI."""
    cells = [cells] if isinstance(cells, dict) else cells
    first = cells[0]
    row: dict[str, Any] = {k: first[k] for k in setting_keys(cells)}
    row["star"] = first["star"] if len(cells) == 1 else " ".join(str(c["star"]) for c in cells)
    row["replicates"] = len(cells)
    row["held_outs"] = sum(len(c["held_out"]) for c in cells)
    soups = [c.get("soup") for c in cells if c.get("soup")]
    row["soup"] = (soups[0]["id"] if len(soups) == 1 else " ".join(str(p["id"]) for p in soups)) if soups else None
    pairs = [p for c in cells for p in c["pairs"]]
    soup_pairs = [p for soup in soups for p in soup["pairs"]]
    summary = summarize(pairs, tuple(splits), evidence=False) if pairs else {}
    if soup_pairs:
        summary["soup-held-out"] = summarize(soup_pairs, tuple(splits), evidence=False).get("soup-held-out") or {}
    verdicts = [verdict(c["star_metrics"], c["anchor_metrics"], task) for c in cells]
    known = [v["star_is_solution"] for v in verdicts if v["star_is_solution"] is not None]
    row["star_is_solution"] = None if not known else all(known)
    row["stars_that_are_solutions"] = f"{sum(known)}/{len(cells)}"
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        row[f"star_{key}"] = _mean([c["star_metrics"].get(key) for c in cells])
        row[f"anchor_{key}"] = _mean([(c["anchor_metrics"] or {}).get(key) for c in cells])
        row[f"soup_{key}"] = _mean([soup["metrics"].get(key) for soup in soups]) if soups else None
    evidence = compare_pairs([c["pairs"] for c in cells], splits)
    for split in splits:
        for metric in ("loss_barrier", "acc_barrier"):
            for group, short in CENTERS:
                stat = summary_stat(summary, group, split, metric)
                for field in ("mean", "std", "n"):
                    row[f"{short}_{split}_{metric}_{field}"] = stat.get(field)
        found = evidence.get(split)
        # The ratio the CI is about (engine/evidence.py: pooled for one replicate, the mean per-replicate
        # ratio for several), so the column and its interval always agree.
        row[f"ratio_{split}_loss_barrier"] = (found or {}).get("ratio")
        ci = (found or {}).get("ratio_ci") or (None, None)
        diff_ci = (found or {}).get("difference_ci") or (None, None)
        row[f"ratio_{split}_ci_low"], row[f"ratio_{split}_ci_high"] = ci
        row[f"difference_{split}"] = (found or {}).get("difference")
        row[f"difference_{split}_ci_low"], row[f"difference_{split}_ci_high"] = diff_ci
        row[f"sign_test_{split}_p"] = (found or {}).get("sign_test", {}).get("p")
        row[f"permutation_{split}_p"] = (found or {}).get("permutation_test", {}).get("p")
        row[f"connects_better_{split}"] = (found or {}).get("connects_better")
        row[f"evidence_{split}"] = describe(found, split) if found else None
        for group, short in CENTERS:
            row[f"{short}_{split}_peak_loss"] = peak_loss(pairs + soup_pairs, group, split)
    return row


def _mean(values: list[Any]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _attach_paper(rows: list[dict[str, Any]], paper: dict[str, Any]) -> None:
    """The paper's numbers, listed per cell in the sweep file's [paper] table, next to ours."""
    for key in ("star", "regular"):
        values = paper.get(key)
        if isinstance(values, list) and len(values) == len(rows):
            for row, value in zip(rows, values):
                row[f"paper_{key}_train_loss_barrier"] = value


def sweep_figures(cells, rows, x: str, splits: list[str], out: Path, fit: dict[str, Any] | None) -> list[Path]:
    figures = []
    xs = [r[x] for r in rows]
    numeric = all(isinstance(v, (int, float)) for v in xs) and len(set(xs)) == len(xs)
    label = AXIS_LABELS.get(x, x)
    categories = _categories(rows, x, setting_keys(cells))
    for split in splits:
        series = {
            f"{short}-held-out": (
                [r[f"{short}_{split}_loss_barrier_mean"] for r in rows],
                [r[f"{short}_{split}_loss_barrier_std"] for r in rows],
            )
            for _, short in CENTERS
            if any(r[f"{short}_{split}_loss_barrier_mean"] is not None for r in rows)
        }
        path = out / f"barrier-{split}.png"
        title = f"{split} loss barrier, mean ± std over held-out pairs"
        if numeric:
            figures.append(line_plot(path, xs, series, label, f"{split} loss barrier", title, logx=x in LOG_AXES))
        else:
            figures.append(bar_plot(path, categories, series, f"{split} loss barrier", title))
    pts = [(r["regular_train_loss_barrier_mean"], r["star_train_loss_barrier_mean"], r[x]) for r in rows]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if len(pts) >= 2 and fit is not None:  # see statistics.findings(): the fit is the width study's
        figures.append(scatter_fit(
            out / "scatter-train.png", [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts],
            "regular-held-out train loss barrier", "star-held-out train loss barrier", f"one point per {label}",
            slope_origin=fit.get("slope_origin"),
        ))
    if len(rows) >= 2:
        series = {
            "star": ([r["star_train_loss"] for r in rows], [None] * len(rows)),
            "anchors (mean)": ([r["anchor_train_loss"] for r in rows], [None] * len(rows)),
        }
        if any(r["soup_train_loss"] is not None for r in rows):
            series["soup"] = ([r["soup_train_loss"] for r in rows], [None] * len(rows))
        path = out / "own-train-loss.png"
        title = "the models' own train loss"
        if numeric:
            figures.append(line_plot(path, xs, series, label, "train loss", title, logx=x in LOG_AXES))
        else:
            figures.append(bar_plot(path, categories, series, "train loss", title))
    curves = curve_groups(cells, "train")
    if curves:
        path = out / "curves-train.png"
        where = f"{label} {cells[-1][x]}"
        figures.append(curves_plot(path, curves["ts"], curves["groups"], "train loss", f"train loss along every segment ({where})"))
    return figures


def _categories(rows: list[dict[str, Any]], x: str, keys: tuple[str, ...]) -> list[str]:
    """Bar labels: the x value, and where it repeats in a sweep with barrier-protocol axes (another axis
    varies too, e.g. renorm × align), below it the values of the other axes that vary, so that no two bars
    read alike."""
    xs = [str(r[x]) for r in rows]
    if len(set(xs)) == len(xs) or keys == SETTING:
        # Without barrier-protocol axes, the labels (and so the figures' bytes) are the x values, as always.
        return xs
    others = [k for k in keys if k != x and len({r[k] for r in rows}) > 1]
    return ["\n".join([str(r[x])] + [str(r[k]) for k in others]) for r in rows]  # one line each: they fit


# What each barrier-protocol value does, for the report's preamble (barrier's own wording: engine/barriers.py).
RENORM_WORDS = {
    "none": "the interpolated network as it is (BatchNorm statistics, where there are any, interpolated with the weights)",
    "reset": "BatchNorm statistics re-estimated at each t",
    "repair": "each hidden channel's pre-activation given the mean and standard deviation interpolated between the "
    "endpoints', on the calibration samples (REPAIR, Jordan et al. 2022)",
    "rescale": "each hidden channel's pre-activation standard deviation set to the one interpolated between the endpoints'",
    "reshift": "each hidden channel's pre-activation mean set to the one interpolated between the endpoints'",
}
ALIGN_WORDS = {"weight": "weight matching", "activation": "activation matching on the calibration samples",
               "none": "nothing (raw weights)"}


def _aligned_by(align: str | None) -> str:
    return ALIGN_WORDS["none"] if align is None else ALIGN_WORDS.get(align, ALIGN_WORDS["none"])


def protocol_sentence(payload: dict[str, Any]) -> str:
    """The barrier protocol's part of the report's preamble: the axes the sweep varies (each a column) and
    the renorm and definition its [barriers] fixes; "" for a sweep with neither (its report as before)."""
    axes, fixed = payload.get("protocol_axes") or {}, payload["barriers"]
    parts = []
    if axes:
        listed = "; ".join(f"{k} = {', '.join(v)}" for k, v in axes.items())
        parts.append(f"Barrier-protocol axes (a column each; every value measures the same stars, anchors and held-outs): {listed}.")
    if "align" in axes:
        parts.append("Pairs aligned as the align column says (" + ", ".join(f"{a}: {ALIGN_WORDS[a]}" for a in axes["align"])
                     + "); the stars and soups align their anchors by weight matching whichever it is.")
    for renorm in axes.get("renorm") or ([fixed["renorm"]] if fixed.get("renorm") else []):
        parts.append(f"Renorm {renorm}: {RENORM_WORDS[renorm]}.")
    for definition in axes.get("definition") or ([fixed["definition"]] if fixed.get("definition") else []):
        sentence = DEFINITION_SENTENCE[definition] or " Definition eq1: the paper's Eq. 1 below."
        parts.append(f"Definition {definition}:{sentence.split(':', 1)[1]}")
    return " ".join(parts)


def curve_groups(cells, split: str) -> dict[str, Any] | None:
    """Interpolation curves of the last cell (the largest star of the grid), if `measure` returned them."""
    cell = cells[-1]
    groups: dict[str, list[list[float]]] = {g: [] for g in GROUPS}  # star first: C0 in every figure
    ts = None
    for pair in cell["pairs"] + (cell.get("soup") or {}).get("pairs", []):
        values = _pair_splits(pair).get(split) or {}
        curve = values.get("loss")
        if isinstance(curve, list) and curve:
            ts = pair.get("t") or [i / (len(curve) - 1) for i in range(len(curve))]
            groups.setdefault(pair["kind"], []).append(curve)
    if ts is None:
        return None
    return {"ts": ts, "groups": {k: v for k, v in groups.items() if v}}


def score_name(task: str) -> str:
    """What the 'acc' numbers are: accuracy for classifiers, R² for regression (evaluation.evaluate)."""
    return "R² %" if task == "regression" else "acc %"


def sweep_markdown(payload: dict[str, Any], rows, figures: list[Path], found: list[str], paper: dict[str, Any]) -> str:
    x = payload["x"]
    splits = list(payload["barriers"]["splits"])
    grid_cols = [c for c in setting_keys(payload["cells"]) if c == x or len({r[c] for r in rows}) > 1]
    grid_cols = grid_cols or ["width"]
    score = score_name(payload.get("task", "classification"))
    shorts = ["star", "regular"] + (["soup"] if any(r["soup"] is not None for r in rows) else [])
    table = []
    for r in rows:
        line = {c: r[c] for c in grid_cols}
        line["star"] = r["star"]
        # The paper's headline is the train-split barrier; the test split's are in summary.csv and a figure.
        split = "train" if "train" in splits else splits[0]
        for short in shorts:
            line[f"{short} {split}"] = mean_std(
                r[f"{short}_{split}_loss_barrier_mean"], r[f"{short}_{split}_loss_barrier_std"], r[f"{short}_{split}_loss_barrier_n"]
            )
        line["ratio (train)"] = r.get("ratio_train_loss_barrier")
        low, high = r.get("ratio_train_ci_low"), r.get("ratio_train_ci_high")
        line["95% CI"] = "-" if low is None else f"[{fmt(low, 3)}, {fmt(high, 3)}]"
        line["connects better"] = r.get("connects_better_train") or "-"
        line["replicates × held-outs"] = f"{r.get('replicates', 1)} × {r['held_outs'] // max(1, r.get('replicates', 1))}"
        line[f"peak train loss {' / '.join(shorts)}"] = " / ".join(fmt(r.get(f"{s}_train_peak_loss"), 3) for s in shorts)
        if "paper_star_train_loss_barrier" in r:
            line["paper star / regular"] = f"{fmt(r['paper_star_train_loss_barrier'])} / {fmt(r.get('paper_regular_train_loss_barrier'))}"
        line["star is a solution"] = r["star_is_solution"] if r.get("replicates", 1) == 1 else r["stars_that_are_solutions"]
        line["star train loss"] = r["star_train_loss"]
        line["anchor train loss"] = r["anchor_train_loss"]
        if "soup" in shorts:
            line["soup train loss"] = r["soup_train_loss"]
        line[f"star test {score}"] = r["star_test_acc"]
        line[f"anchor test {score}"] = r["anchor_test_acc"]
        if "soup" in shorts:
            line[f"soup test {score}"] = r["soup_test_acc"]
        table.append(line)
    columns = list(table[0]) if table else []
    headers = [AXIS_LABELS.get(c, c) for c in columns]
    c = payload["computed"]
    axes, protocol = payload.get("protocol_axes") or {}, protocol_sentence(payload)
    train = ", ".join(f"{k}={v}" for k, v in payload["train"].items()) or "as the recipe"
    lines = [
        f"# Sweep `{payload['sweep']}`",
        "",
        payload["description"],
        "",
        f"Recipe `{payload['recipe']}` (overrides: {train}); star options: {payload['star'] or 'defaults'}; "
        f"barriers: {payload['barriers']['points']} points, BN calibration {payload['barriers'].get('bn_calibration')}. "
        + (f"Pairs aligned by {_aligned_by(payload['barriers'].get('align'))}. " if "align" not in axes else "")
        + (f"{protocol} " if protocol else "")
        + f"Loss ({'mean squared error' if payload.get('task') == 'regression' else 'cross-entropy'}) barrier = "
        "max over t of L((1−t)θA + tθB) − [(1−t)L(θA) + tL(θB)], floored at 0 (paper Eq. 1); "
        "cells are mean ± std over pairs (n pairs, pooled over replicates). Ratio = Σ star / Σ regular barriers, "
        "with a regular baseline per held-out (the mean of the star's anchors to it); with several replicates the ratio is "
        "the mean per-replicate ratio with a t-interval over replicates, with one a bootstrap over its held-outs "
        "(which speaks for that one anchor set only); \"connects better\" is worded from that CI (yes: below 1, "
        "no evidence: includes 1, no: above 1). A replicate is one anchor set, one star seed and its held-outs. Peak = mean over pairs of max_t L(t), the worst network on "
        "the segment: a center that is itself a poor model can have a low barrier and a high peak. "
        f"\"Star is a solution\": {REGRESSION_RULE if payload.get('task') == 'regression' else SOLUTION_RULE}.",
        "",
        markdown_table(table, columns, headers),
        "",
    ]
    if found:
        lines += ["Findings (computed from the table):", ""] + [f"- {f}" for f in found] + [""]
    if paper.get("note"):
        lines += [f"Paper reference numbers: {paper['note']}.", ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    lines += [
        "",
        f"This run computed {c['training_runs']} training run(s), {c['stars']} star(s), {c.get('soups', 0)} soup(s) and {c['barrier_pairs']} "
        f"barrier pair(s) in {payload['wall_seconds']:.0f} s on `{payload['device']}`; every pair is in `pairs.csv`.",
        "",
    ]
    return "\n".join(lines)
