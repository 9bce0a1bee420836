"""train, register, list, show, doctor."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from starcli.errors import UsageError
from starcli.reports.tables import table_text

from . import app, common

LIST_COLUMNS = ["id", "kind", "arch", "width", "seed", "dataset", "recipe", "epochs", "train_acc", "test_acc", "train_loss"]


@app.command()
def train(
    recipe: str = typer.Option("mnist1d-mlp", "--recipe", "-r", help="Recipe name or path to a .toml file."),
    seed: str = typer.Option("1", "--seed", "-s", help="Seeds: 3, 1-5, 1,3,7, 1-3,9."),
    width: Optional[int] = typer.Option(None, "--width", help="Override the architecture's width."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the recipe's epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override the batch size."),
    set_: List[str] = typer.Option([], "--set", help="Any other setting, key=value (e.g. arch_kwargs.depth=2)."),
    device: str = common.DeviceOpt,
    data_dir: Optional[str] = common.DataDirOpt,
    download: bool = common.DownloadOpt,
    executor: str = common.ExecutorOpt,
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j",
        help="Seeds at once. local: worker processes (default one per visible GPU, else 1 = this process); "
        "slurm: array parallelism; ray: tasks in flight.", rich_help_panel=common.CLUSTER,
    ),
    partition: Optional[str] = typer.Option(None, "--partition", help="slurm: the partition to submit to.", rich_help_panel=common.CLUSTER),
    time: str = typer.Option("4:00:00", "--time", help="slurm: time limit per seed (90, 4:00:00, 1-12:00:00).", rich_help_panel=common.CLUSTER),
    gpus_per_job: Optional[float] = typer.Option(
        None, "--gpus-per-job", help="slurm/ray: GPUs per seed (default 1, or 0 with --device cpu; ray: 0.5 shares).", rich_help_panel=common.CLUSTER
    ),
    slurm_cluster: str = typer.Option(
        "slurm", "--slurm-cluster", help="slurm: slurm, or local/debug to try the submission on this machine.", rich_help_panel=common.CLUSTER
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="ray: cluster address (default $RAY_ADDRESS, else a local Ray).", rich_help_panel=common.CLUSTER
    ),
    json_: bool = common.JsonOpt,
) -> None:
    """Train one solution per seed and register it as an anchor (seeds already trained are skipped)."""
    from starcli.engine import recipes
    from starcli.solutions import executors, records

    seeds = common.ids(seed, "seed")
    executors.check_options(executor, jobs, partition, time, gpus_per_job, slurm_cluster, ray_address)
    config = recipes.resolve(
        recipe, width=width, epochs=epochs, lr=lr, batch_size=batch_size, overrides=recipes.parse_set(set_)
    )
    reg = common.registry()
    rep = common.reporter()
    with rep.live():
        outcomes = executors.train(
            reg, config, seeds, executor=executor, device=device, jobs=jobs, data_dir=data_dir, download=download,
            reporter=rep, partition=partition, time=time, gpus_per_job=gpus_per_job, slurm_cluster=slurm_cluster,
            ray_address=ray_address,
        )
    rows = [records.record(reg, o.solution) for o in outcomes]
    if json_:
        common.echo_json(rows)
    else:
        sys.stdout.write(table_text(common.flatten_metrics(rows), LIST_COLUMNS, None))


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise UsageError(f"{option} takes comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}")
    return values


@app.command()
def register(
    path: str = typer.Argument(
        ..., help="A .safetensors, .pt or .pth state dict, or a folder with model.safetensors + config.json (HF/timm)."
    ),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture name (ours or any timm model); a folder's config.json gives it."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset the checkpoint was trained on (required unless the folder's config names it)."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Input normalisation it was trained with: per-channel mean, e.g. 0.485,0.456,0.406."),
    std: Optional[str] = typer.Option(None, "--std", help="... and per-channel std, e.g. 0.229,0.224,0.225."),
    arch_kwargs: Optional[str] = typer.Option(None, "--arch-kwargs", help='JSON, e.g. \'{"width": 128}\'.'),
    seed: Optional[int] = typer.Option(None, "--seed"),
    width: Optional[int] = typer.Option(None, "--width"),
    device: str = common.DeviceOpt,
    data_dir: Optional[str] = common.DataDirOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Import an outside checkpoint (kind external); it must load strictly into the architecture."""
    from starcli.solutions import imports, records

    kwargs = parse_json_object(arch_kwargs, "--arch-kwargs")
    mean_v, std_v = _floats(mean, "--mean"), _floats(std, "--std")
    reg = common.registry()
    sol, created = imports.register(
        reg, path, arch, dataset, arch_kwargs=kwargs, seed=seed, width=width, device=device, data_dir=data_dir,
        mean=mean_v, std=std_v,
    )
    told = (sol.config or {}).get("input_normalisation") or {}
    for warning in imports.plausibility(sol.metrics, sol.dataset, told.get("mean"), told.get("std")):
        print(warning, file=sys.stderr)
    rec = records.record(reg, sol)
    if json_:
        common.echo_json(rec)
    else:
        verb = "registered" if created else "already registered"
        m = rec["metrics"]
        print(f"{verb} {path} as solution {sol.id}: train acc {m['train_acc']:.1f}%, test acc {m['test_acc']:.1f}%")


@app.command("list")
def list_(
    kind: Optional[str] = typer.Option(None, "--kind", help="anchor, star, external, aligned, soup..."),
    arch: Optional[str] = typer.Option(None, "--arch"),
    dataset: Optional[str] = typer.Option(None, "--dataset"),
    width: Optional[int] = typer.Option(None, "--width"),
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """List registered solutions."""
    from starcli.solutions import records

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    reg = common.registry(create=False)
    rows = [records.record(reg, s) for s in records.query(reg, kind, arch, dataset, width)] if reg else []
    if fmt == "json":
        common.echo_json(rows)
    elif not rows and fmt is None:
        print("no solutions registered yet; train some with `starlight train --seed 1-5`", file=sys.stderr)
    else:
        sys.stdout.write(table_text(common.flatten_metrics(rows), LIST_COLUMNS, fmt))


@app.command()
def show(id: str = typer.Argument(..., help="Solution id."), json_: bool = common.JsonOpt) -> None:
    """Show one solution with the settings that produced it."""
    from starcli.errors import StarlightError
    from starcli.solutions import records

    try:
        sid = int(id)
    except ValueError:
        raise UsageError(f"solution id must be an integer, got {id!r}") from None
    reg = common.registry(create=False)
    if reg is None:
        raise StarlightError(f"no solution with id {sid}: there is no registry here yet (train some first)")
    rec = records.record(reg, records.get(reg, sid), full=True)
    if json_:
        common.echo_json(rec)
        return
    for key, value in rec.items():
        if isinstance(value, dict):
            value = json.dumps(value, default=str)
        print(f"{key:>13}: {value}")


@app.command()
def doctor(
    data_dir: Optional[str] = common.DataDirOpt, json_: bool = common.JsonOpt
) -> None:
    """Versions, devices, registry location and which datasets are available."""
    from starcli.solutions import doctor as doc

    info = doc.report(common.state.home, data_dir)
    if json_:
        common.echo_json(info)
        return
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<14} {v}")
        elif isinstance(value, list):
            print(f"{key}: {', '.join(value)}")
        else:
            print(f"{key}: {value}")


def parse_json_object(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag} is not valid JSON ({e.msg}); write e.g. '{{\"width\": 128}}'") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value
