"""Planes (issue 22 item 3): the grid equals a plain loop at the same points (loss-landscapes'
planar_interpolation semantics: a deep copy per point, the state loaded, BatchNorm re-estimated, a plain
evaluation), the basis is orthonormal and puts the solutions where their distances say, random
directions are filter-normalised, a killed grid resumes where it stopped, bad input is one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from starcli.engine import planes
from starcli.solutions import anchors as anchor_training


def _state(seed: int, bn: bool) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 12)] + ([nn.BatchNorm1d(12)] if bn else []) + [nn.ReLU(), nn.Linear(12, 3)]
    return nn.Sequential(*layers)


def _plain_point(a: dict, b: dict, c: dict, x: float, y: float) -> dict:
    """θ(x, y) from flattened vectors and a textbook Gram–Schmidt, independent of engine/planes.py."""
    keys = [k for k, v in a.items() if v.is_floating_point()]
    flat = lambda s: torch.cat([s[k].double().reshape(-1) for k in keys])  # noqa: E731
    fa, fb, fc = flat(a), flat(b), flat(c)
    e1 = (fb - fa) / (fb - fa).norm()
    w = (fc - fa) - torch.dot(fc - fa, e1) * e1
    e2 = w / w.norm()
    p = fa + x * e1 + y * e2
    out, i = dict(a), 0
    for k in keys:
        n = a[k].numel()
        out[k] = p[i : i + n].view_as(a[k]).to(a[k].dtype)
        i += n
    return out


def _plain_eval(net: nn.Module, state: dict, x, y, calibration) -> tuple[float, float]:
    net = copy.deepcopy(net)
    net.load_state_dict(state)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    if bns:  # swa_utils.update_bn's recipe: reset, cumulative average, one pass in train mode
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        net.train()
        with torch.no_grad():
            net(calibration)
    net.eval()
    with torch.no_grad():
        out = net(x)
    return F.cross_entropy(out, y).item(), 100.0 * (out.argmax(1) == y).sum().item() / len(y)


@pytest.mark.parametrize("bn", [False, True])
def test_the_grid_equals_a_plain_loop_at_the_same_points(bn):
    nets = [_state(s, bn) for s in (0, 1, 2)]
    a, b, c = (n.state_dict() for n in nets)
    x, y = torch.randn(300, 5), torch.randint(0, 3, (300,))
    calibration = x[:200]
    basis = planes.three_point_basis(a, b, c)
    xs, ys = planes.grid_axes(basis, 5, 0.25)
    ev = planes.PlaneEvaluator(copy.deepcopy(nets[0]), torch.device("cpu"), {"train": (x, y)}, calibration)
    assert (ev.stack is None) == bn  # without BatchNorm this net takes the Linear/ReLU path
    others = {k: v for k, v in a.items() if not v.is_floating_point()}
    grid = planes.evaluate_grid(ev, basis, others, xs, ys)
    for i, py in enumerate(ys):
        for j, px in enumerate(xs):
            loss, acc = _plain_eval(nets[0], _plain_point(a, b, c, px, py), x, y, calibration)
            assert grid["train"]["loss"][i][j] == pytest.approx(loss, rel=1e-5, abs=1e-6)
            assert grid["train"]["acc"][i][j] == pytest.approx(acc, abs=1e-9)


def test_batchnorm_is_re_estimated_in_row_slices_with_the_numbers_of_whole_batches(monkeypatch):
    """On a CPU the calibration streams in cache-sized row slices (as a barrier's line does): with slices
    smaller than the calibration set, the grid equals the plain loop (1e-5) and the unsliced estimate
    (PyTorch's train-mode kernel) to 1e-6 relative, so grids stored before and after read the same."""
    nets = [_state(s, True) for s in (0, 1, 2)]
    a, b, c = (n.state_dict() for n in nets)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 5, generator=g), torch.randint(0, 3, (300,), generator=g)
    calibration = x[:200]
    basis = planes.three_point_basis(a, b, c)
    xs, ys = planes.grid_axes(basis, 4, 0.25)
    others = {k: v for k, v in a.items() if not v.is_floating_point()}
    grids = {}
    for streamed in (True, False):
        monkeypatch.setattr(planes.interpolation, "STREAM_CALIBRATION", streamed)
        ev = planes.PlaneEvaluator(copy.deepcopy(nets[0]), torch.device("cpu"), {"train": (x, y)}, calibration, 128)
        ev.rows = 48  # slices of 48 rows within calibration batches of 100 (200 samples, batch size 128)
        grids[streamed] = planes.evaluate_grid(ev, basis, others, xs, ys)
    for i, py in enumerate(ys):
        for j, px in enumerate(xs):
            state = _plain_point(a, b, c, px, py)
            net = copy.deepcopy(nets[0])
            net.load_state_dict(state)
            loss, acc = _plain_eval_batches(net, x, y, calibration, 128)
            got = grids[True]["train"]
            assert got["loss"][i][j] == pytest.approx(loss, rel=1e-5, abs=1e-6)
            assert got["loss"][i][j] == pytest.approx(grids[False]["train"]["loss"][i][j], rel=1e-6)
            assert got["acc"][i][j] == acc == grids[False]["train"]["acc"][i][j]


def _plain_eval_batches(net: nn.Module, x, y, calibration, batch_size: int) -> tuple[float, float]:
    """swa_utils.update_bn's recipe over near-equal calibration batches (a cumulative average), then a
    plain evaluation."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for chunk in torch.tensor_split(calibration, -(-len(calibration) // batch_size)):
            net(chunk)
    net.eval()
    with torch.no_grad():
        out = net(x)
    return F.cross_entropy(out, y).item(), 100.0 * (out.argmax(1) == y).sum().item() / len(y)


def _deeper(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16, bias=False), nn.ReLU(),
                         nn.Linear(16, 4))


def test_the_linear_relu_path_equals_the_plain_loop_and_the_general_path():
    """A deeper stack (Flatten first, a Linear without bias, two splits, samples in several column chunks):
    the row-at-a-time path from P0 + x·P1 + y·P2 gives the plain loop's numbers, and the general path's
    (whole network per point) to 1e-6 relative, so a grid stored by either reads the same; accuracies exact."""
    nets = [_deeper(s) for s in (0, 1, 2)]
    a, b, c = (n.state_dict() for n in nets)
    g = torch.Generator().manual_seed(0)
    splits = {"train": (torch.randn(500, 2, 5, generator=g), torch.randint(0, 4, (500,), generator=g)),
              "test": (torch.randn(130, 2, 5, generator=g), torch.randint(0, 4, (130,), generator=g))}
    basis = planes.three_point_basis(a, b, c)
    xs, ys = planes.grid_axes(basis, 6, 0.3)
    fast = planes.PlaneEvaluator(copy.deepcopy(nets[0]), torch.device("cpu"), splits, None)
    assert fast.stack is not None
    fast.stack.columns = 128  # several chunks per split, a short last one
    general = planes.PlaneEvaluator(copy.deepcopy(nets[0]), torch.device("cpu"), splits, None)
    general.stack = None
    grid = planes.evaluate_grid(fast, basis, {}, xs, ys)
    reference = planes.evaluate_grid(general, basis, {}, xs, ys)
    for split, (x, y) in splits.items():
        for i, py in enumerate(ys):
            for j, px in enumerate(xs):
                loss, acc = _plain_eval(nets[0], _plain_point(a, b, c, px, py), x, y, None)
                assert grid[split]["loss"][i][j] == pytest.approx(loss, rel=1e-5, abs=1e-6)
                assert grid[split]["loss"][i][j] == pytest.approx(reference[split]["loss"][i][j], rel=1e-6)
                assert grid[split]["acc"][i][j] == acc == reference[split]["acc"][i][j]


@pytest.mark.parametrize("net, why", [
    (nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
     "BatchNorm is re-estimated per point"),
    (nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 3)), "only ReLU between the layers"),
    (nn.Sequential(nn.Linear(5, 8), nn.ReLU()), "the last layer must be a Linear"),
    (nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double(), "it computes in float32"),
])
def test_other_networks_take_the_general_path(net, why):
    splits = {"train": (torch.randn(20, 5, dtype=next(net.parameters()).dtype), torch.randint(0, 3, (20,)))}
    assert planes.PlaneEvaluator(net, torch.device("cpu"), splits, splits["train"][0]).stack is None, why
    regression = {"train": (torch.randn(20, 5), torch.randn(20, 3))}
    assert planes.PlaneEvaluator(_state(0, False), torch.device("cpu"), regression, None).stack is None


def test_the_basis_is_orthonormal_and_places_the_solutions_at_their_distances():
    a, b, c = (_state(s, False).state_dict() for s in (0, 1, 2))
    basis = planes.three_point_basis(a, b, c, names=("7", "8", "9"))
    dot = lambda u, v: sum((p.double() * q.double()).sum() for p, q in zip(u, v)).item()  # noqa: E731
    assert dot(basis.e1, basis.e1) == pytest.approx(1.0) and dot(basis.e2, basis.e2) == pytest.approx(1.0)
    assert abs(dot(basis.e1, basis.e2)) < 1e-6
    for name, state in zip(("7", "8", "9"), (a, b, c)):
        px, py = basis.marks[name]
        point = basis.point(px, py)
        assert all(torch.allclose(point[k], state[k], atol=1e-5) for k in basis.keys)  # each solution lies on its mark


def test_identical_and_collinear_solutions_span_no_plane():
    a, b = (_state(s, False).state_dict() for s in (0, 1))
    with pytest.raises(planes.DegeneratePlane, match="identical"):
        planes.three_point_basis(a, a, b)
    mid = {k: (v + b[k]) / 2 if v.is_floating_point() else v for k, v in a.items()}
    with pytest.raises(planes.DegeneratePlane, match="one line"):
        planes.three_point_basis(a, b, mid)


def test_random_directions_are_filter_normalised_and_fixed_by_their_seed():
    net = _state(0, True)
    state = net.state_dict()
    basis = planes.random_basis(state, seed=3)
    for k, d in zip(basis.keys, basis.e1):
        if state[k].dim() <= 1:
            assert not d.any()  # biases and BatchNorm: no direction (Li et al.'s ignore biasbn)
        else:
            assert torch.allclose(d.norm(dim=1), state[k].norm(dim=1), rtol=1e-5)  # every filter at its norm
    again = planes.random_basis(state, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(basis.e2, again.e2))
    assert not all(torch.equal(p, q) for p, q in zip(basis.e2, planes.random_basis(state, seed=4).e2))


def _count(reg):
    from sqlmodel import select

    from starcli.registry import LandscapeResult

    with reg.session() as s:
        return len(list(s.exec(select(LandscapeResult))))


def test_a_plane_is_stored_answered_from_the_registry_and_resumes_where_it_was_killed(reg, home, tiny_config, cli, monkeypatch):
    anchor_training.train(reg, tiny_config, [1, 2, 3], device="cpu")
    args = ("plane", "1", "2", "3", "--resolution", "6", "--splits", "train", "--json")
    code, out, err = cli(*args)
    assert code == 0, err
    whole = json.loads(out)
    assert whole["settings"]["align"] == "weight" and whole["result"]["complete"]
    assert len(whole["result"]["grid"]["train"]["loss"]) == 6 and len(whole["result"]["grid"]["train"]["loss"][0]) == 6

    # killed after three grid rows: those rows are stored, the rerun resumes at the fourth and ends equal
    real_cells, calls = planes.PlaneEvaluator.cells, {"rows": 0}

    def dies_after_three_rows(self, *a, **k):
        if calls["rows"] == 3:
            raise KeyboardInterrupt
        calls["rows"] += 1
        return real_cells(self, *a, **k)

    monkeypatch.setattr(planes.PlaneEvaluator, "cells", dies_after_three_rows)
    code, _, err = cli(*args, "--recompute")
    assert code == 130
    monkeypatch.setattr(planes.PlaneEvaluator, "cells", real_cells)
    code, listed, _ = cli("landscapes", "--kind", "plane", "--json")
    [partial] = json.loads(listed)
    assert partial["complete"] is False and partial["rows_done"] == 3
    code, out, err = cli(*args)
    assert code == 0, err
    assert "resuming at grid row 4 of 6" in err
    assert json.loads(out)["result"]["grid"] == whole["result"]["grid"]
    code, out, err = cli(*args)
    assert "answered from the registry" in err and json.loads(out)["result"]["grid"] == whole["result"]["grid"]


@pytest.mark.parametrize("ids, extra, message", [
    (("1", "1", "2"), (), "three different solutions"),
    (("1", "2"), (), "goes through three solutions"),
    (("1", "2", "3"), ("--resolution", "500"), "--resolution must be from 2 to 101"),
    (("1", "2", "3"), ("--random",), "--random draws a plane around one solution"),
    (("1", "2", "3"), (), "identical weights"),  # 3 is 2 permuted to 1: aligned, B and C are one network
    (("1", "2", "9"), (), "no solution with id 9"),
])
def test_bad_planes_are_one_line_and_store_nothing(reg, home, tiny_config, cli, ids, extra, message):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    code, _, err = cli("align", "2", "--to", "1")
    assert code == 0, err
    code, out, err = cli("plane", *ids, "--resolution", "3", *extra)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and message in errors[0], err
    assert _count(reg) == 0


def test_a_random_plane_is_centred_on_its_solution(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1], device="cpu")
    code, out, err = cli("plane", "1", "--random", "--resolution", "3", "--splits", "train", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["settings"]["basis"] == "random" and row["settings"]["filter_normalised"] is True
    assert row["result"]["x"] == [-1.0, 0.0, 1.0] and row["result"]["marks"] == {"1": [0.0, 0.0]}
    from starcli.solutions import records

    centre = row["result"]["grid"]["train"]["loss"][1][1]
    assert centre == pytest.approx(records.get(reg, 1).metrics["train_loss"], rel=1e-5)  # the solution itself
    code, again, err = cli("plane", "1", "--random", "--resolution", "3", "--splits", "train", "--json", "--seed", "1")
    assert code == 0 and json.loads(again)["result"]["grid"] != row["result"]["grid"]  # the seed is in the key
