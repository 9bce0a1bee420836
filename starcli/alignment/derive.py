"""Deriving a permutation spec: trace the network (tracing.py), apply each operation's rule (rules.py),
and read the groups of tied axes off the union-find (`derive_spec`). Its own module so that rules.py
and tracing.py import in one direction only."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import rules
from .spec import PermutationSpec
from .tracing import Atoms, Derivation, trace


def derive_spec(model: nn.Module, example: torch.Tensor) -> PermutationSpec:
    """Trace `model` (eval mode) on `example` and derive its permutation spec."""
    was_training = model.training
    model.eval()
    try:
        graph = trace(model, example)
    finally:
        model.train(was_training)
    d = Derivation(model, graph)
    for node in graph.nodes:
        d.node = node
        d.values[node] = rules.apply(d, node)
    return _extract(d)


def _extract(d: Derivation) -> PermutationSpec:
    atoms = d.atoms
    entries = [(name, d.canonical[name]) for name in d.canonical if d.canonical[name] in d.params]
    resolved = {canon: [atoms.resolve(axis) for axis in d.params[canon]] for _, canon in entries}
    names = _group_names(atoms, entries, resolved)
    sizes: dict[str, int] = {}
    axes: dict[str, tuple] = {}
    unpermuted: dict[str, str] = {}
    for name, canon in entries:  # entries never used in the forward are left alone
        entry = []
        for axis_atoms in resolved[canon]:
            segments: list = []
            for a in axis_atoms:
                if atoms.is_free(a):
                    segments.append(names[atoms.find(a)])
                    sizes.setdefault(segments[-1], atoms.size[a])
                elif segments and isinstance(segments[-1], int):
                    segments[-1] += atoms.size[a]
                else:
                    segments.append(atoms.size[a])
            entry.append(tuple(segments) if any(isinstance(s, str) for s in segments) else None)
        if any(entry):
            axes[name] = tuple(entry)
        if name == canon and _is_layer_weight(name, entry) and not entry[0]:
            reason = atoms.reason.get(atoms.find(resolved[canon][0][0]), "")
            if not reason.startswith("network"):
                unpermuted[name.rsplit(".", 1)[0]] = reason
    buffers = {k for k, _ in d.model.named_buffers()}
    return PermutationSpec(axes, sizes, frozenset(k for k in axes if k in buffers), unpermuted)


def _is_layer_weight(name: str, axes: list) -> bool:
    return name.endswith("weight") and len(axes) >= 2


def _group_names(atoms: Atoms, entries, resolved) -> dict[int, str]:
    """Name each group after the layer whose outputs it permutes (`layer1.0.conv1`); a group no
    layer produces (a token embedding, say) after the first axis it permutes (`cls_token:2`)."""
    names: dict[int, str] = {}
    used: set[str] = set()

    def assign(root: int, name: str) -> None:
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}#{k}"
        used.add(name)
        names[root] = name

    for _, canon in entries:
        first = resolved[canon][0] if resolved[canon] else ()
        roots = {atoms.find(a) for a in first}
        if _is_layer_weight(canon, resolved[canon]) and len(roots) == 1 and atoms.is_free(first[0]):
            if atoms.find(first[0]) not in names:  # one group, possibly repeated (gate and value halves)
                assign(atoms.find(first[0]), canon.rsplit(".", 1)[0])
    for _, canon in entries:
        for axis, axis_atoms in enumerate(resolved[canon]):
            offset = 0
            for a in axis_atoms:
                if atoms.is_free(a) and atoms.find(a) not in names:
                    assign(atoms.find(a), f"{canon}:{axis}" + (f"@{offset}" if offset else ""))
                offset += atoms.size[a]
    return names
