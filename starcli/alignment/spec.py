"""Permutation specs as plain data (git-re-basin style), and applying permutations to a state dict.

A spec maps each permuted state-dict entry to one item per axis:
- None: the axis is never permuted (kernel taps, the network's input and output features...);
- a tuple of segments whose permutations, concatenated, act on the axis. A segment is a group name
  (permuted by that group) or an int n (n positions that stay in place). Plain residual or sequential
  networks have one-group tuples; DenseNet's concatenated features have one segment per layer.

`perms[group]` is an index: the permuted tensor's position i holds the original position perms[group][i]
(`tensor.index_select(axis, perm)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

import torch

from starcli.errors import StarlightError

Segment = Union[str, int]
AxisSpec = Union[tuple[Segment, ...], None]


@dataclass
class PermutationSpec:
    axes: dict[str, tuple[AxisSpec, ...]]
    sizes: dict[str, int]
    # Entries permuted with the parameters but left out of matching (BatchNorm running statistics).
    buffers: frozenset[str] = frozenset()
    # Layers whose outputs keep their order although they are hidden, and why (e.g. attention heads).
    unpermuted: dict[str, str] = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        return list(self.sizes)

    def members(self) -> dict[str, list[tuple[str, int, int]]]:
        """group → every (entry, axis, offset within the axis) it permutes."""
        out: dict[str, list[tuple[str, int, int]]] = {g: [] for g in self.sizes}
        for name, axes in self.axes.items():
            for axis, segments in enumerate(axes):
                offset = 0
                for seg in segments or ():
                    if isinstance(seg, str):
                        out[seg].append((name, axis, offset))
                    offset += self._length(seg)
        return out

    def coverage(self, state: Mapping[str, torch.Tensor]) -> float:
        """Fraction of parameter elements (buffers excluded) that some group permutes."""
        params = {k: v for k, v in state.items() if k not in self.buffers and v.is_floating_point()}
        total = sum(v.numel() for v in params.values())
        covered = sum(v.numel() for k, v in params.items() if any(self.axes.get(k, ())))
        return covered / total if total else 0.0

    def to_dict(self) -> dict:
        return {
            "sizes": dict(self.sizes),
            "axes": {k: [list(a) if a else None for a in v] for k, v in self.axes.items()},
            "buffers": sorted(self.buffers),
            "unpermuted": dict(self.unpermuted),
        }

    def _length(self, seg: Segment) -> int:
        return seg if isinstance(seg, int) else self.sizes[seg]

    @classmethod
    def from_axes(cls, axes: Mapping[str, tuple], state: Mapping[str, torch.Tensor], buffers=()) -> "PermutationSpec":
        """A hand-written spec, git-re-basin style: entry → one group name (or None, or a tuple of
        segments) per axis. Group sizes are read off the state's shapes and must agree everywhere."""
        norm: dict[str, tuple[AxisSpec, ...]] = {}
        sizes: dict[str, int] = {}
        for name, spec_axes in axes.items():
            if name not in state:
                raise StarlightError(f"hand-written spec names {name!r}, which is not in the state dict")
            shape = tuple(state[name].shape)
            if len(spec_axes) != len(shape):
                raise StarlightError(f"hand-written spec gives {len(spec_axes)} axes for {name!r} of shape {shape}")
            norm[name] = tuple((a,) if isinstance(a, str) else (tuple(a) if a else None) for a in spec_axes)
            for axis, segs in enumerate(norm[name]):
                if segs and len(segs) == 1 and isinstance(segs[0], str):
                    if sizes.setdefault(segs[0], shape[axis]) != shape[axis]:
                        raise StarlightError(
                            f"group {segs[0]!r} has size {sizes[segs[0]]} elsewhere but {shape[axis]} on {name!r} axis {axis}"
                        )
        spec = cls(norm, sizes, frozenset(buffers))
        for name, spec_axes in norm.items():
            for axis, segs in enumerate(spec_axes):
                missing = [s for s in segs or () if isinstance(s, str) and s not in sizes]
                if missing:
                    raise StarlightError(f"group {missing[0]!r} on {name!r} axis {axis} has no size: use it alone on some axis")
                if segs and sum(map(spec._length, segs)) != state[name].shape[axis]:
                    raise StarlightError(f"the segments of {name!r} axis {axis} do not add up to {state[name].shape[axis]}")
        return spec


def axis_index(segments: tuple[Segment, ...], perms: Mapping[str, torch.Tensor], sizes: Mapping[str, int]) -> torch.Tensor:
    """The index that permutes one axis: each segment's permutation, shifted to the segment's offset."""
    parts, offset = [], 0
    for seg in segments:
        n = seg if isinstance(seg, int) else sizes[seg]
        perm = perms.get(seg) if isinstance(seg, str) else None
        parts.append((perm.cpu() if perm is not None else torch.arange(n)) + offset)
        offset += n
    return torch.cat(parts)


def permute_entry(tensor: torch.Tensor, axes: tuple[AxisSpec, ...], perms, sizes) -> torch.Tensor:
    for axis, segments in enumerate(axes):
        if segments:
            tensor = tensor.index_select(axis, axis_index(segments, perms, sizes).to(tensor.device))
    return tensor


@torch.no_grad()
def apply_permutation(
    spec: PermutationSpec, perms: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A permuted copy of `state`: parameters and running statistics alike; entries the spec does not
    name (num_batches_tracked, the classifier's outputs...) are copied unchanged. Groups missing
    from `perms` stay in place."""
    missing = [k for k in spec.axes if k not in state]
    if missing:
        raise StarlightError(f"the state dict lacks {missing[0]!r} that the permutation spec names: wrong architecture?")
    out = {}
    for k, v in state.items():
        permuted = permute_entry(v, spec.axes[k], perms, spec.sizes) if k in spec.axes else v
        out[k] = v.clone() if permuted is v else permuted
    return out
