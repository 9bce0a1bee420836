"""Weight matching (Ainsworth et al., Git Re-Basin): permute B's hidden units to best match A's.

Coordinate descent over permutation groups in a seeded random order. For group g, with every other
group's current permutation applied to B, C[i, j] = Σ over the axes g permutes of ⟨A row i, B row j⟩,
and the new permutation solves the linear assignment max Σ C[i, π(i)]. Stop when no group improves.

Two things make it fast without changing the result: B is kept with all current permutations
applied (a group's correlation is read from it with its own permutation undone, instead of
re-permuting every tensor at every step), and a group is solved again only when a group it shares
a tensor with has changed since (otherwise its assignment problem is the same as last time).
"""

from __future__ import annotations

from typing import Mapping

import torch

from .spec import PermutationSpec, permute_entry

MAX_SWEEPS = 200


@torch.no_grad()
def weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """group → LongTensor permutation (CPU) such that `apply_permutation(spec, perms, state_b)` ≈ A."""
    # Running statistics are permuted with their layer but are not weights to match.
    names = [n for n in spec.axes if n not in spec.buffers and state_a[n].is_floating_point()]
    members = {g: [m for m in ms if m[0] in names] for g, ms in spec.members().items()}
    a_rows = {m: _rows(state_a[m[0]].float(), m, spec.sizes[g]) for g, ms in members.items() for m in ms}
    b = {n: state_b[n].float() for n in names}
    current = dict(b)  # B with every current permutation applied
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
    neighbours = {g: _neighbours(spec, ms) for g, ms in members.items()}
    groups = list(spec.sizes)
    stale = set(groups)  # groups whose assignment problem may have changed since last solved
    # Imported here: scipy.optimize costs ~0.5 s of start-up that `spec` and cached barriers never need.
    from scipy.optimize import linear_sum_assignment

    rng = torch.Generator().manual_seed(seed)
    for _ in range(MAX_SWEEPS):
        if not stale:
            break
        for i in torch.randperm(len(groups), generator=rng).tolist():
            g = groups[i]
            if g not in stale:
                continue
            stale.discard(g)
            corr = _correlation(g, members[g], a_rows, current, perms[g], spec)
            _, cols = linear_sum_assignment(corr, maximize=True)
            rows = range(len(cols))
            old, new = corr[rows, perms[g].numpy()].sum(), corr[rows, cols].sum()
            if new > old + 1e-9 * abs(old) + 1e-12:
                perms[g] = torch.as_tensor(cols, dtype=torch.long)
                for n in {n for n, _, _ in members[g]}:
                    current[n] = permute_entry(b[n], spec.axes[n], perms, spec.sizes)
                stale |= {h for h in groups if g in neighbours[h]}
    return perms


def _neighbours(spec: PermutationSpec, members: list[tuple[str, int, int]]) -> set[str]:
    """The groups whose permutations enter a group's correlation: every other segment of its tensors."""
    out: set[str] = set()
    for name, axis, offset in members:
        for k, segments in enumerate(spec.axes[name]):
            pos = 0
            for seg in segments or ():
                if isinstance(seg, str) and (k, pos) != (axis, offset):
                    out.add(seg)
                pos += seg if isinstance(seg, int) else spec.sizes[seg]
    return out


def _rows(t: torch.Tensor, member: tuple[str, int, int], n: int) -> torch.Tensor:
    """The slice of `t` that one group permutes, as (group size, everything else)."""
    _, axis, offset = member
    return t.narrow(axis, offset, n).movedim(axis, 0).reshape(n, -1)


def _correlation(g, members, a_rows, current, perm, spec) -> "numpy.ndarray":  # noqa: F821
    """C[i, j] = Σ ⟨A row i, B row j⟩, B with the other groups' permutations applied.

    `current` also has g's own permutation applied: its row k is B's row perm[k], so the columns
    are put back in B's order (C[:, perm] = C_current)."""
    n = spec.sizes[g]
    corr_current = None
    for m in members:
        term = a_rows[m] @ _rows(current[m[0]], m, n).T
        corr_current = term if corr_current is None else corr_current.add_(term)
    corr_current = (corr_current if corr_current is not None else torch.zeros(n, n)).double().cpu()
    corr = torch.empty_like(corr_current)
    corr[:, perm] = corr_current
    return corr.numpy()
