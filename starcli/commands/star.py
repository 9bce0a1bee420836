"""star, barrier, demo."""

from __future__ import annotations

import sys
import time
from typing import Optional, Tuple

import typer

from starcli.reports.barrier_text import PAIR_COLUMNS, human_report, pair_rows
from starcli.reports.tables import table_text

from starcli.errors import UsageError

from . import app, common


@app.command()
def star(
    anchors: str = typer.Option(..., "--anchors", "-a", help="Anchor ids: 1-5, 1,3,7."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: the anchors' recipe."),
    t_sampling: str = typer.Option("uniform", "--t-sampling", help="uniform | beta:A,B | constant:T"),
    samples_per_step: int = typer.Option(1, "--samples-per-step", help="Anchor/t draws averaged per batch."),
    mu_star: float = typer.Option(0.0, "--mu-star", help="Weight M of the star's own loss: (L_interp + M·L_star)/(1+M)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the star's initialisation and draws."),
    align_anchors: bool = typer.Option(
        False, "--align-anchors", help="Re-permute every anchor to the star at each epoch start (weight matching)."
    ),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Build a star model from anchors with the Starlight algorithm and register it (kind star)."""
    from starcli.solutions import records
    from starcli.solutions.stars import build_star

    from starcli.engine.starlight import TSampling
    from starcli.selectors import check_finite, check_int, check_seed

    anchor_ids = common.ids(anchors, "anchor id", unique=True)
    if len(anchor_ids) < 2:
        raise UsageError(f"a star needs at least 2 anchors, got --anchors {anchors}")
    check_seed(seed)
    check_finite(mu_star, "--mu-star")
    check_int(epochs, "--epochs", 1, 100_000)
    check_int(samples_per_step, "--samples-per-step", 1, 1_000)
    TSampling.parse(t_sampling)
    common.device(device)
    reg = common.registry()
    rep = common.reporter()
    with rep.live():
        sol, created = build_star(
            reg, anchor_ids, epochs=epochs, t_sampling=t_sampling, samples_per_step=samples_per_step,
            mu_star=mu_star, seed=seed, device=device, reporter=rep, align_anchors=align_anchors,
        )
    rec = records.record(reg, sol)
    if json_:
        common.echo_json(rec)
        return
    m = rec["metrics"]
    verb = "built" if created else "already registered:"
    print(
        f"{verb} star {sol.id} from anchors {','.join(map(str, rec['anchors']))}: "
        f"train loss {m['train_loss']:.4f}, train acc {m['train_acc']:.1f}%, test acc {m['test_acc']:.1f}%"
    )


@app.command()
def barrier(
    star: Optional[int] = typer.Option(None, "--star", help="Star id: measure it against --held-out."),
    held_out: Optional[str] = common.HeldOutOpt,
    pair: Optional[Tuple[int, int]] = typer.Option(None, "--pair", help="Measure any two solutions: --pair A B."),
    baseline: str = typer.Option("anchors", "--baseline", help="anchors: also every (anchor, held-out) pair | none"),
    points: int = typer.Option(11, "--points", help="Grid size: t = linspace(0, 1, N)."),
    splits: str = typer.Option("train,test", "--splits", help="train, test or train,test."),
    bn_calibration: str = common.BnCalibrationOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Evaluation and BN-calibration batch (4096)."),
    align: str = typer.Option(
        "auto", "--align", help="auto (weight where the architecture has a spec) | weight | none: permute B to A first."
    ),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the curves as a PNG."),
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and measure again."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """Loss and accuracy barriers: star–held-out and regular–held-out pairs, or one --pair."""
    from starcli.solutions.barriers import _parse_options, measure

    from starcli.selectors import check_id

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    held = common.ids(held_out, "held-out id", unique=True) if held_out else None
    pairs = [tuple(pair)] if pair and pair[0] is not None else None
    if sum(a == "--pair" for a in common.state.argv) > 1:
        raise UsageError("--pair takes one pair (A B); measure several pairs with --star S --held-out IDS, or one call per pair")
    check_id(star, "--star")
    for a in pairs[0] if pairs else ():
        check_id(a, "--pair")
    if pairs and pairs[0][0] == pairs[0][1]:
        raise UsageError(f"--pair {pairs[0][0]} {pairs[0][1]} names one solution twice; a barrier needs two")
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    _parse_options(points, split_names, bn_calibration, batch_size, baseline, align)
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    common.device(device)
    reg = common.registry()
    rep = common.reporter()
    with rep.live():
        result = measure(
            reg, star=star, held_out=held, pairs=pairs, baseline=baseline, points=points, splits=split_names,
            bn_calibration=bn_calibration, batch_size=batch_size, recompute=recompute, device=device, align=align,
            reporter=rep,
        )
    if plot:
        from starcli.reports.figures import barrier_plot

        print(f"wrote {barrier_plot(result, plot)}", file=sys.stderr)
    if fmt == "json":
        common.echo_json(result)
    elif fmt in ("csv", "md"):
        sys.stdout.write(table_text(pair_rows(result), PAIR_COLUMNS, fmt))
    else:
        sys.stdout.write(human_report(result))


@app.command()
def demo(
    out: str = typer.Option("demo-out", "--out", help="Folder for barriers.png and barriers.json."),
    force: bool = common.ForceOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """The whole pipeline on MNIST-1D: 8 anchors, a star from 1-5, barriers against 6-8, a plot.

    The star re-aligns its anchors each epoch (Algorithm 1) and pairs are weight-matched before
    interpolation, as the paper measures them.
    """
    from starcli.experiments.demo import demo as run_demo

    common.check_out_folder(out, force)
    common.device(device)
    start = time.perf_counter()
    reg = common.registry()
    rep = common.reporter()
    with rep.live():
        result = run_demo(reg, out, device=device, reporter=rep)
    if json_:
        common.echo_json(result)
        return
    sys.stdout.write(human_report(result))
    plain = result["unaligned"]
    star_lb, regular_lb = (plain[k]["train"]["loss_barrier"] for k in ("star-held-out", "regular-held-out"))
    print(
        "\nThe same pairs without alignment: train loss barrier "
        f"star–held-out {star_lb['mean']:.4f} ± {star_lb['std']:.4f}, "
        f"regular–held-out {regular_lb['mean']:.4f} ± {regular_lb['std']:.4f}."
    )
    print(f"plot: {out}/barriers.png   curves: {out}/barriers.json   ({time.perf_counter() - start:.0f}s)")


