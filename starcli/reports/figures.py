"""Every figure starlight draws (matplotlib, Agg backend), all in the look of starcli/reports/style.py:
the barrier figure of one measurement, the pairwise barrier matrix, and the line, bar, scatter and
curve figures of reports. Titles say what is plotted, never registry ids (the caption or report does).
Figures are kept small (a few tens of kB) so that report folders can be committed next to the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from . import style


def check_plot_path(path: str | Path) -> Path:
    """Refuse a --plot path before any work: it must end in .png, .pdf or .svg, must not be a folder, and its
    folder must be writable (probed with a temporary file, so a read-only mount or /proc is caught too)."""
    from starcli.errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--plot {path} is a folder; name a file such as {path / 'barriers.png'}")
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--plot {path} must name a .png file, or .pdf or .svg (e.g. {path.with_suffix('.png').name})")
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


# Kept for callers that imported them: the palette now lives in style.py.
COLOURS = {"star-held-out": style.PALETTE["star"], "regular-held-out": style.PALETTE["regular"], "pair": style.PALETTE["pair"]}
STYLES = style.SPLIT_STYLES
FIGSIZE = style.FIGSIZE


def _pyplot():
    return style.pyplot()


def barrier_plot(result: dict[str, Any], path: str | Path) -> Path:
    """`measure()`'s curves in two panels (loss, accuracy): per kind of pair the mean ± std band over its
    pairs with each pair thin, train solid and test dashed, and (loss panel) the chord between the mean
    endpoints that the barrier is measured against; returns the path written."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    groups: dict[tuple[str, str], list] = {}
    ts = None
    for pair in result["pairs"]:
        ts = pair["t"]
        for split in STYLES:
            if split in pair:
                groups.setdefault((pair["kind"], split), []).append(pair)
    # Regular pairs first, so the star's curves are drawn on top.
    order = sorted(groups, key=lambda ks: (ks[0] == "star-held-out", ks[1]))
    kinds = list(dict.fromkeys(k for k, _ in order))
    for kind, split in order:
        c = style.colour(kind)
        loss = [p[split]["loss"] for p in groups[(kind, split)]]
        acc = [p[split]["acc"] for p in groups[(kind, split)]]
        style.mean_band(ax_loss, ts, loss, c, kind, STYLES[split])
        style.chord(ax_loss, ts, loss, c)
        style.mean_band(ax_acc, ts, acc, c, kind, STYLES[split])
    for ax, label in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel(style.T_LABEL)
        ax.set_ylabel(label)
        ax.set_xlim(0, 1)
    ax_loss.set_title("loss along the segment")
    ax_acc.set_title("accuracy along the segment")
    kinds.sort(key=lambda k: k != "star-held-out")  # the legend names the star first
    n = {k: len(groups.get((k, "train"), groups.get((k, "test"), []))) for k in kinds}
    handles = [Line2D([], [], color=style.colour(k), lw=1.8, label=f"{k} (n={n[k]})") for k in kinds]
    splits = [s for s in STYLES if any(split == s for _, split in order)]
    handles += [Line2D([], [], color="black", linestyle=STYLES[s], lw=1.2, label=s) for s in splits]
    handles += [Line2D([], [], color="black", linestyle=":", lw=0.9, label="chord (Eq. 1)")]
    style.legend_outside(ax_acc, handles=handles)
    fig.tight_layout()
    return style.save(fig, path)


def matrix_plot(path: str | Path, ids: Sequence[int], values: Sequence[Sequence[float]], label: str,
                dpi: int | None = None) -> Path:
    """The pairwise barrier matrix as a heatmap: solution ids on both axes, every cell annotated."""
    import numpy as np

    plt = _pyplot()
    arr = np.asarray(values, dtype=float)
    n = len(ids)
    # The diagonal (a solution with itself, 0 by definition) is masked, so the colour scale is spent on pairs.
    diagonal = np.eye(n, dtype=bool)
    shown = np.ma.masked_array(arr, mask=diagonal)
    off = arr[~diagonal]
    top = float(off.max()) if off.size else 0.0
    side = max(3.2, 0.55 * n + 1.6)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.92")
    im = ax.imshow(shown, cmap=cmap, vmin=float(off.min()) if off.size else 0.0, vmax=max(top, 1e-12))
    ax.grid(False)
    ax.set_xticks(range(n), [str(i) for i in ids])
    ax.set_yticks(range(n), [str(i) for i in ids])
    ax.set_xlabel("solution")
    ax.set_ylabel("solution")
    for s in ax.spines.values():
        s.set_visible(False)
    if n <= 20:  # beyond that the numbers no longer fit their cells; the CSV has them
        low = float(off.min()) if off.size else 0.0
        for i in range(n):
            for j in range(n):
                v = arr[i, j]
                text = "–" if i == j else f"{v:.2f}" if v < 10 else f"{v:.3g}"
                light = i != j and v < low + 0.6 * ((top - low) or 1.0)
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if n > 10 else 8, color="white" if light else "black")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label(label)
    fig.tight_layout()
    return style.save(fig, path, dpi=dpi)


def history_plot(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """A training history (`starlight history`): the train loss per epoch and, beside it where the rows have
    it, the train accuracy; epochs without a value (rows stored before accuracy was kept) are gaps."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    panels = [("train_loss", "train loss (epoch mean)")]
    if any(r.get("train_acc") is not None for r in rows):
        panels.append(("train_acc", "train accuracy (%)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(FIGSIZE[0] * len(panels), FIGSIZE[1]), squeeze=False)
    for k, (ax, (key, label)) in enumerate(zip(axes[0], panels)):
        values = [float("nan") if r.get(key) is None else r[key] for r in rows]
        ax.plot(epochs, values, marker="o", ms=3.5, lw=1.4, color=style.colour(key, k))
        if key == "train_loss":
            style.decades_y(ax, values, floor=None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    return _save(fig, Path(path))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return style.save(fig, path)


def line_plot(
    path: Path,
    x: Sequence[Any],
    series: dict[str, tuple[Sequence[float | None], Sequence[float | None]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    floor: float | None = 0.0,
) -> Path:
    """One line with ±1 std error bars per series (clipped at `floor`, the least value the quantity takes);
    a categorical x becomes evenly spaced ticks; `logx` (or x spanning decades) gives a log2 axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    numeric = all(isinstance(v, (int, float)) for v in x)
    xs = list(x) if numeric else list(range(len(x)))
    log_x = numeric and (logx or style.spans_decades(xs, 8))
    n = len(series)
    every = []
    for k, (label, (means, stds)) in enumerate(series.items()):
        pts = [(xv, m, s) for xv, m, s in zip(xs, means, stds) if m is not None]
        if not pts:
            continue
        # Series side by side, a few percent apart, so that their error bars do not hide one another.
        shift = (k - (n - 1) / 2) * 0.05
        px = [p[0] * 2**shift if log_x else p[0] + shift * _step(xs) for p in pts]
        pm, ps = [p[1] for p in pts], [p[2] for p in pts]
        every += pm
        yerr = None
        if any(s is not None for s in ps):
            yerr = style.floored_yerr([m - floor for m in pm], ps) if floor is not None else [[s or 0 for s in ps]] * 2
        ax.errorbar(px, pm, yerr=yerr, marker="o", ms=4, capsize=2.5, lw=1.4, elinewidth=0.9,
                    color=style.colour(label, k), label=label)
    if log_x:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(xs, [str(v) for v in x])  # the grid's own values, not matplotlib's round numbers
    style.decades_y(ax, every, floor)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    style.legend_outside(ax)
    return _save(fig, path)


def _step(xs: Sequence[float]) -> float:
    gaps = [b - a for a, b in zip(sorted(xs), sorted(xs)[1:]) if b > a]
    return min(gaps) if gaps else 1.0


def bar_plot(
    path: Path,
    categories: Sequence[str],
    series: dict[str, tuple[Sequence[float | None], Sequence[float | None]]],
    ylabel: str,
    title: str = "",
    floor: float | None = 0.0,
) -> Path:
    """Grouped bars with ±1 std error bars, the lower bar clipped at `floor`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    k = max(1, len(series))
    width = 0.8 / k
    for i, (label, (means, stds)) in enumerate(series.items()):
        pos = [j + (i - (k - 1) / 2) * width for j in range(len(categories))]
        ms = [m or 0.0 for m in means]
        yerr = None
        if any(s is not None for s in stds):
            yerr = style.floored_yerr([m - (floor or 0.0) for m in ms], stds) if floor is not None else [[s or 0 for s in stds]] * 2
        ax.bar(pos, ms, width, yerr=yerr, capsize=2.5, color=style.colour(label, i), label=label,
               error_kw={"elinewidth": 0.9})
    ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    ax.set_ylabel(ylabel)
    ax.grid(False, axis="x")
    if title:
        ax.set_title(title)
    style.legend_outside(ax)
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
    """Points labelled by their grid value (labels moved apart so none overlaps another), the y = x
    diagonal, and the least-squares line through the origin of slope `slope_origin` (fitted by the
    caller); both axes symmetric-log when the values span decades, so that small values stay apart."""
    import math

    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    top = max([*x, *y, 1e-9]) * 1.12
    pos = style.significant([*x, *y])
    if pos and max(pos) / min(pos) > 10**1.5:
        lin = 10 ** math.floor(math.log10(min(pos)))
        ax.set_xscale("symlog", linthresh=lin, linscale=0.5)
        ax.set_yscale("symlog", linthresh=lin, linscale=0.5)
        top = max([*x, *y]) * 1.6
    line = np.concatenate([[0.0], np.geomspace(max(min(pos or [1e-9]) / 10, 1e-12), top, 200)])
    ax.plot(line, line, color="0.4", lw=0.8, ls=":", label="y = x")
    if slope_origin is not None:
        ax.plot(line, slope_origin * line, color="0.15", lw=1.1, label=f"y = {slope_origin:.2f}·x")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.scatter(x, y, zorder=3, s=22, color=style.PALETTE["star"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    for (xv, yv, lab), dy in zip(zip(x, y, labels), _label_offsets(ax, x, y)):
        ax.annotate(str(lab), (xv, yv), textcoords="offset points", xytext=(5, dy), fontsize=7, va="center",
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if abs(dy) > 6 else None)
    style.legend_outside(ax)
    return _save(fig, path)


def _label_offsets(ax, x: Sequence[float], y: Sequence[float]) -> list[float]:
    """Vertical offsets in points for point labels placed to the right: moved up or down in 9-point steps
    until no label is within a label's size of one placed before (positions from the axes' own transform,
    so log axes count as drawn)."""
    scale = 72.0 / ax.figure.dpi
    disp = ax.transData.transform(list(zip(x, y))) * scale
    placed: list[tuple[float, float]] = []
    offsets = [0.0] * len(x)
    for k in sorted(range(len(x)), key=lambda i: disp[i][1]):
        px, py = disp[k]
        for dy in (0, 9, -9, 18, -18, 27, -27, 36, 45, 54):
            cand = (px + 5, py + dy)
            if all(abs(cand[0] - qx) > 20 or abs(cand[1] - qy) > 8.5 for qx, qy in placed):
                break
        placed.append(cand)
        offsets[k] = dy
    return offsets


def curves_plot(
    path: Path,
    ts: Sequence[float],
    groups: dict[str, Iterable[Sequence[float]]],
    ylabel: str,
    title: str = "",
) -> Path:
    """Interpolation curves: per group every pair thin, the mean thick with a ±1 std band, and the chord
    between the mean endpoints (what the barrier is measured against); one colour per center."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for i, (label, curves) in enumerate(groups.items()):
        curves = [list(c) for c in curves]
        if not curves:
            continue
        c = style.colour(label, i)
        style.mean_band(ax, ts, curves, c, label)
        style.chord(ax, ts, curves, c)
    ax.set_xlabel(style.T_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    if title:
        ax.set_title(title)
    style.legend_outside(ax)
    return _save(fig, path)


def sharpness_plot(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Sharpness per solution (`starlight sharpness --plot`): the top-k Hessian eigenvalues (the largest
    filled, the others hollow) and Hutchinson's trace with its 95% t-interval, coloured by kind."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.5, FIGSIZE[1]))
    labels = [f"{r.get('solution_kind', '')} {r['subject']}".strip() for r in rows]
    for j, (row, label) in enumerate(zip(rows, labels)):
        c = style.colour(_kind_key(row.get("solution_kind", "pair")), j)
        values = row["result"]["eigenvalues"]
        left.scatter([j], values[:1], color=c, s=36, zorder=3)
        if len(values) > 1:
            left.scatter([j] * (len(values) - 1), values[1:], facecolors="none", edgecolors=c, s=22, zorder=3)
        trace = row["result"].get("trace")
        if trace is not None:
            lo, hi = trace["ci95"]
            right.errorbar([j], [trace["mean"]], yerr=[[trace["mean"] - lo], [hi - trace["mean"]]], fmt="o", color=c,
                           capsize=3, elinewidth=0.9)
    for ax, title in ((left, "top Hessian eigenvalues"), (right, "Hessian trace (Hutchinson, 95% CI)")):
        ax.set_xticks(range(len(rows)), labels, rotation=30 if len(rows) > 4 else 0)
        ax.set_title(title, fontsize="medium")
        ax.grid(False, axis="x")
    settings = rows[0]["settings"] if rows else {}
    left.set_ylabel(f"eigenvalue (train loss, {settings.get('subset', '?')} samples)")
    return _save(fig, Path(path))


def plane_plot(path: str | Path, record: dict[str, Any], split: str = "train", kinds: dict[str, str] | None = None) -> Path:
    """A stored plane (`starlight plane --plot`): filled contours of the loss on `split` (log-spaced
    levels: a landscape spans decades), the solutions marked and named, and for a plane through three
    the segments between them (the lines a barrier measures) dashed."""
    import math

    plt = _pyplot()
    res = record["result"]
    xs, ys = res["x"], res["y"]
    loss = [[max(v, 1e-12) for v in row] for row in res["grid"][split]["loss"]]
    lo, hi = min(min(r) for r in loss), max(max(r) for r in loss)
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], FIGSIZE[0] * 0.85))
    if hi / lo > 1.0001:
        levels = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / 16) for i in range(17)]
        from matplotlib.colors import LogNorm

        filled = ax.contourf(xs, ys, loss, levels=levels, norm=LogNorm(lo, hi), cmap="viridis")
        ax.contour(xs, ys, loss, levels=levels[::2], colors="white", linewidths=0.4, alpha=0.6)
        fig.colorbar(filled, ax=ax, label=f"{split} loss (log scale)", format="%.3g")
    marks = res["marks"]
    names = list(marks)
    if len(names) == 3:
        for a, b in ((0, 1), (0, 2), (1, 2)):
            (x0, y0), (x1, y1) = marks[names[a]], marks[names[b]]
            ax.plot([x0, x1], [y0, y1], linestyle="--", color="white", linewidth=1.0)
    for k, name in enumerate(names):
        kind = (kinds or {}).get(name, "pair")
        x, y = marks[name]
        ax.scatter([x], [y], s=46, color=style.colour(_kind_key(kind), k), edgecolors="white", linewidths=1.0, zorder=3)
        right = x > (min(res["x"]) + max(res["x"])) / 2  # labels point inwards, never off the axes
        ax.annotate(f"{kind} {name}" if kinds else name, (x, y), textcoords="offset points", xytext=(-5 if right else 5, 5),
                    ha="right" if right else "left", color="white", fontsize="small")
    st = record["settings"]
    if st["basis"] == "random":
        ax.set_xlabel("direction 1 (filter-normalised)" if st.get("filter_normalised") else "direction 1")
        ax.set_ylabel("direction 2")
    else:
        ax.set_xlabel("distance along θ_B − θ_A")
        ax.set_ylabel("distance orthogonal, towards θ_C")
        ax.set_aspect("equal", adjustable="box")
    ax.locator_params(nbins=6)
    ax.grid(False)
    return _save(fig, Path(path))


def _kind_key(kind: str) -> str:
    """A solution's kind as the palette names it: every anchor in the anchors' colour."""
    return "anchors" if kind == "anchor" else kind


def bent_path_plot(path: str | Path, record: dict[str, Any]) -> Path:
    """A stored curve (`starlight curve --plot`): the loss along the trained path and along the straight
    line between the same two solutions, per split (train solid, test dashed)."""
    plt = _pyplot()
    res, st = record["result"], record["settings"]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for k, (name, label) in enumerate((("line", "straight line"), ("curve", f"{st['bend']} curve"))):
        for split in st["splits"]:
            ax.plot(res["t"], res[name][split]["loss"], linestyle=style.SPLIT_STYLES[split],
                    color=style.OTHERS[k] if name == "curve" else style.PALETTE["pair"], label=f"{label}, {split}")
    ax.set_xlabel("t along the path (0: A, 1: B)")
    ax.set_ylabel("loss")
    style.legend_outside(ax)
    return _save(fig, Path(path))


def sharpness_along_plot(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Sharpness along segments (`starlight sharpness S --along H --plot`): λ_max and the trace (95% CI)
    against t, one line per segment."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.5, FIGSIZE[1]))
    for k, row in enumerate(rows):
        ts, pts = row["result"]["t"], row["result"]["points"]
        c = style.colour(row.get("solution_kind", "pair"), k)
        left.plot(ts, [p["eigenvalues"][0] for p in pts], marker="o", color=c, label=row["subject"])
        if all("trace" in p for p in pts):
            means = [p["trace"]["mean"] for p in pts]
            right.errorbar(ts, means, yerr=[[m - p["trace"]["ci95"][0] for m, p in zip(means, pts)],
                                            [p["trace"]["ci95"][1] - m for m, p in zip(means, pts)]],
                           marker="o", color=c, capsize=3, label=row["subject"])
    left.set_title("top Hessian eigenvalue", fontsize="medium")
    right.set_title("Hessian trace (Hutchinson, 95% CI)", fontsize="medium")
    for ax in (left, right):
        ax.set_xlabel("t on the segment")
    style.legend_outside(right)
    return _save(fig, Path(path))
