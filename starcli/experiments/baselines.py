"""Baselines a star is compared with. The reviewers' question — would the aligned average of the same
anchors (the "soup") connect as well, without training? — is asked here once, for every caller: the
sweep, the star report and `starlight soup --held-out`.
"""

from __future__ import annotations

from typing import Any

from starcli.engine.barriers import REGULAR_PAIRS, STAR_PAIRS
from starcli.progress import Reporter
from starcli.registry import Registry
from starcli.solutions import records
from starcli.runners.options import LOCAL, RunOptions
from starcli.solutions.barriers import BarrierSpec, compute, finish, measure, plan_barriers
from starcli.solutions.soups import build_soup

SOUP_PAIRS = "soup-held-out"


def soup_center(
    reg: Registry,
    anchor_ids: list[int],
    held_out: list[int],
    align_soup: bool,
    bn_calibration: str | int = "full",
    baseline: str = "none",
    device: str = "auto",
    reporter: Reporter | None = None,
    run: RunOptions = LOCAL,
    pool=None,
    **barrier_options: Any,
) -> dict[str, Any]:
    """The soup of `anchor_ids` (aligned to the first when `align_soup`) as a center: built or found, then
    measured against `held_out` with the given barrier options. Its pairs are labelled soup-held-out;
    with baseline "anchors" the regular anchor-held-out summary comes along. Missing pairs are computed
    where `run` says, or on `pool` (a sweep's open local pool)."""
    sol, created = build_soup(
        reg, anchor_ids, align=align_soup, bn_calibration=bn_calibration, device=device, reporter=reporter
    )
    spec = BarrierSpec(star=sol.id, held_out=held_out, baseline=baseline, bn_calibration=bn_calibration, **barrier_options)
    plan = plan_barriers(reg, spec, reporter)
    computed = compute(reg, plan, run, device, reporter, pool)
    measured = finish(plan, computed)
    return {
        "solution": sol,
        "created": created,
        "aligned": align_soup,
        "settings": measured["settings"],
        "computed": len(computed),
        "summary": measured["summary"].get(STAR_PAIRS, {}),
        "regular": measured["summary"].get(REGULAR_PAIRS),
        "pairs": [dict(p, kind=SOUP_PAIRS) for p in measured["pairs"] if p["kind"] == STAR_PAIRS],
    }


def compare(
    reg: Registry,
    soup_id: int,
    held_out: list[int],
    star: int | None = None,
    align: str = "auto",
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """The soup's held-out barriers and own metrics next to the star's (when given) and the regular
    anchor-held-out baseline: one row per candidate center. With align "auto", pairs are weight-matched
    (the paper's protocol) wherever the architecture has a permutation spec."""
    soup_sol = records.get_star(reg, soup_id, "to compare")
    config = (soup_sol.config or {}).get("soup", {})
    soup = soup_center(
        reg, list(soup_sol.anchors), held_out, align_soup=config.get("align", True),
        bn_calibration=config.get("bn_calibration", "full"), baseline="anchors", align=align, device=device,
        reporter=reporter,
    )
    rows = [_row("soup", soup_sol, soup["summary"])]
    if star is not None:
        star_sol = records.get(reg, star)
        measured = measure(reg, star=star, held_out=held_out, baseline="none", align=align, device=device, reporter=reporter)
        rows.append(_row("star", star_sol, measured["summary"].get(STAR_PAIRS) or {}))
    if soup["regular"]:
        mean = records.anchor_mean_metrics(records.get_many(reg, soup_sol.anchors))
        rows.append(_row("regular (anchors)", None, soup["regular"], mean))
    return {"held_out": held_out, "align": soup["settings"]["align"], "columns": list(rows[0]), "rows": rows}


def _row(name: str, sol, summary: dict[str, Any], metrics: dict[str, float] | None = None) -> dict[str, Any]:
    metrics = metrics or (sol.metrics if sol is not None else {})
    row: dict[str, Any] = {"center": name, "id": sol.id if sol is not None else None}
    for split in ("train", "test"):
        stat = (summary.get(split) or {}).get("loss_barrier") or {}
        row[f"{split} loss barrier"] = stat.get("mean")
        row[f"{split} barrier std"] = stat.get("std")
    row["train loss"] = metrics.get("train_loss")
    row["test acc"] = metrics.get("test_acc")
    return row
