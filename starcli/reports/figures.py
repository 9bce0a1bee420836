"""Every figure starlight draws (matplotlib, Agg backend): the barrier figure of one measurement and the
line, bar, scatter and curve figures of reports. Figures are kept small (a few tens of kB) so that
report folders can be committed next to the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

COLOURS = {"star-held-out": "#d62728", "regular-held-out": "#7f7f7f", "pair": "#1f77b4"}
STYLES = {"train": "-", "test": "--"}


def check_plot_path(path: str | Path) -> Path:
    """Refuse a --plot path before any work: it must end in .png, must not be a folder, and its folder
    must be writable (probed with a temporary file, so a read-only mount or /proc is caught too)."""
    from starcli.errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--plot {path} is a folder; name a file such as {path / 'barriers.png'}")
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {path} must name a .png file (e.g. {path.with_suffix('.png').name})")
    check_writable_folder(path.parent, "--plot")
    return path


def check_writable_folder(folder: Path, flag: str) -> None:
    """The folder (or, when it does not exist yet, its nearest existing parent) accepts new files."""
    import os
    import tempfile

    from starcli.errors import UsageError

    folder = Path(os.path.abspath(folder))
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag}: {probe} is not a folder, so {folder} cannot be created")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UsageError(f"{flag}: cannot write into {probe} ({e.strerror or e}); choose another path") from None


def barrier_plot(result: dict[str, Any], path: str | Path) -> Path:
    """`measure()`'s curves as a PNG with two panels (loss, accuracy), train solid and test dashed, star
    pairs against regular pairs; returns the path."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    kinds, splits = [], []
    # Regular pairs first, so the star's curves are drawn on top.
    for pair in sorted(result["pairs"], key=lambda p: p["kind"] == "star-held-out"):
        kind = pair["kind"]
        kinds += [kind] if kind not in kinds else []
        for split in STYLES:
            if split not in pair:
                continue
            splits += [split] if split not in splits else []
            style = dict(color=COLOURS.get(kind, "#1f77b4"), linestyle=STYLES[split], alpha=0.75, linewidth=1.4)
            ax_loss.plot(pair["t"], pair[split]["loss"], **style)
            ax_acc.plot(pair["t"], pair[split]["acc"], **style)
    for ax, label in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("t   (weights (1−t)·θ_A + t·θ_B)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=COLOURS.get(k, "#1f77b4"), label=k) for k in kinds]
    handles += [Line2D([], [], color="black", linestyle=STYLES[s], label=s) for s in splits]
    ax_acc.legend(handles=handles, loc="best", fontsize=8)
    star = result.get("star")
    title = f"Interpolation curves — star {star} (A = star or anchor, B = held-out)" if star is not None else "Interpolation curves"
    if result.get("settings", {}).get("align") == "weight":
        title += ", B weight-matched to A"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


FIGSIZE = (5.0, 3.4)


DPI = 110


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
    slope_origin: float | None = None,
) -> Path:
    """Points labelled by their grid value, the y = x diagonal, and the least-squares line through the
    origin of slope `slope_origin` (fitted by the caller)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.scatter(x, y, zorder=3)
    for xv, yv, lab in zip(x, y, labels):
        ax.annotate(str(lab), (xv, yv), textcoords="offset points", xytext=(4, 3), fontsize=7)
    top = max([*x, *y, 1e-9]) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="y = x")
    if slope_origin is not None:
        ax.plot([0, top], [0, slope_origin * top], color="C1", lw=1.2, label=f"y = {slope_origin:.2f}·x")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


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
