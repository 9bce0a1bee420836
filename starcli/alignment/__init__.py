"""Permutation alignment for any architecture: derived, self-checked specs and weight matching.

    spec_for(arch, arch_kwargs)        the permutation spec (cached, self-checked; StarlightError if none)
    has_spec(arch, arch_kwargs)        whether spec_for would succeed (never raises)
    self_check(arch, arch_kwargs)      the SelfCheck of the derived spec (ok, max |Δlogit| ...)
    weight_matching(spec, a, b, seed)  group → permutation of B's units matching A's
    apply_permutation(spec, perms, s)  a permuted copy of a state dict
    align_state(arch, kw, a, b, seed)  B permuted to match A, in one call
    activation_matching(spec, model, a, b, x)   group → permutation from features' correlations on x
    align_state_by_activation(arch, kw, a, b, x)  B permuted to fire like A on x, in one call
    register_spec(arch, builder)       a hand-written spec for an architecture the tracer cannot handle
    describe(arch, kw)                 groups, coverage and self-check, as `starlight spec` shows them

Modules: spec.py (the data), tracing.py + rules.py + derive.py (deriving it), selfcheck.py (proving it),
weight_matching.py and activation_matching.py (using it). Registering an aligned copy is starcli/solutions/aligned.py.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from starcli import models
from starcli.errors import StarlightError

from . import selfcheck
from .activation_matching import activation_matching
from .derive import derive_spec
from .selfcheck import SelfCheck
from .spec import PermutationSpec, apply_permutation
from .weight_matching import weight_matching

__all__ = [
    "PermutationSpec",
    "SelfCheck",
    "activation_matching",
    "align_state",
    "align_state_by_activation",
    "apply_permutation",
    "has_spec",
    "register_spec",
    "self_check",
    "spec_for",
    "weight_matching",
]

_HAND_WRITTEN: dict[str, Callable[[nn.Module], PermutationSpec]] = {}
_CACHE: dict[tuple[str, str], SelfCheck | StarlightError] = {}


def register_spec(arch: str, builder: Callable[[nn.Module], PermutationSpec]) -> None:
    """Use `builder(model)` instead of tracing for `arch` (e.g. via PermutationSpec.from_axes); the
    result is self-checked like a derived spec."""
    _HAND_WRITTEN[arch] = builder
    for key in [k for k in _CACHE if k[0] == arch]:
        del _CACHE[key]


def self_check(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> SelfCheck:
    """Derive (or build) the spec of `arch` and check it; raises only if no spec can be made."""
    key = (arch, json.dumps(dict(arch_kwargs or {}), sort_keys=True, default=str))
    if key not in _CACHE:
        try:
            _CACHE[key] = _derive_and_check(arch, dict(arch_kwargs or {}))
        except StarlightError as e:
            _CACHE[key] = e
    result = _CACHE[key]
    if isinstance(result, StarlightError):
        raise result
    return result


def spec_for(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> PermutationSpec:
    result = self_check(arch, arch_kwargs)
    if not result.ok:
        raise StarlightError(
            f"the permutation spec derived for {arch} failed its self-check ({result.summary()}); "
            "please report it, or write a spec by hand (starcli.alignment.register_spec)"
        )
    return result.spec


def has_spec(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> bool:
    try:
        spec_for(arch, arch_kwargs)
        return True
    except Exception:  # callers choose a default with this; a failed derivation must not stop them
        return False


def align_state(
    arch: str,
    arch_kwargs: Mapping[str, Any] | None,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A copy of `state_b` with its hidden units permuted to match `state_a`; it computes the same
    function as `state_b`."""
    spec = spec_for(arch, arch_kwargs)
    return apply_permutation(spec, weight_matching(spec, state_a, state_b, seed=seed), state_b)


def align_state_by_activation(
    arch: str,
    arch_kwargs: Mapping[str, Any] | None,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    x: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """A copy of `state_b` with its hidden units permuted so that they fire like A's on the inputs `x`
    (activation matching, on the same self-checked spec as weight matching)."""
    spec = spec_for(arch, arch_kwargs)
    model = models.create(arch, **dict(arch_kwargs or {})).to(x.device)
    return apply_permutation(spec, activation_matching(spec, model, state_a, state_b, x), state_b)


def _derive_and_check(arch: str, arch_kwargs: dict[str, Any]) -> SelfCheck:
    model = models.create(arch, **arch_kwargs).eval()
    example = selfcheck.example_input(arch, arch_kwargs, model)
    if arch in _HAND_WRITTEN:
        spec = _HAND_WRITTEN[arch](model)
    else:
        spec = derive_spec(model, example)
    if spec.unpermuted:
        layers = sorted(spec.unpermuted)
        shown = ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
        warnings.warn(
            f"{arch}: {len(layers)} hidden layers keep their unit order ({shown}: "
            f"{spec.unpermuted[layers[0]]}); alignment permutes the rest",
            stacklevel=3,
        )
    return selfcheck.check(spec, model, example)


def describe(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What `starlight spec` shows: the permutation groups of `arch`, how much of its parameters they
    cover, the layers left unpermuted and the self-check (`ok` False when it failed)."""
    kwargs = dict(arch_kwargs or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpermuted layers are listed in the result instead
        check = self_check(arch, kwargs)
    spec = check.spec
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        state = models.create(arch, **kwargs).state_dict()
    members = spec.members()
    groups = [{"group": g, "size": n, "tensors": len({m[0] for m in members[g]})} for g, n in spec.sizes.items()]
    return {
        "arch": arch,
        "arch_kwargs": kwargs,
        "groups": groups,
        "coverage": spec.coverage(state),
        "self_check": check.to_dict(),
        "unpermuted": spec.unpermuted,
        "spec": spec.to_dict(),
        "ok": check.ok,
        "summary": check.summary(),
    }
