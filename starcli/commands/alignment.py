"""align, spec: permutation alignment from the command line (the engine is starcli/alignment/)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from starcli.errors import StarlightError, UsageError
from starcli.reports.tables import table_text

from . import app, common


@app.command()
def align(
    source: str = typer.Argument(..., help="Solution id to permute (B)."),
    to: str = typer.Option(..., "--to", help="Solution id to match (A)."),
    method: str = typer.Option(
        "weight", "--method", help="weight: match weights (Git Re-Basin §3.2) | activation: match hidden features' "
        "correlations on --calibration training samples (§3.1)."
    ),
    calibration: str = typer.Option(
        "full", "--calibration", help="--method activation: full, or N training samples (a fixed seeded subset)."
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the order in which weight matching visits groups."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Register B with its hidden units permuted to match A (weight or activation matching); it computes
    B's function."""
    from starcli.selectors import check_seed
    from starcli.solutions import records
    from starcli.solutions.aligned import METHODS, align_solution, parse_calibration

    b, a = _solution_id(source, "B"), _solution_id(to, "--to")
    if a == b:
        raise UsageError(f"solution {b} cannot be aligned to itself; name another --to")
    check_seed(seed)
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    parse_calibration(calibration)
    common.device(device)
    reg = common.registry(create=False)
    if reg is None:
        raise StarlightError(f"no solution with id {b}: there is no registry here yet (train some first)")
    sol, created = align_solution(reg, b, a, seed=seed, device=device, method=method, calibration=calibration)
    if json_:
        common.echo_json(records.record(reg, sol))
        return
    m = sol.metrics
    verb = "aligned" if created else "already aligned"
    print(
        f"{verb} solution {b} to {a} as solution {sol.id} ({method} matching): "
        f"‖θ_A − θ_B‖ {m['l2_to_target_unaligned']:.4g} → {m['l2_to_target']:.4g}"
    )


@app.command()
def spec(
    arch: str = typer.Option(..., "--arch", help="Architecture name (ours or any timm model)."),
    arch_kwargs: Optional[str] = typer.Option(None, "--arch-kwargs", help='JSON, e.g. \'{"width": 8}\'.'),
    json_: bool = common.JsonOpt,
) -> None:
    """Show the permutation groups derived for an architecture and their self-check (exit 1 if it fails)."""
    from starcli import alignment
    from starcli.engine.config import check_arch

    from .solutions import parse_json_object

    kwargs = parse_json_object(arch_kwargs, "--arch-kwargs")
    check_arch(arch, kwargs, None, {"arch": "--arch", **{f"arch_kwargs.{k}": "--arch-kwargs" for k in kwargs}})
    info = alignment.describe(arch, kwargs)
    if json_:
        common.echo_json({k: v for k, v in info.items() if k not in ("ok", "summary")})
    else:
        sys.stdout.write(table_text(info["groups"], ["group", "size", "tensors"], None))
        print(f"{len(info['groups'])} permutation groups cover {100 * info['coverage']:.1f}% of the parameters")
        for layer, reason in info["unpermuted"].items():
            print(f"not permuted: {layer} ({reason})")
        print(info["summary"])
    if not info["ok"]:
        raise StarlightError(f"the permutation spec of {arch} failed its self-check; alignment refuses to use it")


def _solution_id(text: str, what: str) -> int:
    from starcli.selectors import MAX_ID

    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise UsageError(f"{what} must be a solution id (an integer from 0 to {MAX_ID}), got {text!r}")
    return int(text)
