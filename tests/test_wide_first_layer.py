"""Barriers of wide-input MLPs: the first layer's outputs computed once per solution give the plain
path's numbers."""

from __future__ import annotations

import pytest
import torch

from starcli import models
from starcli.engine.interpolation import LineEvaluator


def two_states(input_size: int, depth: int):
    kwargs = {"num_classes": 10, "in_chans": 1, "input_size": input_size, "width": 32, "depth": depth}
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append({k: v.clone() for k, v in models.create("mlp", **kwargs).state_dict().items()})
    return kwargs, states


def evaluators(kwargs, n: int = 700):
    g = torch.Generator().manual_seed(0)
    splits = {s: (torch.randn(n, 1, kwargs["input_size"], generator=g), torch.randint(0, 10, (n,), generator=g))
              for s in ("train", "test")}
    fast = LineEvaluator("mlp", kwargs, torch.device("cpu"), splits, None, batch_size=256)
    plain = LineEvaluator("mlp", kwargs, torch.device("cpu"), splits, None, batch_size=256)
    plain.first = None  # the plain path: every t through the whole network
    return fast, plain


@pytest.mark.parametrize("depth", [1, 2])
def test_a_wide_mlps_curve_equals_the_plain_paths_to_1e_6(depth):
    kwargs, (a, b) = two_states(784, depth)
    fast, plain = evaluators(kwargs)
    assert fast.first is not None
    ts = [0.1, 0.25, 0.5, 0.9]
    got, want = fast.curve(a, b, ts), plain.curve(a, b, ts)
    for split in want:
        assert got[split]["loss"] == pytest.approx(want[split]["loss"], abs=1e-6, rel=1e-6)
        assert got[split]["acc"] == pytest.approx(want[split]["acc"], abs=100 / 700 + 1e-9)  # a tie may flip one sample
    # The first layer of A was computed once, and is reused for the next pair.
    assert fast.first_outputs(a) is fast.first_outputs(a)


def test_a_narrow_input_keeps_the_plain_path():
    kwargs, _ = two_states(40, 1)
    fast, _ = evaluators(kwargs)
    assert fast.first is None
