"""The barrier report a person reads: every pair, the summary per kind of pair and split, the star's own
metrics beside its anchors', and the definitions of what was measured."""

from __future__ import annotations

from typing import Any

from starcli.engine.barriers import STAR_PAIRS, definitions

from .tables import table_text

PAIR_COLUMNS = [
    "a", "b", "kind", "train_loss_barrier", "train_acc_barrier", "test_loss_barrier", "test_acc_barrier",
    "train_peak_loss", "test_peak_loss", "star_is_solution",
]
NOT_PAIR_KINDS = ("ratio", "star_metrics", "anchor_metrics", "verdict")


SUMMARY_COLUMNS = ["pairs", "split", "loss barrier", "acc barrier (pp)", "peak loss", "n"]


def pair_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pair: its barriers and peak loss per split, and the star's verdict on star pairs."""
    star_is_solution = (result["summary"].get("verdict") or {}).get("star_is_solution")
    rows = []
    for p in result["pairs"]:
        row = {"a": p["a"], "b": p["b"], "kind": p["kind"]}
        for split in ("train", "test"):
            if split in p:
                row[f"{split}_loss_barrier"] = p[split]["loss_barrier"]
                row[f"{split}_acc_barrier"] = p[split]["acc_barrier"]
                row[f"{split}_peak_loss"] = max(p[split]["loss"])
        if p["kind"] == STAR_PAIRS and star_is_solution is not None:
            row["star_is_solution"] = star_is_solution
        rows.append(row)
    return rows


def human_report(result: dict[str, Any]) -> str:
    summary, settings = result["summary"], result["settings"]
    parts = [table_text(pair_rows(result), PAIR_COLUMNS, None, title="pairs")]
    rows = []
    for kind, by_split in summary.items():
        if kind in NOT_PAIR_KINDS:
            continue
        for split, stats in by_split.items():
            lb, ab, peak = stats["loss_barrier"], stats["acc_barrier"], stats.get("peak_loss")
            rows.append(
                {
                    "pairs": kind,
                    "split": split,
                    "loss barrier": f"{lb['mean']:.4f} ± {lb['std']:.4f}",
                    "acc barrier (pp)": f"{ab['mean']:.2f} ± {ab['std']:.2f}",
                    "peak loss": f"{peak['mean']:.4f} ± {peak['std']:.4f}" if peak else "-",
                    "n": lb["n"],
                }
            )
    for split, ratio in (summary.get("ratio") or {}).items():
        fmt = lambda r: "-" if r is None else f"{r:.3f}"  # noqa: E731
        rows.append({"pairs": "ratio star/regular", "split": split, "loss barrier": fmt(ratio["loss_barrier"]),
                     "acc barrier (pp)": fmt(ratio["acc_barrier"]), "n": None})
    parts.append(table_text(rows, SUMMARY_COLUMNS, None, title="summary (mean ± std over pairs)"))
    if summary.get("star_metrics"):
        lines = [_metrics_line(f"star {result['star']} itself", summary["star_metrics"])]
        if summary.get("anchor_metrics"):
            lines.append(_metrics_line("anchors' mean", summary["anchor_metrics"]))
        lines.append(verdict_line(summary.get("verdict")))
        parts.append("\n".join(lines))
    parts.append(definitions(settings))
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _metrics_line(label: str, m: dict[str, float]) -> str:
    nan = float("nan")
    return (
        f"{label:>16}: train loss {m.get('train_loss', nan):.4f}, train acc {m.get('train_acc', nan):.2f}%, "
        f"test loss {m.get('test_loss', nan):.4f}, test acc {m.get('test_acc', nan):.2f}%"
    )


def verdict_line(verdict: dict[str, Any] | None) -> str:
    """The plain sentence under every star's barriers: is the star itself a solution?"""
    if not verdict or verdict.get("star_is_solution") is None:
        return "A small barrier only counts if the star is itself a good solution: its train loss is unknown here."
    ratio = verdict["loss_ratio"]
    times = f"{ratio:.2f}× the anchors'" if ratio is not None else "compared with the anchors'"
    if verdict["star_is_solution"]:
        return f"verdict: the star is a solution (train loss {times}; rule: {verdict['rule']})."
    return (
        f"WARNING: the star is NOT a solution (train loss {times}; rule: {verdict['rule']}); part of a small "
        "barrier is then its own high loss at t = 0, not connectivity. Train it longer or with its own loss (--mu-star)."
    )
