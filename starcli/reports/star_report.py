"""The star report's markdown and figure data: laying out what starcli/experiments/star_report.py measured."""

from __future__ import annotations

import json
from typing import Any

from .barrier_text import evidence_lines, verdict_line
from .sweep_report import curve_groups, score_name, summary_stat
from .tables import markdown_table, mean_std


def pair_curves(pairs, star_id: int, split: str) -> dict[str, Any] | None:
    cell = {"star": star_id, "pairs": pairs}
    return curve_groups([cell], split)


def barrier_bars(summary, soup_part) -> dict[str, tuple[list, list]]:
    bars = {}
    for label, part in (("star-held-out", summary.get("star-held-out")), ("regular-held-out", summary.get("regular-held-out")),
                        ("soup-held-out", soup_part["summary"] if soup_part else None)):
        if part:
            stats = [summary_stat({"g": part}, "g", split, "loss_barrier") for split in ("train", "test")]
            bars[label] = ([s.get("mean") for s in stats], [s.get("std") for s in stats])
    return bars


def star_markdown(star, anchors, held, measured, soup_part, bma_part, figures, classification: bool = True) -> str:
    score = score_name("classification" if classification else "regression")
    summary = measured["summary"]
    cfg = (star.config or {}).get("star") or {}
    lines = [
        f"# Star {star.id}",
        "",
        f"`{star.arch}` (width {star.width}) on `{star.dataset}`, built from {len(anchors)} anchors"
        + (f" with {json.dumps(cfg)}" if cfg else "") + f"; tested on held-outs {', '.join(map(str, held))}.",
        "",
        "## The models' own metrics",
        "",
    ]
    own = [{"model": f"star {star.id}", **(star.metrics or {})}]
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    own.append({"model": "anchors (mean)", **{k: sum(a.metrics.get(k, 0) for a in anchors) / len(anchors) for k in keys}})
    if soup_part:
        own.append({"model": f"{'aligned' if soup_part['aligned'] else 'plain'} soup {soup_part['solution'].id}", **soup_part["solution"].metrics})
    lines += [markdown_table(own, ["model", *keys], ["model", "train loss", f"train {score}", "test loss", f"test {score}"]), ""]
    lines += [verdict_line(summary.get("verdict")), ""]
    lines += [line + "\n" for line in evidence_lines(summary.get("evidence"))]
    lines += [
        "## Held-out barriers", "",
        "Loss barrier per paper Eq. 1 (per-t line, floored at 0) and peak loss max_t L(t) along the segments; "
        "mean ± std over pairs.", "",
    ]
    rows = []
    parts = [("star-held-out", summary.get("star-held-out")), ("regular-held-out (anchor × held-out)", summary.get("regular-held-out"))]
    if soup_part:
        parts.append(("soup-held-out", soup_part["summary"]))
    for label, part in parts:
        if not part:
            continue
        row = {"pairs": label}
        for split in ("train", "test"):
            for metric, short in (("loss_barrier", "loss"), ("acc_barrier", "acc"), ("peak_loss", "peak loss")):
                stat = summary_stat({"g": part}, "g", split, metric)
                row[f"{split} {short}"] = mean_std(stat.get("mean"), stat.get("std"), stat.get("n"))
        rows.append(row)
    if rows:
        lines += [markdown_table(rows, list(rows[0])), ""]
    if bma_part:
        lines += [
            "## Star-domain BMA vs the deep ensemble",
            "",
            f"{bma_part['samples']} draws of (anchor, t ~ {bma_part['t_sampling']}) on the star's segments, softmax averaged; "
            f"{bma_part['split']} split; ECE with {bma_part['ece_bins']} bins; AUROC of the max-softmax confidence (correct vs wrong).",
            "",
        ]
        table = [{"predictor": k, **v} for k, v in bma_part["methods"].items()]
        lines += [markdown_table(table, ["predictor", "acc", "nll", "ece", "auroc"], ["predictor", "acc %", "NLL", "ECE %", "AUROC"]), ""]
    lines += ["## Anchors", ""]
    lines += [markdown_table([{"id": a.id, "seed": a.seed, **a.metrics} for a in anchors], ["id", "seed", *keys]), ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures] + [""]
    return "\n".join(lines)
