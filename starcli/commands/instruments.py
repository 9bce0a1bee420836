"""sharpness, plane, curve, landscapes: the field's instruments beyond lines (the work is
starcli/solutions/sharpness.py, planes.py, bends.py and their table landscapes.py; the mathematics the
engine's modules of the same names)."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from starcli.reports.tables import table_text

from . import app, common

SHARPNESS_COLUMNS = ["id", "kind", "subject", "top_k", "subset", "probes", "seed", "loss", "lambda_max", "trace",
                     "trace_se", "settings_hash", "created_at"]
CURVE_COLUMNS = ["id", "kind", "subject", "bend", "epochs", "align", "bend_solution", "split", "curve_loss_barrier",
                 "line_loss_barrier", "settings_hash", "created_at"]
# The options plane and curve declare alike (sharpness's --align applies to --along only, so it keeps its own).
SplitsOpt = typer.Option("train,test", "--splits", help="The splits to measure, a list: train, test or train,test.")
AlignOpt = typer.Option("auto", "--align", help="auto (weight where the architecture has a spec) | weight | none.")

PLANE_COLUMNS = ["id", "kind", "subject", "basis", "resolution", "align", "complete", "min_loss", "max_loss",
                 "settings_hash", "created_at"]


@app.command()
@common.run_options
def sharpness(
    ids: str = typer.Argument(..., help="Solutions to measure: 3, 1-5, or attributes like seed=1-5."),
    top_k: int = typer.Option(1, "--top-k", "-k", help="How many of the largest Hessian eigenvalues (Lanczos)."),
    probes: int = typer.Option(100, "--probes", help="Rademacher probes for Hutchinson's trace (0: no trace)."),
    subset: int = typer.Option(1000, "--subset", help="Training samples the loss is taken over (a fixed seeded subset)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seeds the subset, Lanczos' start vector and the probes."),
    max_iter: int = typer.Option(100, "--max-iter", help="Most Hessian-vector products Lanczos may spend."),
    tol: float = typer.Option(1e-4, "--tol", help="Converged when every eigenpair's relative residual is below this."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per pass (memory; the sum is the same)."),
    along: Optional[int] = typer.Option(None, "--along", help="Also along the segment to this solution (e.g. star to held-out)."),
    points: int = typer.Option(5, "--points", help="--along: values of t on the segment, ends included."),
    align: str = typer.Option("auto", "--align", help="--along: auto (weight where the architecture has a spec) | weight | none."),
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and measure again."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the eigenvalues and traces as a figure (this file).",
                                       rich_help_panel=common.OUTPUT),
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """Sharpness at solutions: the top-k Hessian eigenvalues of the training loss and Hutchinson's trace
    (with its standard error), on a fixed data subset; stored, so a rerun reads the registry."""
    from starcli.solutions import records
    from starcli.solutions import sharpness as work

    specs_of = dict(top_k=top_k, probes=probes, subset=subset, seed=seed, max_iter=max_iter, tol=tol, batch_size=batch_size,
                    along=along, points=points, align=align)
    work.SharpnessSpec(0 if along != 0 else 1, **specs_of)  # options checked before the registry is opened
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    common.device(device)
    reg = common.existing_registry()
    specs = [work.SharpnessSpec(sid, **specs_of) for sid in records.select_ids(reg, ids, "solution")]
    rows = work.measure(
        reg, specs, device=device, recompute=recompute, run=run, reporter=common.reporter(),
    )
    if plot:
        from starcli.reports import figures, style

        with style.output(fig_format, dpi):
            written = figures.sharpness_plot(plot, rows) if along is None else figures.sharpness_along_plot(plot, rows)
        print(f"wrote {written}", file=sys.stderr)
    if json_:
        common.echo_json(rows)
        return
    if along is not None:
        for row in rows:
            print(f"sharpness along {row['subject']} ({row['settings']['align']} alignment):")
            for t, p in zip(row["result"]["t"], row["result"]["points"]):
                tr = f"; trace {p['trace']['mean']:.6g} ± {p['trace']['se']:.2g}" if "trace" in p else ""
                print(f"  t = {t:.3g}: loss {p['loss']:.4g}; λ_max {p['eigenvalues'][0]:.6g}{tr}")
        return
    for row in rows:
        res = row["result"]
        eig = ", ".join(f"{v:.6g}" for v in res["eigenvalues"])
        line = f"{row['solution_kind']} {row['subject']}: loss {res['loss']:.4g} on {res['samples']} samples; λ_max {eig}"
        if "trace" in res:
            tr = res["trace"]
            line += f"; trace {tr['mean']:.6g} ± {tr['se']:.2g} (SE, {tr['probes']} probes; 95% CI {tr['ci95'][0]:.4g} to {tr['ci95'][1]:.4g})"
        print(line)


@app.command()
@common.run_options
def plane(
    ids: List[int] = typer.Argument(..., help="Three solutions A B C (B and C are aligned to A), or one with --random."),
    random: bool = typer.Option(False, "--random", help="Two seeded random directions around one solution (Li et al. 2018)."),
    filter_normalised: bool = typer.Option(
        True, "--filter-normalised/--no-filter-normalised",
        help="--random: scale each filter of a direction to the solution's filter norm (biases and BN get none).",
    ),
    resolution: int = typer.Option(21, "--resolution", help="Grid points a side (the grid has this squared)."),
    margin: float = typer.Option(0.2, "--margin", help="Three solutions: the grid's border, a fraction of their extent."),
    span: float = typer.Option(1.0, "--span", help="--random: the grid covers [-span, span] along each direction."),
    seed: int = typer.Option(0, "--seed", "-s", help="--random: the directions' seed."),
    splits: str = SplitsOpt,
    bn_calibration: str = common.BnCalibrationOpt,
    batch_size: int = typer.Option(4096, "--batch-size", help="Evaluation and BN-calibration batch."),
    align: str = AlignOpt,
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and measure again."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the train-loss contours as a figure (this file).",
                                       rich_help_panel=common.OUTPUT),
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """Loss and accuracy over a plane: through three solutions, or around one along random
    filter-normalised directions; BatchNorm re-estimated at every point, stored row by row (a rerun
    resumes where it stopped)."""
    from starcli.solutions import planes as work
    from starcli.solutions import records

    bn = _bn(bn_calibration)
    spec = work.PlaneSpec(tuple(ids), random=random, filter_normalised=filter_normalised, resolution=resolution,
                                margin=margin, span=span, seed=seed,
                                splits=tuple(sp.strip() for sp in splits.split(",") if sp.strip()),
                                bn_calibration=bn, batch_size=batch_size, align=align)
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    common.device(device)
    reg = common.existing_registry()
    [row] = work.measure(
        reg, [spec], device=device, recompute=recompute, run=run, reporter=common.reporter(),
    )
    if plot:
        from starcli.reports import figures, style

        kinds = {str(sol.id): sol.kind for sol in records.get_many(reg, list(ids))}
        with style.output(fig_format, dpi):
            written = figures.plane_plot(plot, row, split=row["settings"]["splits"][0], kinds=kinds)
        print(f"wrote {written}", file=sys.stderr)
    if json_:
        common.echo_json(row)
        return
    res = row["result"]
    for split in row["settings"]["splits"]:
        losses = [v for r in res["grid"][split]["loss"] for v in r]
        accs = [v for r in res["grid"][split]["acc"] for v in r]
        print(f"plane {row['subject']} ({len(res['x'])}x{len(res['y'])} points, {split}): loss {min(losses):.4g} to "
              f"{max(losses):.4g}, accuracy {min(accs):.1f}% to {max(accs):.1f}%")
    marks = ", ".join(f"{k} at ({x:.3g}, {y:.3g})" for k, (x, y) in res["marks"].items())
    print(f"solutions in plane coordinates: {marks}")


@app.command()
@common.run_options
def curve(
    a: int = typer.Argument(..., help="Solution A, one end."),
    b: int = typer.Argument(..., help="Solution B, the other end (aligned to A first)."),
    bend: str = typer.Option("bezier", "--bend", help="bezier (one quadratic control point) | polychain (one bend)."),
    epochs: int = typer.Option(20, "--epochs", help="Epochs of training the bend on A's training split."),
    lr: float = typer.Option(0.05, "--lr", help="SGD learning rate (momentum 0.9, dnn-mode-connectivity's schedule)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Training batch; every batch draws its own t."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seeds the draws of t and the batch order."),
    points: int = typer.Option(11, "--points", help="Evaluation grid: t = linspace(0, 1, N), for the curve and the line."),
    splits: str = SplitsOpt,
    bn_calibration: str = common.BnCalibrationOpt,
    align: str = AlignOpt,
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and train and measure again."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the curve's and the line's losses as a figure (this file).",
                                       rich_help_panel=common.OUTPUT),
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """A curved path between two solutions: train its bend, register it, and measure its barrier beside the
    straight line's.

    The bend is trained as Garipov et al. (2018) train it and registered as a solution of kind bend;
    BatchNorm is re-estimated at every t of both paths."""
    from starcli.solutions import bends as work

    spec = work.CurveSpec(a, b, bend=bend, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, points=points,
                                splits=tuple(sp.strip() for sp in splits.split(",") if sp.strip()),
                                bn_calibration=_bn(bn_calibration), align=align)
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    common.device(device)
    reg = common.existing_registry()
    [row] = work.measure(
        reg, [spec], device=device, recompute=recompute, run=run, reporter=common.reporter(),
    )
    if plot:
        from starcli.reports import figures, style

        with style.output(fig_format, dpi):
            written = figures.bent_path_plot(plot, row)
        print(f"wrote {written}", file=sys.stderr)
    if json_:
        common.echo_json(row)
        return
    res = row["result"]
    print(f"{bend} curve {a}-{b}, bend registered as solution {res['bend_solution']}:")
    for split in row["settings"]["splits"]:
        c, l = res["barriers"]["curve"][split], res["barriers"]["line"][split]
        print(f"  {split}: loss barrier {c['loss_barrier']:.4g} on the curve, {l['loss_barrier']:.4g} on the line; "
              f"accuracy barrier {c['acc_barrier']:.2f} vs {l['acc_barrier']:.2f} points")


def _bn(text: str) -> str | int:
    from starcli.errors import UsageError

    if text == "full":
        return text
    if not text.isascii() or not text.isdigit():
        raise UsageError(f"--bn-calibration must be full or a number of samples, got {text!r}")
    return int(text)


@app.command()
def landscapes(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this instrument: sharpness | plane | curve."),
    solution: Optional[int] = typer.Option(None, "--solution", help="Only rows that measure this solution."),
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """List the stored instrument measurements (sharpness, planes, curves) with the settings they were measured under."""
    from starcli.solutions import landscapes as stored

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    reg = common.registry(create=False, read_only=True)
    rows = stored.stored(reg, kind=kind, solution=solution)
    if fmt == "json":
        common.echo_json(rows)
    elif not rows and fmt is None:
        print("no instrument measurements stored yet; measure some with `starlight sharpness`", file=sys.stderr)
    else:
        tables = [(columns, [r for r in rows if r["kind"] == what])
                  for what, columns in (("sharpness", SHARPNESS_COLUMNS), ("plane", PLANE_COLUMNS), ("curve", CURVE_COLUMNS))]
        tables = [(columns, mine) for columns, mine in tables if mine]
        if fmt == "csv" and len(tables) > 1:  # one CSV, one header: every kind's columns, blank where not its own
            union = list(dict.fromkeys(c for columns, _ in tables for c in columns))
            sys.stdout.write(table_text(rows, union, fmt))
        else:
            for columns, mine in tables:
                sys.stdout.write(table_text(mine, columns, fmt))

