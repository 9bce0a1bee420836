"""export, import: solutions between registries (bundles) and out to the Hugging Face / timm layout."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from starcli.errors import UsageError

from . import app, common


@app.command("export")
def export(
    ids: Optional[str] = typer.Argument(None, help="Solution ids (1-5, 3,7); --hf takes one."),
    bundle: Optional[str] = typer.Option(
        None, "--bundle", help="Write a bundle (.tar, or .tar.gz) of the solutions, what they refer to, their checkpoints and barriers."
    ),
    hf: Optional[str] = typer.Option(None, "--hf", help="Write one solution as model.safetensors + config.json into this folder."),
    json_: bool = common.JsonOpt,
) -> None:
    """Export solutions: a bundle for `starlight import`, or a checkpoint in the Hugging Face / timm layout."""
    from starcli.solutions import bundles

    if (bundle is None) == (hf is None):
        raise UsageError("say where: --bundle FILE IDS, or --hf DIR ID")
    if not ids:
        raise UsageError("name the solutions to export, e.g. starlight export --bundle stars.tar 1-5")
    chosen = common.ids(ids, "solution id")
    if hf is not None and len(chosen) != 1:
        raise UsageError(f"--hf writes one checkpoint; got {len(chosen)} ids")
    reg = common.registry(create=False)
    if reg is None:
        raise UsageError("there is no registry here yet (see --home)")
    result = bundles.export_bundle(reg, chosen, bundle) if bundle is not None else bundles.export_hf(reg, chosen[0], hf)
    if json_:
        common.echo_json(result)
    elif bundle is not None:
        print(f"wrote {result['file']}: {len(result['solutions'])} solution(s) ({','.join(map(str, result['solutions']))}), "
              f"{result['blobs']} checkpoint(s), {result['barriers']} barrier row(s)")
    else:
        print(f"wrote solution {result['solution']} to {result['folder']}/ (model.safetensors, config.json)")


@app.command("import")
def import_(
    path: str = typer.Argument(..., help="A bundle written by `starlight export --bundle`."),
    json_: bool = common.JsonOpt,
) -> None:
    """Add a bundle's solutions and barrier rows to this registry (ids remapped; solutions already here kept)."""
    from starcli.solutions import bundles

    reg = common.registry()
    result = bundles.import_bundle(reg, path)
    if json_:
        common.echo_json(result)
        return
    pairs = ", ".join(f"{a}→{b}" for a, b in result["ids"].items())
    print(f"imported {len(result['added'])} new solution(s), kept {len(result['kept'])} already here, "
          f"{result['barriers']} barrier row(s); ids {pairs}")
    if not result["added"]:
        print("nothing new: every solution of the bundle was already registered", file=sys.stderr)
