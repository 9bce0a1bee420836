"""sweep, soup, bma, report: the paper's experiments and the baselines it lacked, one command each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from starcli.errors import StarlightError, UsageError
from starcli.reports.tables import table_text

from . import app, common


@app.command()
@common.run_options
def sweep(
    name: Optional[str] = typer.Argument(None, help="A shipped sweep (e.g. width-mnist1d) or a sweep .toml file; omit to list them."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Report folder (default ./sweeps/NAME)."),
    device: str = common.DeviceOpt,
    data_dir: Optional[str] = common.DataDirOpt,
    download: bool = common.DownloadOpt,
    replicates: Optional[int] = typer.Option(
        None, "--replicates", "-r",
        help="Replicates per grid setting (overrides the file's [grid] replicates): each its own anchor and held-out "
        "seeds and star seed; the CIs pool them.",
    ),
    plan: bool = typer.Option(False, "--plan", help="Validate the file and print what a run needs; compute nothing."),
    force: bool = common.ForceOpt,
    log: Optional[str] = common.LogOpt,
    log_dir: Optional[str] = common.LogDirOpt,
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """Run a sweep: train missing solutions, build the stars, measure barriers, write CSV/markdown/PNG."""
    common.check_sweep_name(name)  # before torch: a typo is one line, with the nearest name
    from starcli.experiments import sweep_file

    if name is None:
        rows = [{"sweep": n, "description": sweep_file.description(n)} for n in sweep_file.available()]
        if json_:
            common.echo_json(rows)
        else:
            sys.stdout.write(table_text(rows, ["sweep", "description"], None))
        return
    from starcli.experiments import sweep as sweeps
    spec = sweep_file.load(name)
    if replicates is not None:
        spec = sweep_file.with_replicates(spec, replicates)
    if plan:
        info = spec.plan()
        reg = common.registry(create=False, read_only=True)  # none yet: everything is missing
        try:
            info["missing"] = sweeps.missing_work(reg, spec, device, run)
        finally:
            if reg is not None:
                reg.close()
        if json_:
            common.echo_json(info)
        else:
            for key, value in info.items():
                if key != "missing":
                    print(f"{key:>14}: {value}")
            print(f"{'missing':>14}: {_missing_line(info['missing'])}")
        return
    from starcli.reports import style

    folder = Path(out) if out else Path("sweeps") / spec.name
    common.check_out_folder(folder, force)
    common.device(device)
    reg = common.registry()
    tracking = common.tracking(reg, log, log_dir)
    rep = common.reporter()
    with style.output(fig_format, dpi), rep.live():
        result = sweeps.run(
            reg, spec, folder, device=device, data_dir=data_dir, download=download, run=run, reporter=rep,
            tracking=tracking,
        )
    if json_:
        common.echo_json({k: v for k, v in result.items() if k != "cells"})  # cells hold every curve: see results.json
        return
    sys.stdout.write((folder / "summary.md").read_text())
    c = result["computed"]
    print(
        f"\n{spec.name}: computed {c['training_runs']} training run(s), {c['stars']} star(s), {c['soups']} soup(s), "
        f"{c['barrier_pairs']} barrier pair(s) in {result['wall_seconds']:.0f}s; report in {folder}",
        file=sys.stderr,
    )


@app.command()
def soup(
    anchors: Optional[str] = typer.Option(None, "--anchors", "-a", help="Anchor ids to average, e.g. 1-5 (the first is the reference)."),
    star: Optional[int] = typer.Option(None, "--star", help="Average this star's anchors, and compare the soup with it."),
    held_out: Optional[str] = common.HeldOutOpt,
    align: str = typer.Option(
        "auto", "--align",
        help="auto (weight where the architecture has a spec) | weight | none: permute every anchor to the first before averaging.",
    ),
    bn_calibration: str = common.BnCalibrationOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Register the aligned average of anchors (kind soup): the star candidate the paper did not test."""
    from starcli.experiments.baselines import compare
    from starcli.selectors import check_id
    from starcli.solutions import records
    from starcli.solutions.soups import ALIGN_CHOICES, build_soup

    if (anchors is None) == (star is None):
        raise UsageError("give the anchors to average: --anchors 1-5, or --star S for that star's anchors")
    check_id(star, "--star")
    if align not in ALIGN_CHOICES:
        raise UsageError(f"--align must be one of {', '.join(ALIGN_CHOICES)}, got {align!r}")
    given = common.solution_ids(anchors, "anchor", unique=True) if anchors is not None else None
    held = common.solution_ids(held_out, "held-out", unique=True) if held_out else []
    calibration = _bn_calibration(bn_calibration)
    common.device(device)
    reg = common.registry(create=False)
    if reg is None:
        raise StarlightError("there is no registry here yet: train anchors first (`starlight train --seed 1-5`)")
    star_sol = records.get_star(reg, star, "to average") if star is not None else None
    anchor_ids = list(star_sol.anchors) if star_sol is not None else given
    both = sorted(set(anchor_ids) & set(held))
    if both:
        raise UsageError(f"--held-out {both[0]} is also averaged into the soup; held-out solutions must be other ones")
    records.get_many(reg, held)  # a missing held-out id fails before the soup is built and registered
    rep = common.reporter()
    with rep.live():
        sol, created = build_soup(reg, anchor_ids, align=align, bn_calibration=calibration, device=device, reporter=rep)
        comparison = compare(reg, sol.id, held, star=star, device=device, reporter=rep) if held else None
    rec = records.record(reg, sol)
    if json_:
        common.echo_json(rec | ({"comparison": comparison} if comparison else {}))
        return
    m = rec["metrics"]
    verb = "registered" if created else "already registered"
    print(
        f"{verb} the {'aligned' if sol.config['soup']['align'] else 'plain'} average of {len(anchor_ids)} anchors as solution {sol.id}: "
        f"train loss {m['train_loss']:.4f}, test acc {m['test_acc']:.1f}%"
    )
    if comparison:
        sys.stdout.write(table_text(comparison["rows"], comparison["columns"], None))


@app.command()
def bma(
    star: int = typer.Option(..., "--star", help="The star whose domain to average over."),
    samples: int = typer.Option(32, "--samples", "-n", help="Networks drawn on the star's segments."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the draws."),
    split: str = typer.Option("test", "--split", help="The one split to evaluate: test or train (--split is one split; --splits, as in barrier, a list)."),
    t_sampling: str = typer.Option("uniform", "--t-sampling", help="How t is drawn: uniform, beta:A,B or constant:T."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Bayesian model averaging over the star domain vs the deep ensemble of its anchors and the star alone."""
    from starcli.engine.starlight import TSampling
    from starcli.experiments import bma as engine
    from starcli.selectors import check_id, check_seed

    engine.check_samples(samples)
    check_id(star, "--star")
    check_seed(seed)
    if split not in ("train", "test"):
        raise UsageError(f"--split must be train or test, got {split!r}")
    TSampling.parse(t_sampling)  # a malformed scheme is a usage error before the registry is opened
    common.device(device)
    reg = common.registry(create=False)
    if reg is None:
        raise StarlightError(f"no solution with id {star}: there is no registry here yet")
    rep = common.reporter()
    with rep.live():
        result = engine.run(reg, star, samples=samples, seed=seed, split=split, t_sampling=t_sampling, device=device, reporter=rep)
    if json_:
        common.echo_json(result)
        return
    rows = [{"predictor": name, **m} for name, m in result["methods"].items()]
    print(f"star {star}: {len(result['anchors'])} anchors, {samples} BMA samples, {split} split")
    sys.stdout.write(table_text(rows, ["predictor", "acc", "nll", "ece", "auroc"], None))


@app.command()
def report(
    star: int = typer.Option(..., "--star", help="The star to report on."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for report.md and its figures."),
    held_out: Optional[str] = typer.Option(None, "--held-out", help="Held-out ids (default: those already measured with the star)."),
    samples: int = typer.Option(32, "--samples", "-n", help="BMA samples."),
    soup: bool = typer.Option(True, "--soup/--no-soup", help="Compare with the aligned average of the anchors."),
    force: bool = common.ForceOpt,
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """One markdown report about a star: anchors, own metrics, barriers and curves, soup and ensemble."""
    from starcli.experiments import bma, star_report
    from starcli.reports import style
    from starcli.selectors import check_id

    bma.check_samples(samples)
    check_id(star, "--star")
    held = common.solution_ids(held_out, "held-out", unique=True) if held_out else None
    common.check_out_folder(out, force)
    common.device(device)
    reg = common.registry(create=False)
    if reg is None:
        raise StarlightError(f"no solution with id {star}: there is no registry here yet")
    rep = common.reporter()
    with style.output(fig_format, dpi), rep.live():
        result = star_report.write(reg, star, Path(out), held_out=held, samples=samples, soup=soup, device=device, reporter=rep)
    if json_:
        common.echo_json(result)
    else:
        print(result["report"])


def _bn_calibration(text: str) -> str | int:
    if text == "full":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--bn-calibration must be full or a positive sample count, got {text!r}")
    return value


def _missing_line(missing: dict) -> str:
    """`sweep --plan`'s account of what a run would compute: nothing, or which runs, stars and pairs."""
    parts = []
    if missing["training_runs"]:
        widths = "; ".join(f"width {w}: seeds {_spans(s)}" for w, s in missing["training_seeds"].items())
        parts.append(f"{missing['training_runs']} training run(s) ({widths})")
    if missing["stars"]:
        parts.append(f"{missing['stars']} star(s)")
    if missing["barrier_pairs_of_built_stars"]:
        by_protocol = missing.get("barrier_pairs_by_protocol")  # a sweep with barrier-protocol axes
        per = f" ({'; '.join(f'{k}: {n}' for k, n in by_protocol.items() if n)})" if by_protocol else ""
        parts.append(f"{missing['barrier_pairs_of_built_stars']} barrier pair(s) of built stars{per}")
    return ", ".join(parts) or "nothing: every run, star and pair is registered"


def _spans(numbers: list[int]) -> str:
    """Sorted integers as the selector syntax writes them: 1-10,101-103."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and n == int(out[-1].rpartition("-")[2]) + 1:
            out[-1] = f"{out[-1].partition('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)
