"""train, register, list, show, doctor."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from starcli.errors import StarlightError, UsageError
from starcli.reports.tables import table_text

from . import app, common

# Every kind a solution can have (records.register is called with one of these).
LIST_COLUMNS = ["id", "kind", "arch", "width", "seed", "dataset", "recipe", "epochs", "train_acc", "test_acc", "train_loss"]
# A star's own columns in `list`, shown when any listed solution is one (anchors_n: how many anchors).
STAR_COLUMNS = ["anchors_n", "t_sampling", "mu_star", "realign"]


@app.command()
@common.run_options
def train(
    recipe: str = typer.Option("mnist1d-mlp", "--recipe", "-r", help="Recipe name or path to a .toml file."),
    seed: str = typer.Option("1", "--seed", "-s", help="Seeds: 3, 1-5, 1,3,7, 1-3,9."),
    width: Optional[int] = typer.Option(None, "--width", help="Override the architecture's width."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the recipe's epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override the batch size."),
    set_: List[str] = typer.Option([], "--set", help="Any other setting, key=value (e.g. arch_kwargs.depth=2)."),
    compile_: bool = common.CompileOpt,
    device: str = common.DeviceOpt,
    data_dir: Optional[str] = common.DataDirOpt,
    download: bool = common.DownloadOpt,
    log: Optional[str] = common.LogOpt,
    log_dir: Optional[str] = common.LogDirOpt,
    json_: bool = common.JsonOpt,
    run=None,
) -> None:
    """Train one solution per seed and register it as an anchor (seeds already trained are skipped)."""
    # Usage errors first: a typo costs no torch import.
    seeds = common.ids(seed, "seed")
    common.check_recipe_name(recipe)
    from starcli.engine import recipes
    from starcli.solutions import records, training

    config = recipes.resolve(
        recipe, width=width, epochs=epochs, lr=lr, batch_size=batch_size, overrides=recipes.parse_set(set_),
        # The precision policy's defaults (bf16 + channels_last for convnets on CUDA) for the device the
        # runs will train on: a SLURM or Ray job's, not this machine's.
        device=run.policy_device(device),
        compile_step=compile_,
    )
    if run.executor == "local":
        common.device(device)  # remote executors resolve the device on their nodes
    reg = common.registry()
    tracking = common.tracking(reg, log, log_dir)
    rep = common.reporter()
    with rep.live():
        outcomes = training.train_where(
            reg, config, seeds, run=run, device=device, data_dir=data_dir, download=download, reporter=rep,
            tracking=tracking,
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
    seed: Optional[int] = typer.Option(None, "--seed", "-s"),
    width: Optional[int] = typer.Option(None, "--width"),
    device: str = common.DeviceOpt,
    data_dir: Optional[str] = common.DataDirOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Import an outside checkpoint (kind external); it must load strictly into the architecture."""
    from starcli.selectors import check_int, check_seed
    from starcli.solutions import imports, records

    kwargs = parse_json_object(arch_kwargs, "--arch-kwargs")
    check_seed(seed)
    check_int(width, "--width", 1, 1 << 20)
    mean_v, std_v = _floats(mean, "--mean"), _floats(std, "--std")
    common.device(device)
    # Every check before the registry is opened.
    prepared = imports.prepare(path, arch, dataset, kwargs, width, mean_v, std_v)
    reg = common.registry()
    sol, created = imports.register(
        reg, path, arch, dataset, arch_kwargs=kwargs, seed=seed, width=width, device=device, data_dir=data_dir,
        prepared=prepared,
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
    kind: Optional[str] = typer.Option(None, "--kind", help="anchor, star, soup, aligned or external."),
    arch: Optional[str] = typer.Option(None, "--arch"),
    dataset: Optional[str] = typer.Option(None, "--dataset"),
    width: Optional[int] = typer.Option(None, "--width"),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Only solutions of this recipe."),
    seed: Optional[str] = typer.Option(None, "--seed", "-s", help="Seeds: 3, 1-5, 1,3,7."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Only solutions with this tag."),
    json_: bool = common.JsonOpt,
    csv_: bool = common.CsvOpt,
    md: bool = common.MdOpt,
) -> None:
    """List registered solutions (a star also shows its anchor count, t-sampling, μ* and anchor alignment)."""
    from starcli.selectors import check_int
    from starcli.solutions import records

    fmt = common.one_format(json=json_, csv=csv_, md=md)
    records.check_kind(kind)
    check_int(width, "--width", 0, 2**63 - 1)
    seeds = common.ids(seed, "seed") if seed is not None else None
    reg = common.registry(create=False, read_only=True)
    sols = records.query(reg, kind, arch, dataset, width, recipe=recipe, tag=tag, seeds=seeds) if reg else []
    rows = [records.record(reg, s) | records.star_columns(s) for s in sols]
    if fmt == "json":
        common.echo_json(rows)
    elif not rows and fmt is None:
        filtered = any(v is not None for v in (kind, arch, dataset, width, recipe, seed, tag))
        where = "" if filtered and reg else f" in {common.home_folder()}" + ("" if reg else " (no registry there)")
        print("no solutions match these filters" if filtered and reg else
              f"no solutions registered yet{where}; train some with `starlight train --seed 1-5`, or pass --home",
              file=sys.stderr)  # fmt: skip
    else:
        columns = LIST_COLUMNS + (STAR_COLUMNS if any(r.get("anchors_n") for r in rows) else [])
        columns += ["tags"] if any(r["tags"] for r in rows) else []
        for r in rows:
            r["tags"] = ",".join(r["tags"])
        sys.stdout.write(table_text(common.flatten_metrics(rows), columns, fmt))


@app.command()
def show(id: str = typer.Argument(..., help="Solution id."), json_: bool = common.JsonOpt) -> None:
    """Show one solution with the settings that produced it."""
    from starcli.selectors import MAX_ID
    from starcli.solutions import records

    if not id.isascii() or not id.isdigit() or len(id) > 19 or int(id) > MAX_ID:
        raise UsageError(f"solution id must be an integer from 0 to {MAX_ID}, got {id!r}")
    sid = int(id)
    reg = common.registry(create=False, read_only=True)
    if reg is None:
        raise StarlightError(f"no solution with id {sid}: there is no registry in {common.home_folder()} yet (train some first, or pass --home)")
    rec = records.record(reg, records.get(reg, sid), full=True)
    if json_:
        common.echo_json(rec)
        return
    for key, value in rec.items():
        print(f"{key:>13}: {_shown(value)}")


def _shown(value) -> str:
    """A field as people read it: lists as words (`paper, appendix`), nothing as '-', mappings as JSON."""
    if value is None or value == [] or value == "":
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


@app.command()
def doctor(
    data_dir: Optional[str] = common.DataDirOpt,
    fix: bool = typer.Option(
        False, "--fix", help="Delete orphan checkpoints (put over 1 h ago) and stale runs/ folders (untouched 1 h, no training holds them)."
    ),
    json_: bool = common.JsonOpt,
) -> None:
    """Versions, devices, registry location, which datasets are available, and garbage (see --fix)."""
    from starcli.solutions import doctor as doc

    info = doc.report(common.state.home, data_dir, fix=fix)
    if json_:
        common.echo_json(info)
        return
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<14} {v}")
        elif isinstance(value, list):
            print(f"{key}: {', '.join(value) or 'none'}")
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
