"""export, import: solutions between registries (bundles) and out to the Hugging Face / timm layout."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from starcli.errors import UsageError
from starcli.selectors import MAX_IDS

from . import app, common


@app.command("export")
def export(
    ids: Optional[List[str]] = typer.Argument(None, help="Solutions: 3, 1-5 (several allowed: 9 6-8), or attributes like tag=paper; --hf takes one."),
    to: Optional[str] = typer.Option(None, "--to", help="An experiment tracker: mlflow | tensorboard | wandb (offline)."),
    log_dir: Optional[str] = typer.Option(
        None, "--log-dir", help="--to: folder (or MLflow tracking URI) to write to; default <home>/<tracker>."
    ),
    bundle: Optional[str] = typer.Option(
        None, "--bundle", help="Write a bundle (.tar, .tar.gz or .tgz; a new file unless --force) of the solutions, what they refer to, their checkpoints and barriers."
    ),
    hf: Optional[str] = typer.Option(None, "--hf", help="Write one solution as model.safetensors + config.json into this folder."),
    force: bool = typer.Option(False, "--force", help="--bundle/--hf: replace existing files (never links, folders or devices)."),
    json_: bool = common.JsonOpt,
) -> None:
    """Export solutions: to a tracker (--to: a run per solution and per stored pair among them), as a bundle
    for `starlight import` (--bundle), or as a checkpoint in the Hugging Face / timm layout (--hf)."""
    from starcli.solutions import bundles, tracking

    if sum(x is not None for x in (to, bundle, hf)) != 1:
        raise UsageError("say where, once: --to mlflow|tensorboard|wandb IDS, --bundle FILE IDS, or --hf DIR ID")
    if not ids:
        raise UsageError("name the solutions to export, e.g. starlight export --bundle stars.tar 1-5")
    if to is not None:
        tracking.check(to, "--to")
    if bundle is not None:
        bundles.bundle_mode(bundle)  # the name says the compression: checked before the registry is opened
    if hf == "":
        raise UsageError("--hf needs a folder, e.g. --hf hub/star9")
    chosen = list(dict.fromkeys(i for text in ids for i in common.solution_ids(text, "solution id")))
    if len(chosen) > MAX_IDS:
        raise UsageError(f"name at most {MAX_IDS:,} solutions at once, got {len(chosen):,}")
    if hf is not None and len(chosen) != 1:
        raise UsageError(f"--hf writes one checkpoint; got {len(chosen)} ids")
    reg = common.registry(create=False, read_only=to is None)
    if reg is None:
        raise UsageError("there is no registry here yet (see --home)")
    if to is not None:
        result = tracking.export(reg, to, chosen, log_dir)
    elif bundle is not None:
        result = bundles.export_bundle(reg, chosen, bundle, force)
    else:
        result = bundles.export_hf(reg, chosen[0], hf, force)
    if json_:
        common.echo_json(result)
    elif to is not None:
        print(
            f"exported {len(result['solutions'])} solutions and {len(result['pairs'])} pairs to {to} at "
            f"{result['destination']}"
        )
    elif bundle is not None:
        print(f"wrote {result['file']}: {len(result['solutions'])} solution(s) ({','.join(map(str, result['solutions']))}), "
              f"{result['blobs']} checkpoint(s), {result['barriers']} barrier row(s)"
              + (f", {result['landscapes']} instrument row(s)" if result.get("landscapes") else ""))
    else:
        print(f"wrote solution {result['solution']} to {result['folder']}/ (model.safetensors, config.json)")


@app.command("import")
def import_(
    path: str = typer.Argument(..., help="A bundle written by `starlight export --bundle`."),
    json_: bool = common.JsonOpt,
) -> None:
    """Add a bundle's solutions and barrier rows to this registry (ids remapped; solutions already here kept)."""
    from starcli.solutions import bundles

    if not path.strip():
        raise UsageError("name the bundle to import, e.g. starlight import stars.tar.gz")
    bundle = bundles.checked_bundle(path)  # a bad bundle is refused before the registry is opened or made
    reg = common.registry()
    result = bundles.import_bundle(reg, bundle)
    if json_:
        common.echo_json(result)
        return
    pairs = ", ".join(f"{a}→{b}" for a, b in result["ids"].items())
    print(f"imported {len(result['added'])} new solution(s), kept {len(result['kept'])} already here, "
          f"{result['barriers']} barrier row(s)" + (f", {result['landscapes']} instrument row(s)" if result.get("landscapes") else "")
          + f"; ids {pairs}")
    if not result["added"]:
        print("nothing new: every solution of the bundle was already registered", file=sys.stderr)
