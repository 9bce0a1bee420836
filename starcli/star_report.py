"""`starlight report`: one markdown report with PNG figures about a star — its anchors, its own metrics,
its held-out barriers and curves, and how it compares with the aligned soup of its anchors and with
their deep ensemble (via star-domain BMA). The layout helpers live in reports.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .reports import bar_plot, curve_groups, curves_plot, markdown_table, mean_std, score_name, summary_stat


def write(
    reg,
    star_id: int,
    out: Path,
    held_out: list[int] | None = None,
    samples: int = 32,
    soup: bool = True,
    device: str = "auto",
    reporter=None,
) -> dict[str, Any]:
    """report.md + figures about one star: its anchors, own metrics, barrier summary and curves, and how
    it compares with the aligned soup of its anchors and with their deep ensemble (and BMA)."""
    from . import barriers, bma, data, solutions
    from . import soup as soups
    from .errors import StarlightError

    star = solutions.get_star(reg, star_id, "to report on")
    held = held_out or measured_held_outs(reg, star)
    if not held:
        raise StarlightError(f"no held-outs have been measured against star {star_id} yet; pass --held-out IDS")
    anchors = solutions.get_many(reg, star.anchors)
    settings = report_settings(reg, star)
    measured = barriers.measure(
        reg, star=star_id, held_out=held, baseline="anchors", device=device, reporter=reporter, **settings
    )
    classification = data.info(star.dataset).task == "classification"

    soup_part = None
    if soup:
        from .alignment import has_spec

        align = has_spec(star.arch, star.arch_kwargs)
        soup_sol, _ = soups.build_soup(reg, list(star.anchors), align=align, device=device, reporter=reporter)
        soup_measured = barriers.measure(
            reg, star=soup_sol.id, held_out=held, baseline="none", device=device, reporter=reporter, **settings
        )
        soup_part = {
            "solution": soup_sol,
            "aligned": align,
            "summary": soup_measured["summary"].get("star-held-out", {}),
            "pairs": [dict(p, kind="soup-held-out") for p in soup_measured["pairs"]],
        }
    bma_part = bma.run(reg, star_id, samples=samples, device=device, reporter=reporter) if classification else None

    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for split in ("train", "test"):
        groups = _pair_curves(measured["pairs"] + (soup_part["pairs"] if soup_part else []), star_id, split)
        if groups:
            figures.append(curves_plot(out / f"curves-{split}.png", groups["ts"], groups["groups"], f"{split} loss", f"{split} loss along the segments"))
    bars = _barrier_bars(measured["summary"], soup_part)
    if bars:
        figures.append(bar_plot(out / "barriers.png", ["train", "test"], bars, "loss barrier (mean ± std)", "held-out barriers by center"))
    text = _star_markdown(star, anchors, held, measured, soup_part, bma_part, figures, classification)
    (out / "report.md").write_text(text)
    payload = {
        "star": star_id,
        "anchors": list(star.anchors),
        "held_out": held,
        "summary": measured["summary"],
        "soup": {"id": soup_part["solution"].id, "aligned": soup_part["aligned"], "metrics": soup_part["solution"].metrics,
                 "summary": soup_part["summary"]} if soup_part else None,
        "bma": bma_part,
        "files": ["report.md"] + [f.name for f in figures],
    }
    (out / "report.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return payload | {"report": str(out / "report.md")}


def report_settings(reg, star) -> dict[str, Any]:
    """The barrier settings last used with this star (so the report reads the cache), else the paper's:
    11 points, train and test, full BatchNorm re-estimation, weight-matching alignment when possible."""
    from sqlmodel import select

    from registry import BarrierResult

    with reg.session() as s:
        row = s.exec(
            select(BarrierResult).where(BarrierResult.a_id == star.id).order_by(BarrierResult.id.desc())  # type: ignore[union-attr]
        ).first()
    if row is None:
        return {"align": "auto"}
    saved = row.settings
    return {"points": saved["points"], "splits": tuple(saved["splits"]), "bn_calibration": saved["bn_calibration"],
            "batch_size": saved["batch_size"], "align": saved["align"]}


def measured_held_outs(reg, star) -> list[int]:
    """Solutions whose barrier against the star is already cached, anchors excluded."""
    from sqlmodel import or_, select

    from registry import BarrierResult

    with reg.session() as s:
        rows = s.exec(select(BarrierResult).where(or_(BarrierResult.a_id == star.id, BarrierResult.b_id == star.id))).all()
    others = {r.b_id if r.a_id == star.id else r.a_id for r in rows}
    return sorted(others - set(star.anchors) - {star.id})


def _pair_curves(pairs, star_id: int, split: str) -> dict[str, Any] | None:
    cell = {"star": star_id, "pairs": pairs}
    return curve_groups([cell], split)


def _barrier_bars(summary, soup_part) -> dict[str, tuple[list, list]]:
    bars = {}
    for label, part in (("star–held-out", summary.get("star-held-out")), ("regular–held-out", summary.get("regular-held-out")),
                        ("soup–held-out", soup_part["summary"] if soup_part else None)):
        if part:
            stats = [summary_stat({"g": part}, "g", split, "loss_barrier") for split in ("train", "test")]
            bars[label] = ([s.get("mean") for s in stats], [s.get("std") for s in stats])
    return bars


def _star_markdown(star, anchors, held, measured, soup_part, bma_part, figures, classification: bool = True) -> str:
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
    lines += ["## Held-out barriers", "", "Loss barrier per paper Eq. 1 (per-t line, floored at 0); mean ± std over pairs.", ""]
    rows = []
    parts = [("star–held-out", summary.get("star-held-out")), ("regular–held-out (anchor × held-out)", summary.get("regular-held-out"))]
    if soup_part:
        parts.append(("soup–held-out", soup_part["summary"]))
    for label, part in parts:
        if not part:
            continue
        row = {"pairs": label}
        for split in ("train", "test"):
            for metric, short in (("loss_barrier", "loss"), ("acc_barrier", "acc")):
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
