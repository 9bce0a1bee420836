"""Writing results for people: tidy CSV, markdown tables and small PNG figures (matplotlib, Agg backend).

Nothing here computes a result; it only lays out numbers it is given. Figures are kept small (a few
tens of kB) so that report folders can be committed next to the README.
"""

from __future__ import annotations

import csv
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
    return "\n".join(lines) + "\n"


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
        ax.set_xticks(xs, [str(v) for v in x])
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in x])
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
        ax.bar(pos, [m or 0.0 for m in means], width, yerr=[s or 0.0 for s in stds], capsize=3, label=label)
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
