"""star, barrier, demo."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, Tuple

import typer

from starcli.cli import app

from . import common

PAIR_COLUMNS = ["a", "b", "kind", "train_loss_barrier", "train_acc_barrier", "test_loss_barrier", "test_acc_barrier"]
SUMMARY_COLUMNS = ["pairs", "split", "loss barrier", "acc barrier (pp)", "n"]


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
    from starcli import solutions
    from starcli.star import build_star

    anchor_ids = common.ids(anchors, "anchor id")
    reg = common.registry()
    rep = common.reporter()
    with rep.live():
        sol, created = build_star(
            reg, anchor_ids, epochs=epochs, t_sampling=t_sampling, samples_per_step=samples_per_step,
            mu_star=mu_star, seed=seed, device=device, reporter=rep, align_anchors=align_anchors,
        )
    rec = solutions.record(reg, sol)
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
    held_out: Optional[str] = typer.Option(None, "--held-out", help="Held-out ids: 6-10."),
    pair: Optional[Tuple[int, int]] = typer.Option(None, "--pair", help="Measure any two solutions: --pair A B."),
    baseline: str = typer.Option("anchors", "--baseline", help="anchors: also every (anchor, held-out) pair | none"),
    points: int = typer.Option(11, "--points", help="Grid size: t = linspace(0, 1, N)."),
    splits: str = typer.Option("train,test", "--splits", help="train, test or train,test."),
    bn_calibration: str = typer.Option("full", "--bn-calibration", help="full | N (a fixed seeded subset of N samples)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Evaluation and BN-calibration batch (4096)."),
    align: str = typer.Option(
        "auto", "--align", help="auto (weight where the architecture has a spec) | weight | none: permute B to A first."
    ),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the curves as a PNG."),
    recompute: bool = typer.Option(False, "--recompute", help="Ignore stored results and measure again."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
    csv_: bool = typer.Option(False, "--csv", help="Pairs as CSV on stdout."),
    md: bool = typer.Option(False, "--md", help="Pairs as a markdown table on stdout."),
) -> None:
    """Loss and accuracy barriers: star–held-out and regular–held-out pairs, or one --pair."""
    from starcli.barriers import measure

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    held = common.ids(held_out, "held-out id") if held_out else None
    pairs = [tuple(pair)] if pair and pair[0] is not None else None
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    reg = common.registry()
    rep = common.reporter()
    with rep.live():
        result = measure(
            reg, star=star, held_out=held, pairs=pairs, baseline=baseline, points=points, splits=split_names,
            bn_calibration=bn_calibration, batch_size=batch_size, recompute=recompute, device=device, align=align,
            reporter=rep,
        )
    if plot:
        from starcli.barrier_plot import plot as write_plot

        print(f"wrote {write_plot(result, plot)}", file=sys.stderr)
    if fmt == "json":
        common.echo_json(result)
    elif fmt in ("csv", "md"):
        sys.stdout.write(common.table_text(pair_rows(result), PAIR_COLUMNS, fmt))
    else:
        sys.stdout.write(human_report(result))


@app.command()
def demo(
    out: str = typer.Option("demo-out", "--out", help="Folder for barriers.png and barriers.json."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """The whole pipeline on MNIST-1D: 8 anchors, a star from 1-5, barriers against 6-8, a plot.

    The star re-aligns its anchors each epoch (Algorithm 1) and pairs are weight-matched before
    interpolation, as the paper measures them.
    """
    from starcli.demo import demo as run_demo

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


def pair_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for p in result["pairs"]:
        row = {"a": p["a"], "b": p["b"], "kind": p["kind"]}
        for split in ("train", "test"):
            if split in p:
                row[f"{split}_loss_barrier"] = p[split]["loss_barrier"]
                row[f"{split}_acc_barrier"] = p[split]["acc_barrier"]
        rows.append(row)
    return rows


def human_report(result: dict[str, Any]) -> str:
    from starcli.barriers import definitions

    summary, settings = result["summary"], result["settings"]
    parts = [common.table_text(pair_rows(result), PAIR_COLUMNS, None, title="pairs")]
    rows = []
    for kind, by_split in summary.items():
        if kind in ("ratio", "star_metrics", "anchor_metrics"):
            continue
        for split, stats in by_split.items():
            lb, ab = stats["loss_barrier"], stats["acc_barrier"]
            rows.append(
                {
                    "pairs": kind,
                    "split": split,
                    "loss barrier": f"{lb['mean']:.4f} ± {lb['std']:.4f}",
                    "acc barrier (pp)": f"{ab['mean']:.2f} ± {ab['std']:.2f}",
                    "n": lb["n"],
                }
            )
    for split, ratio in (summary.get("ratio") or {}).items():
        fmt = lambda r: "-" if r is None else f"{r:.3f}"  # noqa: E731
        rows.append({"pairs": "ratio star/regular", "split": split, "loss barrier": fmt(ratio["loss_barrier"]),
                     "acc barrier (pp)": fmt(ratio["acc_barrier"]), "n": None})
    parts.append(common.table_text(rows, SUMMARY_COLUMNS, None, title="summary (mean ± std over pairs)"))
    if summary.get("star_metrics"):
        lines = [_metrics_line(f"star {result['star']} itself", summary["star_metrics"])]
        if summary.get("anchor_metrics"):
            lines.append(_metrics_line("anchors' mean", summary["anchor_metrics"]))
        lines.append("A small barrier only counts if the star is itself a good solution: read these lines together.")
        parts.append("\n".join(lines))
    parts.append(definitions(settings))
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _metrics_line(label: str, m: dict[str, float]) -> str:
    nan = float("nan")
    return (
        f"{label:>16}: train loss {m.get('train_loss', nan):.4f}, train acc {m.get('train_acc', nan):.2f}%, "
        f"test loss {m.get('test_loss', nan):.4f}, test acc {m.get('test_acc', nan):.2f}%"
    )
