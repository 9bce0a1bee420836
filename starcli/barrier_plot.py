"""The barrier figure: loss and accuracy against t, train solid and test dashed, star pairs against regular pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"star-held-out": "#d62728", "regular-held-out": "#7f7f7f", "pair": "#1f77b4"}
STYLES = {"train": "-", "test": "--"}


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Write `measure()`'s curves as a PNG with two panels (loss, accuracy); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
