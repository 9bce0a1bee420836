"""`starlight report`: one markdown report with PNG figures about a star — its anchors, its own metrics,
its held-out barriers and curves, and how it compares with the aligned soup of its anchors and with
their deep ensemble (via star-domain BMA). The markdown itself is laid out by starcli/reports/star_report.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starcli.alignment import has_spec
from starcli.engine import data
from starcli.errors import StarlightError
from starcli.progress import Reporter
from starcli.registry import Registry
from starcli.reports.figures import bar_plot, curves_plot
from starcli.reports.star_report import barrier_bars, pair_curves, star_markdown
from starcli.solutions import records
from starcli.solutions.barriers import measure, measured_held_outs, report_settings

from . import bma
from .baselines import soup_center


def write(
    reg: Registry,
    star_id: int,
    out: Path,
    held_out: list[int] | None = None,
    samples: int = 32,
    soup: bool = True,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """report.md + figures about one star: its anchors, own metrics, barrier summary and curves, and how
    it compares with the aligned soup of its anchors and with their deep ensemble (and BMA)."""
    bma.check_samples(samples)
    star = records.get_star(reg, star_id, "to report on")
    held = held_out or measured_held_outs(reg, star)
    if not held:
        raise StarlightError(f"no held-outs have been measured against star {star_id} yet; pass --held-out IDS")
    anchors = records.get_many(reg, star.anchors)
    settings = report_settings(reg, star)
    measured = measure(
        reg, star=star_id, held_out=held, baseline="anchors", device=device, reporter=reporter, **settings
    )
    classification = data.info(star.dataset).task == "classification"

    soup_part = None
    if soup:
        soup_part = soup_center(
            reg, list(star.anchors), held, align_soup=has_spec(star.arch, star.arch_kwargs), device=device,
            reporter=reporter, **settings,
        )
    bma_part = bma.run(reg, star_id, samples=samples, device=device, reporter=reporter) if classification else None

    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for split in ("train", "test"):
        groups = pair_curves(measured["pairs"] + (soup_part["pairs"] if soup_part else []), star_id, split)
        if groups:
            figures.append(curves_plot(out / f"curves-{split}.png", groups["ts"], groups["groups"], f"{split} loss", f"{split} loss along the segments"))
    bars = barrier_bars(measured["summary"], soup_part)
    if bars:
        figures.append(bar_plot(out / "barriers.png", ["train", "test"], bars, "loss barrier (mean ± std)", "held-out barriers by center"))
    text = star_markdown(star, anchors, held, measured, soup_part, bma_part, figures, classification)
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


