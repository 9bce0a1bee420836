"""One look for every figure starlight draws: one colour per kind of center (star, regular, soup, plain
pair) in every figure, one x label for interpolation curves, legends outside the data, error bars that
respect the floor of a quantity at 0, log axes where values span decades, and the output format and
resolution the command asked for (`--format`, `--dpi`)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

# Okabe–Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
PALETTE = {
    "star": "#D55E00",  # vermillion
    "regular": "#0072B2",  # blue
    "soup": "#009E73",  # bluish green
    "pair": "#7F7F7F",  # grey: a pair that is neither
    "anchors": "#0072B2",  # the anchors are the regular solutions
}
OTHERS = ["#E69F00", "#56B4E9", "#CC79A7", "#F0E442", "#000000"]
SPLIT_STYLES = {"train": "-", "test": "--"}
T_LABEL = "interpolation coefficient t   (θ = (1−t)·θ_A + t·θ_B)"
FORMATS = ("png", "pdf", "svg")
FIGSIZE = (5.0, 3.4)

# format None: the suffix of the path decides (png when it names none of FORMATS).
_output: dict = {"format": None, "dpi": 150}


def colour(label: str, k: int = 0) -> str:
    """The colour of a series: by the center its label names (star-held-out, regular, soup, …), else the
    k-th of the remaining palette."""
    low = label.lower()
    for key in ("star", "soup", "regular", "anchors", "pair"):
        if low.startswith(key):
            return PALETTE[key]
    return OTHERS[k % len(OTHERS)]


@contextmanager
def output(fmt: str | None = None, dpi: int | None = None) -> Iterator[None]:
    """Figures saved inside this block use `fmt` (png, pdf, svg) and `dpi` (raster resolution)."""
    if fmt is not None and fmt not in FORMATS:
        from starcli.errors import UsageError

        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if dpi is not None and (not isinstance(dpi, int) or not 30 <= dpi <= 1200):
        from starcli.errors import UsageError

        raise UsageError(f"--dpi must be an integer between 30 and 1200, got {dpi!r}")
    saved = dict(_output)
    _output.update({k: v for k, v in (("format", fmt), ("dpi", dpi)) if v is not None})
    try:
        yield
    finally:
        _output.clear()
        _output.update(saved)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display, works on headless hosts
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
        "grid.linewidth": 0.6, "lines.linewidth": 1.6, "svg.fonttype": "none", "pdf.fonttype": 42,
    })
    return plt


def save(fig, path: str | Path, dpi: int | None = None) -> Path:
    """Save in the block's format (replacing the suffix of `path`; without one, the suffix decides) and
    close; returns the path written."""
    path = Path(path)
    fmt = _output["format"] or (path.suffix[1:].lower() if path.suffix[1:].lower() in FORMATS else "png")
    path = path.with_suffix("." + fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi or _output["dpi"], bbox_inches="tight", metadata=_metadata(fmt))
    pyplot().close(fig)
    return path


def current_format() -> str:
    return _output["format"] or "png"


def _metadata(fmt: str) -> dict:
    # No creation date in PDF/SVG, so a regenerated figure of the same data is the same file.
    return {"CreationDate": None} if fmt == "pdf" else ({"Date": None} if fmt == "svg" else {})


def legend_outside(ax, handles=None, title: str | None = None) -> None:
    """The legend to the right of the axes, never over the data."""
    kwargs = {"handles": handles} if handles is not None else {}
    if handles is None and not ax.get_legend_handles_labels()[0]:
        return
    ax.legend(**kwargs, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0.0, title=title)


def floored_yerr(means: Sequence[float], stds: Sequence[float | None]) -> list[list[float]]:
    """Asymmetric ±1 std error bars of a quantity floored at 0: the lower bar stops at 0."""
    lower = [min(s or 0.0, max(m, 0.0)) for m, s in zip(means, stds)]
    upper = [s or 0.0 for s in stds]
    return [lower, upper]


def spans_decades(values: Sequence[float], ratio: float = 10.0) -> bool:
    """A log axis is the readable one when all values are positive and the largest is ≥ `ratio` × the smallest."""
    vals = [v for v in values if v is not None]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) >= ratio


def mean_band(ax, ts: Sequence[float], curves: list[Sequence[float]], colour_: str, label: str, linestyle: str = "-"):
    """Thin individual curves, their mean thick and a ±1 std band: a group of curves in one glance."""
    import numpy as np

    arr = np.asarray(curves, dtype=float)
    for c in arr:
        ax.plot(ts, c, color=colour_, alpha=0.25, lw=0.6, ls=linestyle)
    mean = arr.mean(axis=0)
    if len(arr) > 1:
        std = arr.std(axis=0)
        ax.fill_between(ts, mean - std, mean + std, color=colour_, alpha=0.15, lw=0)
    return ax.plot(ts, mean, color=colour_, lw=1.8, ls=linestyle, label=f"{label} (n={len(arr)})")[0]


def chord(ax, ts: Sequence[float], curves: list[Sequence[float]], colour_: str, linestyle: str = ":") -> None:
    """The straight line between the mean endpoints: what the barrier (paper Eq. 1) is measured against."""
    n = len(curves)
    y0 = sum(c[0] for c in curves) / n
    y1 = sum(c[-1] for c in curves) / n
    ax.plot([ts[0], ts[-1]], [y0, y1], color=colour_, lw=0.9, ls=linestyle, alpha=0.9)


# Values below this fraction of the largest count as zero when an axis is scaled: a barrier of 5.8e-19 (a
# rounding residue) must not stretch a log axis over 20 decades and squeeze every real value into its top.
NEGLIGIBLE = 1e-4


def significant(values: Sequence[float | None], fraction: float = NEGLIGIBLE) -> list[float]:
    """The positive values that are not negligible next to the largest: what an axis' range is read from."""
    pos = [float(v) for v in values if v is not None and v == v and v > 0]
    if not pos:
        return []
    top = max(pos)
    return [v for v in pos if v >= fraction * top]


def decades_y(ax, values: Sequence[float], floor: float | None = 0.0) -> None:
    """A y axis that shows small and large values alike: symmetric-log (linear near 0, so a barrier of
    exactly 0 still has a place) when the positive values span more than 1.5 decades, else linear from
    `floor`."""
    import math

    pos = significant(values)
    if pos and max(pos) / min(pos) > 10**1.5:
        ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(min(pos))), linscale=0.5)
    if floor is not None:
        ax.set_ylim(bottom=floor)
