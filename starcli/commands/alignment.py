"""align, spec: permutation alignment from the command line (the engine is starcli/alignment/)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from starcli.cli import app
from starcli.errors import StarlightError, UsageError

from . import common


@app.command()
def align(
    source: str = typer.Argument(..., help="Solution id to permute (B)."),
    to: str = typer.Option(..., "--to", help="Solution id to match (A)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the order in which weight matching visits groups."),
    device: str = common.DeviceOpt,
    json_: bool = common.JsonOpt,
) -> None:
    """Register B with its hidden units permuted to match A (weight matching); it computes B's function."""
    from starcli import solutions
    from starcli.alignment.aligned import align_solution

    b, a = _solution_id(source, "B"), _solution_id(to, "--to")
    reg = common.registry(create=False)
    if reg is None:
        raise StarlightError(f"no solution with id {b}: there is no registry here yet (train some first)")
    sol, created = align_solution(reg, b, a, seed=seed, device=device)
    if json_:
        common.echo_json(solutions.record(reg, sol))
        return
    m = sol.metrics
    verb = "aligned" if created else "already aligned"
    print(
        f"{verb} solution {b} to {a} as solution {sol.id}: "
        f"‖θ_A − θ_B‖ {m['l2_to_target_unaligned']:.4g} → {m['l2_to_target']:.4g}"
    )


@app.command()
def spec(
    arch: str = typer.Option(..., "--arch", help="Architecture name (ours or any timm model)."),
    arch_kwargs: Optional[str] = typer.Option(None, "--arch-kwargs", help='JSON, e.g. \'{"width": 8}\'.'),
    json_: bool = common.JsonOpt,
) -> None:
    """Show the permutation groups derived for an architecture and their self-check (exit 1 if it fails)."""
    import warnings

    from starcli import alignment, models

    from .solutions import parse_json_object

    kwargs = parse_json_object(arch_kwargs, "--arch-kwargs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpermuted layers are listed below instead
        check = alignment.self_check(arch, kwargs)
    sp = check.spec
    with _meta_device():
        state = models.create(arch, **kwargs).state_dict()
    members = sp.members()
    groups = [{"group": g, "size": n, "tensors": len({m[0] for m in members[g]})} for g, n in sp.sizes.items()]
    if json_:
        common.echo_json(
            {
                "arch": arch,
                "arch_kwargs": kwargs,
                "groups": groups,
                "coverage": sp.coverage(state),
                "self_check": check.to_dict(),
                "unpermuted": sp.unpermuted,
                "spec": sp.to_dict(),
            }
        )
    else:
        sys.stdout.write(common.table_text(groups, ["group", "size", "tensors"], None))
        print(f"{len(groups)} permutation groups cover {100 * sp.coverage(state):.1f}% of the parameters")
        for layer, reason in sp.unpermuted.items():
            print(f"not permuted: {layer} ({reason})")
        print(check.summary())
    if not check.ok:
        raise StarlightError(f"the permutation spec of {arch} failed its self-check; alignment refuses to use it")


def _solution_id(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be a solution id (an integer), got {text!r}") from None


def _meta_device():
    import torch

    return torch.device("meta")  # shapes only: no memory, no initialisation
