"""star, barrier, demo."""

from __future__ import annotations

import sys
import time as clock
from typing import Optional, Tuple

import typer

from starcli.errors import UsageError
from starcli.reports.barrier_text import PAIR_COLUMNS, human_report, pair_rows
from starcli.reports.tables import table_text

from . import app, common


@app.command()
@common.run_options(jobs=False)
def star(
    anchors: str = typer.Option(
        ..., "--anchors", "-a", help="Anchor ids: 1-5, 1,3,7, or attributes: seed=1-5,recipe=mnist1d-mlp."
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: the anchors' recipe."),
    t_sampling: str = typer.Option("uniform", "--t-sampling", help="uniform | beta:A,B | constant:T"),
    samples_per_step: int = typer.Option(1, "--samples-per-step", help="Anchor/t draws averaged per batch."),
    preset: str = typer.Option(
        "solution", "--preset",
        help="solution: re-aligned anchors, an aligned-mean start, mu_star 1 (a star that is a solution; "
        "docs/results/star-quality.md) | paper: the authors' released settings. The flags below override it.",
    ),
    mu_star: Optional[float] = typer.Option(
        None, "--mu-star", help="Weight M of the star's own loss: (L_interp + M·L_star)/(1+M) (solution: 1, paper: 0)."
    ),
    init: Optional[str] = typer.Option(None, "--init", help="random | anchor-mean: the star's start (solution: anchor-mean)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the star's initialisation and draws."),
    realign: Optional[bool] = typer.Option(
        None, "--realign/--no-realign",
        help="Re-permute every anchor to the star at each epoch start (solution: on, paper: off).",
    ),
    realign_every: int = typer.Option(
        1, "--realign-every",
        help="K: re-align only at the start of epochs 0, K, 2K, ...; between, the anchors keep their last permutation. "
        "Cheaper, but another star (K > 1 is part of the key; docs/benchmarks.md measures its effect).",
    ),
    compile_: Optional[bool] = typer.Option(
        None, "--compile/--no-compile",
        help="Compile the star's step with torch.compile (part of the key). Default: as the anchors were trained.",
    ),
    device: str = common.DeviceOpt,
    log: Optional[str] = common.LogOpt,
    log_dir: Optional[str] = common.LogDirOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """Build a star model from anchors with the Starlight algorithm and register it (kind star).

    It checkpoints every epoch: a killed, preempted or requeued star resumes from its last one.
    """
    from starcli.solutions import records, stars

    anchor_ids = common.solution_ids(anchors, "anchor id", unique=True)
    spec = stars.StarSpec.preset(
        preset, realign=realign, init=init, mu_star=mu_star, anchor_ids=anchor_ids, epochs=epochs, t_sampling=t_sampling,
        samples_per_step=samples_per_step, seed=seed, compile_step=compile_, realign_every=realign_every,
    )
    common.device(device)
    reg = common.existing_registry()
    tracking = common.tracking(reg, log, log_dir)
    rep = common.reporter()
    with rep.live():
        [(sol, created)] = stars.build_stars(
            reg, [spec], run=run, device=device, reporter=rep, tracking=tracking,
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


class _RepeatablePair(common.PanelledCommand):
    """`--pair A B` given several times keeps every pair. Typer cannot declare a list of tuples, so the
    option is declared as one (int, int) and made repeatable here, with its own conversion."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name == "pair":
                param.multiple = True
                param.process_value = lambda ctx, value, p=param: _pairs(ctx, p, value)


def _pairs(ctx, param, value) -> list[tuple[int, int]] | None:
    if not value:
        return None
    try:
        return [(int(a), int(b)) for a, b in value]
    except ValueError:
        raise typer.BadParameter("takes two solution ids, e.g. --pair 1 2", ctx=ctx, param=param) from None


@app.command(cls=_RepeatablePair)
@common.run_options
def barrier(
    star: Optional[str] = typer.Option(
        None, "--star",
        help="Star id: measure it against --held-out. Several (9,19,29) are read as replicates: each against the "
        "held-outs, with the star/regular ratio's CI pooled over them.",
    ),
    held_out: Optional[str] = common.HeldOutOpt,
    pair: Optional[Tuple[int, int]] = typer.Option(
        None, "--pair", help="Measure any two solutions: --pair A B (repeatable: --pair 1 2 --pair 3 4)."
    ),
    matrix: Optional[str] = typer.Option(
        None, "--matrix", help="Every pair among these ids (e.g. 1-8): a CSV and a heatmap of the train loss barrier."
    ),
    out: str = typer.Option(".", "--out", "-o", help="--matrix: folder (or .csv file) for barrier-matrix.csv and its figure."),
    baseline: str = typer.Option("anchors", "--baseline", help="anchors: also every (anchor, held-out) pair | none"),
    points: int = typer.Option(11, "--points", help="Grid size: t = linspace(0, 1, N)."),
    splits: str = typer.Option("train,test", "--splits", help="The splits to measure, a list: train, test or train,test (--split, as in bma, is exactly one)."),
    bn_calibration: str = common.BnCalibrationOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Evaluation and BN-calibration batch (4096)."),
    align: str = typer.Option(
        "auto", "--align", help="auto (weight where the architecture has a spec) | weight | activation (feature "
        "correlations on the --bn-calibration samples) | none: permute B to A first."
    ),
    renorm: Optional[str] = typer.Option(
        None, "--renorm", help="At each t: reset (BatchNorm statistics re-estimated; the default with BatchNorm) | none "
        "(the default without) | repair | rescale | reshift (REPAIR's per-channel correction, for nets without BatchNorm).",
    ),
    definition: str = typer.Option(
        "eq1", "--definition", help="How a curve becomes a barrier: eq1 (excess over the endpoints' line, the paper's) "
        "| endpoint-mean (over their mean, Git Re-Basin) | error (Frankle et al.: error barrier, connected below 2 points).",
    ),
    temperature: float = typer.Option(
        1.0, "--temperature", help="Softmax temperature of the loss: cross-entropy of logits / T (1: the plain one)."
    ),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the curves as a figure (this file)."),
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and measure again."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
    run=None,
) -> None:
    """Loss and accuracy barriers: star-held-out and regular-held-out pairs, --pair A B (repeatable), or
    the --matrix of every pair among some solutions.

    With --jobs N (or another executor) the missing pairs run in N batches on workers; each batch stores
    its pairs as it finishes, so a rerun measures only what is still missing.
    """
    from starcli.reports import style
    from starcli.selectors import check_id
    from starcli.solutions.barriers import BarrierSpec, measure

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    held = common.solution_ids(held_out, "held-out id", unique=True) if held_out else None
    pairs = list(pair) if pair else None
    stars = common.solution_ids(star, "star id", unique=True) if star is not None else [None]
    for one in stars:
        check_id(one, "--star")
    for a, b in pairs or ():
        check_id(a, "--pair")
        check_id(b, "--pair")
        if a == b:
            raise UsageError(f"--pair {a} {b} names one solution twice; a barrier needs two")
    if pairs and len(set(pairs)) != len(pairs):
        raise UsageError("a --pair is given twice; list each pair once")
    if matrix is not None and (pairs or star is not None or held):
        raise UsageError("--matrix measures every pair among its ids: use it without --star, --held-out or --pair")
    matrix_ids = common.solution_ids(matrix, "solution id", unique=True) if matrix is not None else None
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    # Checked once, here; each star of a replicate set is this spec with its star.
    spec = BarrierSpec(star=stars[0], held_out=held, pairs=pairs, baseline=baseline, points=points, splits=split_names,
                       bn_calibration=bn_calibration, batch_size=batch_size, align=align, renorm=renorm,
                       definition=definition, temperature=temperature, recompute=recompute)
    if plot:
        from starcli.reports.figures import check_plot_path

        check_plot_path(plot)
    common.device(device)
    with style.output(fig_format, dpi):
        if matrix_ids is not None:
            from starcli.experiments.matrix import matrix_pairs

            matrix_pairs(matrix_ids)  # its usage errors before any work
        rep = common.reporter()
        with rep.live():
            if matrix_ids is not None:
                from starcli.experiments.matrix import barrier_matrix

                result = barrier_matrix(
                    common.existing_registry(), matrix_ids, out, fmt=fig_format, dpi=dpi, reporter=rep, device=device,
                    points=points, splits=split_names, bn_calibration=bn_calibration, batch_size=batch_size,
                    recompute=recompute, align=align, renorm=renorm, definition=definition, temperature=temperature,
                )
            elif len(stars) > 1:
                from dataclasses import replace

                from starcli.solutions.barriers import check_replicate_stars, replicates

                reg = common.existing_registry()
                check_replicate_stars(reg, stars)  # before any pair is measured and stored
                result = replicates(
                    [measure(reg, replace(spec, star=one), run=run, device=device, reporter=rep) for one in stars]
                )
            elif run.executor == "local" and not run.jobs:
                # In this process: a query the registry answers then imports no torch (the runners do),
                # and reads it read-only, beside any writer; a missing pair needs the writable registry.
                result = None if recompute else _answered_from_registry(spec, rep)
                if result is None:
                    result = measure(common.existing_registry(), spec, device=device, reporter=rep)
            else:
                result = measure(common.existing_registry(), spec, run=run, device=device, reporter=rep)
        if matrix_ids is not None:
            print(f"wrote {result['matrix']['csv']} and {result['matrix']['figure']}", file=sys.stderr)
        if plot:
            from starcli.reports.figures import barrier_plot

            every = {"pairs": [p for r in result["replicates"] for p in r["pairs"]]} if len(stars) > 1 else result
            print(f"wrote {barrier_plot(every, plot)}", file=sys.stderr)
    if fmt == "json":
        common.echo_json(result)
    elif len(stars) > 1:
        from starcli.reports.barrier_text import replicates_report

        if fmt in ("csv", "md"):
            rows = [row | {"star": r["star"]} for r in result["replicates"] for row in pair_rows(r)]
            sys.stdout.write(table_text(rows, ["star"] + PAIR_COLUMNS, fmt))
        else:
            sys.stdout.write(replicates_report(result))
    elif fmt in ("csv", "md"):
        sys.stdout.write(table_text(pair_rows(result), PAIR_COLUMNS, fmt))
    else:
        sys.stdout.write(human_report(result))


def _answered_from_registry(spec, reporter) -> dict | None:
    """The barriers when the registry already stores every pair, read through a read-only registry (a
    read-only mount, a shared archive, beside a writer holding its lock); None when some pair must be
    computed (then the caller opens the registry for writing)."""
    from starcli.solutions.barriers import finish, plan_barriers

    reg = common.existing_registry(read_only=True)
    try:
        plan = plan_barriers(reg, spec, reporter)
        return None if plan.todo else finish(plan)
    finally:
        reg.close()


@app.command()
@common.run_options(cluster=False)
def demo(
    out: str = typer.Option("demo-out", "--out", "-o", help="Folder for the barriers figure and barriers.json."),
    force: bool = common.ForceOpt,
    fig_format: Optional[str] = common.FormatOpt,
    dpi: Optional[int] = common.DpiOpt,
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """The paper's claim on MNIST-1D, tested with replicates: 3 replicates, each with its own 3 anchors, star
    and 6 held-outs; the star/regular barrier ratio with its 95% CI, two verdicts and the claim the run supports.

    Each star re-aligns its anchors each epoch (Algorithm 1) and pairs are weight-matched before
    interpolation, as the paper measures them. Work is pooled over --jobs workers (default: the cores, ≤ 4).
    """
    from starcli.experiments.demo import demo as run_demo
    from starcli.reports import style

    common.check_out_folder(out, force)
    common.device(device)
    start = clock.perf_counter()
    reg = common.registry()
    rep = common.reporter()
    with style.output(fig_format, dpi), rep.live():
        result = run_demo(reg, out, device=device, reporter=rep, jobs=run.jobs)
    if json_:
        common.echo_json(result)
        return
    from starcli.reports.barrier_text import demo_report

    sys.stdout.write(demo_report(result))
    print(f"plot: {result['figure']}   curves: {out}/barriers.json   ({clock.perf_counter() - start:.0f}s)")


