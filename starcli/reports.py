"""Writing results for people: tidy CSV, markdown tables and small PNG figures (matplotlib, Agg backend).

Nothing here computes a result; it only lays out numbers it is given. Figures are kept small (a few
tens of kB) so that report folders can be committed next to the README.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

FIGSIZE = (5.0, 3.4)
DPI = 110


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """A tidy CSV: one row per observation, one column per variable; missing values are empty cells."""
    columns = list(columns or _columns(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 4) -> str:
    """A number as people read it in a table: 4 significant digits, '-' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def mean_std(value: float | None, std: float | None, n: int | None = None) -> str:
    """'0.123 ± 0.045' (n shown when given): the form every barrier table uses."""
    if value is None:
        return "-"
    text = fmt(value, 3) if std is None or n == 1 else f"{fmt(value, 3)} ± {fmt(std, 2)}"
    return f"{text} (n={n})" if n is not None else text


def fit_line(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Least-squares fits of y on x: through the origin (y = a·x, the paper's 'star ≈ 0.30 × regular')
    and affine (y = a·x + b, its depth result), with the affine fit's R²."""
    import numpy as np

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


# --- figures ---------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display, works on headless hosts
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def line_plot(
    path: Path,
    x: Sequence[Any],
    series: dict[str, tuple[Sequence[float | None], Sequence[float | None]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
) -> Path:
    """One line with ±1 std error bars per series; a categorical x becomes evenly spaced ticks."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    numeric = all(isinstance(v, (int, float)) for v in x)
    xs = list(x) if numeric else list(range(len(x)))
    for label, (means, stds) in series.items():
        pts = [(xv, m, s or 0.0) for xv, m, s in zip(xs, means, stds) if m is not None]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label)
    if logx and numeric:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(xs, [str(v) for v in x])  # the grid's own values, not matplotlib's round numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def bar_plot(
    path: Path,
    categories: Sequence[str],
    series: dict[str, tuple[Sequence[float | None], Sequence[float | None]]],
    ylabel: str,
    title: str = "",
) -> Path:
    """Grouped bars with ±1 std error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    k = max(1, len(series))
    width = 0.8 / k
    for i, (label, (means, stds)) in enumerate(series.items()):
        pos = [j + (i - (k - 1) / 2) * width for j in range(len(categories))]
        yerr = [s or 0.0 for s in stds] if any(s is not None for s in stds) else None
        ax.bar(pos, [m or 0.0 for m in means], width, yerr=yerr, capsize=3, label=label)
    ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def scatter_fit(
    path: Path,
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[Any],
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> dict[str, float | None]:
    """Points labelled by their grid value, the y = x diagonal, and the least-squares line through the
    origin; returns the fit (see fit_line)."""
    plt = _pyplot()
    fit = fit_line(x, y)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.scatter(x, y, zorder=3)
    for xv, yv, lab in zip(x, y, labels):
        ax.annotate(str(lab), (xv, yv), textcoords="offset points", xytext=(4, 3), fontsize=7)
    top = max([*x, *y, 1e-9]) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="y = x")
    if fit["slope_origin"] is not None:
        ax.plot([0, top], [0, fit["slope_origin"] * top], color="C1", lw=1.2, label=f"y = {fit['slope_origin']:.2f}·x")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return fit


def curves_plot(
    path: Path,
    ts: Sequence[float],
    groups: dict[str, Iterable[Sequence[float]]],
    ylabel: str,
    title: str = "",
) -> Path:
    """Interpolation curves: every pair thin, each group's mean thick, one colour per group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for i, (label, curves) in enumerate(groups.items()):
        curves = [list(c) for c in curves]
        if not curves:
            continue
        for c in curves:
            ax.plot(ts, c, color=f"C{i}", alpha=0.25, lw=0.7)
        mean = [sum(vals) / len(vals) for vals in zip(*curves)]
        ax.plot(ts, mean, color=f"C{i}", lw=2, label=f"{label} (n={len(curves)})")
    ax.set_xlabel("t  (0: first model, 1: second)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --- helpers ---------------------------------------------------------------------------------------


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return repr(round(value, 8))
    return "" if value is None else value


# --- a sweep's report folder -------------------------------------------------------------------------

GROUPS = ("star-held-out", "regular-held-out", "soup-held-out")
LOG_AXES = ("width", "n_anchors")  # grids that double
# (pair kind, column prefix): the centers every summary compares.
CENTERS = (("star-held-out", "star"), ("regular-held-out", "regular"), ("soup-held-out", "soup"))
AXIS_LABELS = {"width": "width", "n_anchors": "anchors", "t_sampling": "t sampling", "star_seed": "star seed"}


def write_sweep(payload: dict[str, Any], out: Path, paper: dict[str, Any] | None = None) -> dict[str, Any]:
    """pairs.csv (every pair, tidy), summary.csv and summary.md (one row per star), figures, results.json."""
    out.mkdir(parents=True, exist_ok=True)
    cells, x = payload["cells"], payload["x"]
    splits = list(payload["barriers"]["splits"])
    pairs = [row for cell in cells for row in pair_rows(cell)]
    write_csv(out / "pairs.csv", pairs, PAIR_COLUMNS)
    rows = [summary_row(cell, splits) for cell in cells]
    _attach_paper(rows, paper or {})
    write_csv(out / "summary.csv", rows)
    for stale in out.glob("*.png"):
        # Figures of an earlier run of another grid would sit next to a report that no longer shows them.
        if stale.stem.startswith(FIGURE_STEMS):
            stale.unlink()
    figures = sweep_figures(cells, rows, x, splits, out)
    (out / "summary.md").write_text(sweep_markdown(payload, rows, figures, paper or {}))
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    files = ["pairs.csv", "summary.csv", "summary.md", "results.json"] + [f.name for f in figures]
    return {"rows": rows, "files": files}


FIGURE_STEMS = ("barrier-", "scatter-", "own-train-loss", "curves-")
PAIR_COLUMNS = [
    "width", "n_anchors", "t_sampling", "star_seed", "star", "group", "a", "b", "split", "loss_barrier", "acc_barrier",
]


def pair_rows(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (pair, split) of a sweep cell, labelled with the cell's grid values."""
    base = {k: cell[k] for k in ("width", "n_anchors", "t_sampling", "star_seed", "star")}
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


def summary_row(cell: dict[str, Any], splits: list[str]) -> dict[str, Any]:
    """A star's row: its grid values, own metrics, the anchors' mean metrics and barrier means ± std."""
    row: dict[str, Any] = {k: cell[k] for k in ("width", "n_anchors", "t_sampling", "star_seed", "star")}
    row["held_outs"] = len(cell["held_out"])
    soup = cell.get("soup")
    row["soup"] = soup["id"] if soup else None
    summary = dict(cell["summary"], **({"soup-held-out": soup["summary"]} if soup else {}))
    pairs = cell["pairs"] + (soup["pairs"] if soup else [])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        row[f"star_{key}"] = cell["star_metrics"].get(key)
        row[f"anchor_{key}"] = cell["anchor_metrics"].get(key)
        row[f"soup_{key}"] = soup["metrics"].get(key) if soup else None
    for split in splits:
        for metric in ("loss_barrier", "acc_barrier"):
            for group, short in CENTERS:
                stat = summary_stat(summary, group, split, metric)
                for field in ("mean", "std", "n"):
                    row[f"{short}_{split}_{metric}_{field}"] = stat.get(field)
        star, regular = row.get(f"star_{split}_loss_barrier_mean"), row.get(f"regular_{split}_loss_barrier_mean")
        row[f"ratio_{split}_loss_barrier"] = star / regular if star is not None and regular else None
        for group, short in CENTERS:
            row[f"{short}_{split}_peak_loss"] = peak_loss(pairs, group, split)
    return row


def peak_loss(pairs: list[dict[str, Any]], kind: str, split: str) -> float | None:
    """Mean over pairs of the highest loss on the segment, max_t L(t).

    The barrier is an excess over the line between the endpoints, so a center that is itself a poor
    model can have a low barrier on a segment that never gets as low as a regular one: the peak says
    how good the worst network on the segment is, whatever its endpoints."""
    peaks = [max(p[split]["loss"]) for p in pairs if p["kind"] == kind and split in p and p[split].get("loss")]
    return sum(peaks) / len(peaks) if peaks else None


def _attach_paper(rows: list[dict[str, Any]], paper: dict[str, Any]) -> None:
    """The paper's numbers, listed per cell in the sweep file's [paper] table, next to ours."""
    for key in ("star", "regular"):
        values = paper.get(key)
        if isinstance(values, list) and len(values) == len(rows):
            for row, value in zip(rows, values):
                row[f"paper_{key}_train_loss_barrier"] = value


def sweep_figures(cells, rows, x: str, splits: list[str], out: Path) -> list[Path]:
    figures = []
    xs = [r[x] for r in rows]
    numeric = all(isinstance(v, (int, float)) for v in xs) and len(set(xs)) == len(xs)
    label = AXIS_LABELS.get(x, x)
    for split in splits:
        series = {
            f"{short}–held-out": (
                [r[f"{short}_{split}_loss_barrier_mean"] for r in rows],
                [r[f"{short}_{split}_loss_barrier_std"] for r in rows],
            )
            for _, short in CENTERS
            if any(r[f"{short}_{split}_loss_barrier_mean"] is not None for r in rows)
        }
        path = out / f"barrier-{split}.png"
        title = f"{split} loss barrier (mean ± std over held-out pairs)"
        if numeric:
            figures.append(line_plot(path, xs, series, label, f"{split} loss barrier", title, logx=x in LOG_AXES))
        else:
            figures.append(bar_plot(path, [str(v) for v in xs], series, f"{split} loss barrier", title))
    pts = [(r["regular_train_loss_barrier_mean"], r["star_train_loss_barrier_mean"], r[x]) for r in rows]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if len(pts) >= 2 and x == "width":  # see findings(): the fit is the width study's
        path = out / "scatter-train.png"
        scatter_fit(
            path, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts],
            "regular–held-out train loss barrier", "star–held-out train loss barrier", f"one point per {label}",
        )
        figures.append(path)
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
            figures.append(bar_plot(path, [str(v) for v in xs], series, "train loss", title))
    curves = curve_groups(cells, "train")
    if curves:
        path = out / "curves-train.png"
        where = f"{label} {cells[-1][x]}, star {cells[-1]['star']}"
        figures.append(curves_plot(path, curves["ts"], curves["groups"], "train loss along the segment", f"train loss, every pair ({where})"))
    return figures


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


def findings(rows: list[dict[str, Any]], x: str, split: str = "train") -> list[str]:
    """Plain statements a reader can check against the table: no claim without its numbers."""
    star = [r.get(f"star_{split}_loss_barrier_mean") for r in rows]
    regular = [r.get(f"regular_{split}_loss_barrier_mean") for r in rows]
    valid = [(s, g, r) for s, g, r in zip(star, regular, rows) if s is not None and g is not None]
    if not valid:
        return []
    lines = []
    below = sum(s < g for s, g, _ in valid)
    lines.append(f"star–held-out below regular–held-out ({split} loss barrier) in {below} of {len(valid)} settings.")
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
        for name, values in (("star–held-out", [s for s, _, _ in valid]), ("regular–held-out", [g for _, g, _ in valid])):
            rho = _spearman(xs, values)
            trend = "falls" if rho <= -0.5 else "rises" if rho >= 0.5 else "shows no clear trend"
            lines.append(f"{name} barrier {trend} as {AXIS_LABELS.get(x, x)} grows (Spearman ρ = {rho:+.2f}).")
    return lines


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho) if rho == rho else 0.0


def score_name(task: str) -> str:
    """What the 'acc' numbers are: accuracy for classifiers, R² for regression (evaluation.evaluate)."""
    return "R² %" if task == "regression" else "acc %"


def sweep_markdown(payload: dict[str, Any], rows, figures: list[Path], paper: dict[str, Any]) -> str:
    x = payload["x"]
    splits = list(payload["barriers"]["splits"])
    grid_cols = [c for c in ("width", "n_anchors", "t_sampling", "star_seed") if c == x or len({r[c] for r in rows}) > 1]
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
        line[f"peak train loss {' / '.join(shorts)}"] = " / ".join(fmt(r.get(f"{s}_train_peak_loss"), 3) for s in shorts)
        if "paper_star_train_loss_barrier" in r:
            line["paper star / regular"] = f"{fmt(r['paper_star_train_loss_barrier'])} / {fmt(r.get('paper_regular_train_loss_barrier'))}"
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
    train = ", ".join(f"{k}={v}" for k, v in payload["train"].items()) or "as the recipe"
    lines = [
        f"# Sweep `{payload['sweep']}`",
        "",
        payload["description"],
        "",
        f"Recipe `{payload['recipe']}` (overrides: {train}); star options: {payload['star'] or 'defaults'}; "
        f"barriers: {payload['barriers']['points']} points, BN calibration {payload['barriers'].get('bn_calibration')}. "
        f"Pairs aligned by {'weight matching' if payload['barriers'].get('align') == 'weight' else 'nothing (raw weights)'}. "
        f"Loss ({'mean squared error' if payload.get('task') == 'regression' else 'cross-entropy'}) barrier = "
        "max over t of L((1−t)θA + tθB) − [(1−t)L(θA) + tL(θB)], floored at 0 (paper Eq. 1); "
        "cells are mean ± std over pairs (n pairs). Peak = mean over pairs of max_t L(t), the worst network on "
        "the segment: a center that is itself a poor model can have a low barrier and a high peak.",
        "",
        markdown_table(table, columns, headers),
        "",
    ]
    found = findings(rows, x)
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
