"""`starlight barrier --matrix IDS`: the pairwise barrier matrix, the standard figure of mode-connectivity
work. Every pair (i < j) among the given solutions is measured through `barriers.measure(pairs=...)`, so
the pairs are stored as usual and a repeated matrix is answered from the registry; the matrix itself is a
square CSV (symmetric, zero diagonal: a solution has no barrier with itself) and a heatmap.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

from starcli.errors import UsageError
from starcli.solutions.barriers import measure

MATRIX_STEM = "barrier-matrix"


def matrix_pairs(ids: list[int]) -> list[tuple[int, int]]:
    """Every unordered pair of distinct ids, in the order given (the barrier is symmetric in a and b)."""
    if len(set(ids)) != len(ids):
        raise UsageError(f"--matrix lists a solution twice: {ids}")
    if len(ids) < 2:
        raise UsageError("--matrix needs at least two solution ids, e.g. --matrix 1-5")
    return list(combinations(ids, 2))


def square(ids: list[int], result: dict[str, Any], split: str, metric: str = "loss_barrier") -> list[list[float]]:
    """The ids × ids matrix of one barrier from measure()'s pairs; 0 on the diagonal."""
    index = {sid: k for k, sid in enumerate(ids)}
    out = [[0.0] * len(ids) for _ in ids]
    for p in result["pairs"]:
        i, j = index[p["a"]], index[p["b"]]
        out[i][j] = out[j][i] = p[split][metric]
    return out


def output_paths(out: str | Path, fmt: str = "png") -> tuple[Path, Path]:
    """`out` a .csv file: the figure beside it with the same stem; otherwise a folder for both."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        return out, out.with_suffix(f".{fmt}")
    return out / f"{MATRIX_STEM}.csv", out / f"{MATRIX_STEM}.{fmt}"


def write_square_csv(path: Path, ids: list[int], values: list[list[float]]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", *ids])
        for sid, row in zip(ids, values):
            w.writerow([sid, *(f"{v:.6g}" for v in row)])
    return path


def barrier_matrix(
    reg, ids: list[int], out: str | Path = ".", fmt: str | None = None, dpi: int | None = None, **options: Any
) -> dict[str, Any]:
    """Measure every pair among `ids` (options as `measure`'s), write the train loss barrier matrix as a
    CSV and a heatmap (test when train was not measured); returns measure()'s result with `matrix`."""
    from starcli.reports.figures import matrix_plot

    pairs = matrix_pairs(ids)
    result = measure(reg, pairs=pairs, **options)
    split = "train" if "train" in result["settings"]["splits"] else result["settings"]["splits"][0]
    values = square(ids, result, split)
    csv_path, fig_path = output_paths(out, fmt or "png")
    write_square_csv(csv_path, ids, values)
    fig_path = matrix_plot(fig_path, ids, values, f"{split} loss barrier", dpi=dpi)
    result["matrix"] = {"ids": ids, "split": split, "metric": "loss_barrier", "values": values,
                        "csv": str(csv_path), "figure": str(fig_path)}
    return result
