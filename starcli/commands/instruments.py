"""sharpness, landscapes: the field's instruments beyond lines (the work is starcli/solutions/landscapes.py,
the mathematics starcli/engine/sharpness.py)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from starcli.reports.tables import table_text

from . import app, common

SHARPNESS_COLUMNS = ["id", "kind", "subject", "top_k", "subset", "probes", "seed", "loss", "lambda_max", "trace",
                     "trace_se", "settings_hash", "created_at"]


@app.command()
def sharpness(
    ids: str = typer.Argument(..., help="Solutions to measure: 3, 1-5, or attributes like seed=1-5."),
    top_k: int = typer.Option(1, "--top-k", "-k", help="How many of the largest Hessian eigenvalues (Lanczos)."),
    probes: int = typer.Option(100, "--probes", help="Rademacher probes for Hutchinson's trace (0: no trace)."),
    subset: int = typer.Option(1000, "--subset", help="Training samples the loss is taken over (a fixed seeded subset)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seeds the subset, Lanczos' start vector and the probes."),
    max_iter: int = typer.Option(100, "--max-iter", help="Most Hessian-vector products Lanczos may spend."),
    tol: float = typer.Option(1e-4, "--tol", help="Converged when every eigenpair's relative residual is below this."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per pass (memory; the sum is the same)."),
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and measure again."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the eigenvalues and traces as a figure (this file).",
                                       rich_help_panel=common.OUTPUT),
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    device: str = common.DeviceOpt,
    executor: str = common.ExecutorOpt,
    jobs: Optional[int] = common.JobsOpt,
    partition: Optional[str] = common.PartitionOpt,
    time: str = common.TimeOpt,
    gpus_per_job: Optional[float] = common.GpusPerJobOpt,
    slurm_cluster: str = common.SlurmClusterOpt,
    ray_address: Optional[str] = common.RayAddressOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Sharpness at solutions: the top-k Hessian eigenvalues of the training loss and Hutchinson's trace
    (with its standard error), on a fixed data subset; stored, so a rerun reads the registry."""
    from starcli.solutions import landscapes, records

    specs_of = dict(top_k=top_k, probes=probes, subset=subset, seed=seed, max_iter=max_iter, tol=tol, batch_size=batch_size)
    landscapes.SharpnessSpec(0, **specs_of)  # options checked before the registry is opened
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    common.device(device)
    reg = common.existing_registry()
    specs = [landscapes.SharpnessSpec(sid, **specs_of) for sid in records.select_ids(reg, ids, "solution")]
    rows = landscapes.sharpness(
        reg, specs, device=device, recompute=recompute, executor=executor, jobs=jobs, reporter=common.reporter(),
        partition=partition, time=time, gpus_per_job=gpus_per_job, slurm_cluster=slurm_cluster, ray_address=ray_address,
    )
    if plot:
        from starcli.reports import figures, style

        with style.output(fig_format, dpi):
            written = figures.sharpness_plot(plot, rows)
        print(f"wrote {written}", file=sys.stderr)
    if json_:
        common.echo_json(rows)
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
def landscapes(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this instrument: sharpness."),
    solution: Optional[int] = typer.Option(None, "--solution", help="Only rows that measure this solution."),
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """List the stored instrument measurements (sharpness) with the settings they were measured under."""
    from starcli.solutions import landscapes as stored

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    reg = common.registry(create=False, read_only=True)
    rows = stored.stored(reg, kind=kind, solution=solution)
    if fmt == "json":
        common.echo_json(rows)
    elif not rows and fmt is None:
        print("no instrument measurements stored yet; measure some with `starlight sharpness`", file=sys.stderr)
    else:
        sys.stdout.write(table_text(rows, SHARPNESS_COLUMNS, fmt))

