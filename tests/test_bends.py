"""Curved paths (issue 22 item 4): the Bezier and polychain points equal their closed forms, a trained
curve's barrier is at most the line's on a pair with a barrier (an MNIST-1D MLP), the path's stored
losses equal a plain evaluation of the closed-form points, the bend is registered and removed with its
ends, and bad input is one line with nothing stored."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from starcli.engine import bends
from starcli.solutions import anchors as anchor_training


def _states():
    g = torch.Generator().manual_seed(0)
    make = lambda: {"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g), "n": torch.tensor(7)}  # noqa: E731
    return make(), make(), make()


@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0])
def test_bezier_points_equal_the_closed_form(t):
    a, c, b = _states()
    p = bends.point("bezier", t, a, c, b)
    for k in ("w", "b"):
        assert torch.allclose(p[k], (1 - t) ** 2 * a[k] + 2 * t * (1 - t) * c[k] + t**2 * b[k], atol=1e-6)
    assert p["n"] == a["n"]  # integer buffers are A's


@pytest.mark.parametrize("t", [0.0, 0.2, 0.5, 0.7, 1.0])
def test_polychain_points_lie_on_the_two_segments(t):
    a, c, b = _states()
    p = bends.point("polychain", t, a, c, b)
    want = {k: a[k] + 2 * t * (c[k] - a[k]) if t <= 0.5 else c[k] + (2 * t - 1) * (b[k] - c[k]) for k in ("w", "b")}
    assert all(torch.allclose(p[k], want[k], atol=1e-6) for k in want)


def test_both_bends_start_at_a_and_end_at_b():
    a, c, b = _states()
    for bend in bends.BENDS:
        assert torch.equal(bends.point(bend, 0.0, a, c, b)["w"], a["w"])
        assert torch.equal(bends.point(bend, 1.0, a, c, b)["w"], b["w"])


def test_the_schedule_is_dnn_mode_connectivitys():
    lrs = [bends.learning_rate(1.0, e, 10) for e in range(10)]
    assert lrs[:6] == [1.0] * 6 and lrs[9] == pytest.approx(0.01)
    assert lrs[7] == pytest.approx(1.0 - (0.7 - 0.5) / 0.4 * 0.99)


def _count(reg):
    from sqlmodel import select

    from starcli.registry import LandscapeResult

    with reg.session() as s:
        return len(list(s.exec(select(LandscapeResult))))


def test_a_trained_curve_has_at_most_the_lines_barrier_and_its_points_equal_a_plain_evaluation(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    args = ("curve", "1", "2", "--epochs", "4", "--points", "5", "--splits", "train", "--json")
    code, out, err = cli(*args)
    assert code == 0, err
    row = json.loads(out)
    res = row["result"]
    line, path = res["barriers"]["line"]["train"]["loss_barrier"], res["barriers"]["curve"]["train"]["loss_barrier"]
    assert line > 0.01  # a pair with a barrier
    assert path <= line
    assert row["settings"]["align"] == "weight" and row["settings"]["bend"] == "bezier"

    # the stored path at t = 0.5 equals a plain evaluation of the closed form from A, aligned B and the bend
    from starcli.alignment import align_state
    from starcli.engine.data import load_split
    from starcli.solutions import records

    sol_a, sol_b, bend = records.get_many(reg, [1, 2, res["bend_solution"]])
    assert bend.kind == "bend" and (bend.source_id, bend.target_id) == (1, 2)
    sa, sb, sc = (records.state_dict(reg, s) for s in (sol_a, sol_b, bend))
    sb = align_state(sol_a.arch, sol_a.arch_kwargs, sa, sb, seed=0)
    net = records.network(reg, sol_a)
    net.load_state_dict({k: 0.25 * sa[k] + 0.5 * sc[k] + 0.25 * sb[k] for k in sa})
    split = load_split(sol_a.dataset, "train", torch.device("cpu"), cache_dir=records.dataset_cache(reg))
    with torch.no_grad():
        logits = net(split.x)
    assert res["curve"]["train"]["loss"][2] == pytest.approx(F.cross_entropy(logits, split.y).item(), rel=1e-5)
    assert res["curve"]["train"]["acc"][2] == pytest.approx(100.0 * (logits.argmax(1) == split.y).sum().item() / len(split.y))

    code, again, err = cli(*args)
    assert code == 0 and "answered from the registry" in err and json.loads(again) == row
    code, _, err = cli("rm", "1")
    assert code == 1 and f"bend {bend.id}" in err and "curve row" in err
    code, _, err = cli("rm", "1", "--cascade")
    assert code == 0 and _count(reg) == 0


@pytest.mark.parametrize("extra, message", [
    (("--bend", "spline"), "--bend must be one of bezier, polychain"),
    (("--epochs", "0"), "--epochs must be an integer from 1"),
    (("--lr", "nan"), "--lr must be a positive learning rate"),
])
def test_bad_options_are_one_line_and_store_nothing(reg, home, tiny_config, cli, extra, message):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    code, _, err = cli("curve", "1", "2", *extra)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and message in errors[0], err
    assert _count(reg) == 0


def test_ends_of_different_architectures_or_datasets_are_refused(reg, home, tiny_config, cli):
    from starcli.engine import recipes

    anchor_training.train(reg, tiny_config, [1], device="cpu")
    anchor_training.train(reg, dict(tiny_config, arch_kwargs=dict(tiny_config["arch_kwargs"], width=16)), [2], device="cpu")
    anchor_training.train(reg, recipes.resolve("digits-mlp", epochs=1), [3], device="cpu")
    for b, message in (("1", "two different solutions"), ("2", "must share arch_kwargs"), ("3", "must share")):
        code, _, err = cli("curve", "1", b, "--epochs", "1")
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code != 0 and len(errors) == 1 and message in errors[0], err
    assert _count(reg) == 0
    code, out, _ = cli("list", "--kind", "bend", "--json")
    assert json.loads(out) == []


def test_a_curve_and_its_bend_travel_in_a_bundle(reg, home, tiny_config, cli, tmp_path, monkeypatch):
    """Exported like barriers: the bend is a solution of the bundle, the curve's row comes with it and is
    remapped to the ids of the registry it lands in."""
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    code, out, err = cli("curve", "1", "2", "--epochs", "1", "--points", "3", "--splits", "train", "--json")
    assert code == 0, err
    row = json.loads(out)
    code, out, err = cli("sharpness", "1", "--probes", "4", "--subset", "100")
    assert code == 0, err
    code, out, err = cli("export", "1-3", "--bundle", str(tmp_path / "b.tar.gz"))
    assert code == 0 and "2 instrument row(s)" in out, err

    other = tmp_path / "other"
    monkeypatch.setenv("STARLIGHT_HOME", str(other))
    from starcli.registry import open_registry

    there = open_registry(other)
    anchor_training.train(there, tiny_config, [9], device="cpu")  # id 1 there is another solution
    there.close()
    code, out, err = cli("import", str(tmp_path / "b.tar.gz"), "--json")
    assert code == 0, err
    ids = json.loads(out)["ids"]
    code, listed, _ = cli("landscapes", "--kind", "curve", "--json")
    [curve] = json.loads(listed)
    assert curve["subject"] == f"{ids['1']}-{ids['2']}" and curve["bend_solution"] == ids["3"]
    assert curve["curve_loss_barrier"] == row["result"]["barriers"]["curve"]["train"]["loss_barrier"]
    code, listed, _ = cli("landscapes", "--kind", "sharpness", "--json")
    assert [r["subject"] for r in json.loads(listed)] == [str(ids["1"])]


def test_every_instruments_job_is_planned_by_its_plan_and_travels_to_a_worker(reg, home, tiny_config):
    """Each instrument's plan(reg, spec); the job is frozen, built by keyword and survives pickling
    (what a pool, SLURM or Ray sends to a worker)."""
    import dataclasses
    import pickle

    from starcli.solutions import bends as curve_work
    from starcli.solutions import planes as plane_work
    from starcli.solutions import sharpness as sharpness_work

    anchor_training.train(reg, tiny_config, [1, 2, 3], device="cpu")
    for work, spec in ((sharpness_work, sharpness_work.SharpnessSpec(1)), (plane_work, plane_work.PlaneSpec((1, 2, 3))),
                       (curve_work, curve_work.CurveSpec(1, 2))):
        p = work.plan(reg, spec, device="cpu")
        assert p.existing is None and len(p.todo) == 1
        job = p.todo[0]
        assert pickle.loads(pickle.dumps(job)) == job
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.device = "cuda"
        assert job.label() and job.weight() == 1 and job.describe((7, True)) == "stored as row 7"


def test_the_same_seed_trains_the_same_bend_and_another_seed_another():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    a = {k: v.clone() for k, v in net.state_dict().items()}
    b = {k: v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in a.items()}
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    runs = [bends.train_bend(net, "bezier", a, b, x, y, epochs=3, lr=0.05, batch_size=16, seed=s) for s in (1, 1, 2)]
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in a) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0]["0.weight"], runs[2][0]["0.weight"])
    mid = bends.midpoint(a, b)  # buffers are not trained: the midpoint's, re-estimated wherever evaluated
    assert torch.equal(runs[0][0]["1.running_mean"], mid["1.running_mean"])


def test_the_same_bend_measured_at_other_points_is_the_same_solution(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    rows = []
    for points in ("3", "5"):
        code, out, err = cli("curve", "1", "2", "--epochs", "1", "--points", points, "--splits", "train", "--json")
        assert code == 0, err
        rows.append(json.loads(out))
    assert rows[0]["result"]["bend_solution"] == rows[1]["result"]["bend_solution"]
    assert rows[0]["result"]["curve"]["train"]["loss"][1] == rows[1]["result"]["curve"]["train"]["loss"][2]  # t = 0.5
