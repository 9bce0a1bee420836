"""Barriers: the fast curves equal a plain reference, are stored and reused, and refuse mismatched pairs."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from starcli.registry import BarrierResult
from starcli.engine import barriers as eq1
from starcli.engine import data, interpolation, recipes
from starcli.errors import StarlightError, UsageError
from starcli.solutions import anchors as anchor_training
from starcli.solutions import barriers, records, stars


def train_anchors(reg, config, seeds):
    return [o.solution.id for o in anchor_training.train(reg, config, seeds)]


def barrier_rows(reg) -> int:
    from sqlmodel import select

    with reg.session() as s:
        return len(list(s.exec(select(BarrierResult))))


# --- a plain reference: a deep copy per point, loops, nothing shared ------------------------------


def reference_curve(net_a: nn.Module, net_b: nn.Module, points: int, splits: dict, calibration, batch_size: int):
    state_a, state_b = net_a.state_dict(), net_b.state_dict()
    out = {split: {"loss": [], "acc": []} for split in splits}
    for i in range(points):
        t = i / (points - 1)
        net = copy.deepcopy(net_a)
        net.load_state_dict(
            {k: (1 - t) * state_a[k] + t * state_b[k] if state_a[k].is_floating_point() else state_a[k] for k in state_a}
        )
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
        if bns and 0 < i < points - 1:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            net.train()
            with torch.no_grad():
                for chunk in torch.tensor_split(calibration, math.ceil(len(calibration) / batch_size)):
                    net(chunk)
        net.eval()
        for split, (x, y) in splits.items():
            loss, correct = 0.0, 0
            with torch.no_grad():
                for j in range(0, len(x), batch_size):
                    logits = net(x[j : j + batch_size])
                    loss += F.cross_entropy(logits, y[j : j + batch_size], reduction="sum").item()
                    correct += (logits.argmax(1) == y[j : j + batch_size]).sum().item()
            out[split]["loss"].append(loss / len(x))
            out[split]["acc"].append(100.0 * correct / len(x))
    return out


def reference_barrier(values, higher_is_worse=True):
    n = len(values)
    worst = 0.0
    for i, v in enumerate(values):
        t = i / (n - 1)
        line = (1 - t) * values[0] + t * values[-1]
        worst = max(worst, (v - line) if higher_is_worse else (line - v))
    return worst


def splits_of(reg):
    cpu = torch.device("cpu")
    return {s: (lambda sp: (sp.x, sp.y))(data.load_split("mnist1d", s, cpu, cache_dir=reg.home / "datasets")) for s in ("train", "test")}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_fast_barrier_equals_a_plain_reference(reg, tiny_config, batch_norm):
    config = recipes.resolve("mnist1d-mlp", width=16, epochs=2, overrides={"arch_kwargs.batch_norm": batch_norm})
    a, b = train_anchors(reg, config, [1, 2])
    result = barriers.measure(reg, pairs=[(a, b)], points=5, batch_size=1000, align="none")
    splits = splits_of(reg)
    nets = [records.network(reg, records.get(reg, i)) for i in (a, b)]
    expected = reference_curve(*nets, 5, splits, splits["train"][0], 1000)
    pair = result["pairs"][0]
    assert pair["kind"] == "pair" and pair["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for split in ("train", "test"):
        for metric in ("loss", "acc"):
            assert pair[split][metric] == pytest.approx(expected[split][metric], abs=1e-5)
        assert pair[split]["loss_barrier"] == pytest.approx(reference_barrier(expected[split]["loss"]), abs=1e-5)
        assert pair[split]["acc_barrier"] == pytest.approx(reference_barrier(expected[split]["acc"], False), abs=1e-5)
    assert pair["train"]["loss_barrier"] > 0


def test_cnn_barrier_with_streamed_calibration_equals_a_plain_reference(reg, tiny_config):
    """The demo CNN with one 4,000-row calibration batch: the CPU path re-estimates BatchNorm in row slices
    with float64 statistics (evaluation.recalibrate_bn's `rows`); the curves equal PyTorch's plain loop."""
    config = recipes.resolve("mnist1d-cnn", width=8, epochs=1, overrides={"arch_kwargs.depth": 2})
    a, b = train_anchors(reg, config, [1, 2])
    result = barriers.measure(reg, pairs=[(a, b)], points=3, align="none")  # batch 4096: one calibration batch
    splits = splits_of(reg)
    nets = [records.network(reg, records.get(reg, i)) for i in (a, b)]
    expected = reference_curve(*nets, 3, splits, splits["train"][0], 4096)
    for split in ("train", "test"):
        assert result["pairs"][0][split]["loss"] == pytest.approx(expected[split]["loss"], abs=1e-5)
        assert result["pairs"][0][split]["acc"] == pytest.approx(expected[split]["acc"], abs=1e-5)


def test_streamed_bn_statistics_equal_pytorchs_kernel():
    """recalibrate_bn(rows=...) against PyTorch's train-mode kernel on the same batches: running statistics
    equal to float32 rounding, counters equal, and the module's own forward back afterwards."""
    from starcli import models
    from starcli.engine import evaluation

    torch.manual_seed(0)
    net = models.create("mnist1d_cnn", width=8, depth=2)
    x = torch.randn(900, 40) * 3 + 1
    plain, streamed = copy.deepcopy(net), copy.deepcopy(net)
    evaluation.recalibrate_bn(plain, x, batch_size=400)  # three near-equal batches: a cumulative average
    evaluation.recalibrate_bn(streamed, x, batch_size=400, rows=64)
    for (name, want), got in zip(plain.named_buffers(), streamed.buffers()):
        if want.is_floating_point():
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), name
        else:
            assert torch.equal(got, want), name
    assert all("forward" not in vars(m) for m in streamed.modules())
    streamed.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(streamed(x), plain(x), rtol=1e-4, atol=1e-5)


def test_bn_calibration_on_a_seeded_subset_equals_the_reference(reg, tiny_config):
    config = recipes.resolve("mnist1d-mlp", width=8, epochs=1, overrides={"arch_kwargs.batch_norm": True})
    a, b = train_anchors(reg, config, [1, 2])
    result = barriers.measure(reg, pairs=[(a, b)], points=3, splits=("test",), bn_calibration=500, batch_size=256, align="none")
    splits = splits_of(reg)
    subset = splits["train"][0][torch.randperm(4000, generator=torch.Generator().manual_seed(0))[:500]]
    nets = [records.network(reg, records.get(reg, i)) for i in (a, b)]
    expected = reference_curve(*nets, 3, {"test": splits["test"]}, subset, 256)
    assert result["pairs"][0]["test"]["loss"] == pytest.approx(expected["test"]["loss"], abs=1e-5)
    assert "train" not in result["pairs"][0] and result["settings"]["bn_calibration"] == 500


@pytest.mark.slow
def test_several_t_in_one_batched_pass_equal_one_t_at_a_time(reg, tiny_config):
    a, b = (records.state_dict(reg, records.get(reg, i)) for i in train_anchors(reg, tiny_config, [1, 2]))
    splits = splits_of(reg)
    ts = [0.1 * i for i in range(1, 10)]
    curves = [
        interpolation.LineEvaluator("mlp", tiny_config["arch_kwargs"], torch.device("cpu"), splits, None, 1000, t_batch)
        .curve(a, b, ts)
        for t_batch in (1, 4, 9)
    ]
    for other in curves[1:]:
        for split in splits:
            assert other[split]["loss"] == pytest.approx(curves[0][split]["loss"], abs=1e-5)
            assert other[split]["acc"] == pytest.approx(curves[0][split]["acc"], abs=1e-5)


def test_the_barrier_of_a_solution_with_itself_is_zero(reg, tiny_config):
    (a,) = train_anchors(reg, tiny_config, [1])
    pair = barriers.measure(reg, pairs=[(a, a)])["pairs"][0]
    for split in ("train", "test"):
        assert pair[split]["loss_barrier"] == pytest.approx(0.0, abs=1e-6) and pair[split]["acc_barrier"] == 0.0
        assert max(pair[split]["loss"]) - min(pair[split]["loss"]) < 1e-6


def test_curve_endpoints_equal_each_models_own_metrics(reg, tiny_config):
    a, b = train_anchors(reg, tiny_config, [1, 2])
    pair = barriers.measure(reg, pairs=[(a, b)], points=3, align="none")["pairs"][0]
    ma, mb = records.get(reg, a).metrics, records.get(reg, b).metrics
    for split in ("train", "test"):
        assert pair[split]["loss"][0] == pytest.approx(ma[f"{split}_loss"], abs=1e-5)
        assert pair[split]["acc"][0] == pytest.approx(ma[f"{split}_acc"], abs=1e-5)
        assert pair[split]["loss"][-1] == pytest.approx(mb[f"{split}_loss"], abs=1e-5)
        assert pair[split]["acc"][-1] == pytest.approx(mb[f"{split}_acc"], abs=1e-5)


@pytest.fixture(scope="module")
def star_setup_home(anchor_home, tmp_path_factory):
    """(home, (star id, anchors, held-outs)): `tiny_config` anchors 1-4 (conftest's session `anchor_home`) and a
    star from 1-2, no barrier yet. Built once per module, not once per test: the 13 tests that start from it each
    get a copy in their own home (the `reg` below), so each still starts from an untouched registry."""
    from starcli.registry import open_registry

    h = tmp_path_factory.mktemp("barrier-star") / "home"
    shutil.copytree(anchor_home((1, 2, 3, 4)), h)
    r = open_registry(h)
    try:
        ids = [s.id for s in sorted(records.query(r, kind="anchor"), key=lambda s: s.seed)]
        sol, _ = stars.build_star(r, ids[:2], epochs=1)
    finally:
        r.close()
    return h, (sol.id, ids[:2], ids[2:])


@pytest.fixture
def reg(home, request):
    """The test's registry: when the test uses `star_setup`, a copy of the module's `star_setup_home`, else empty."""
    from starcli.registry import open_registry

    if "star_setup" in request.fixturenames:
        shutil.copytree(request.getfixturevalue("star_setup_home")[0], home, dirs_exist_ok=True)  # database, blobs, dataset cache
    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture
def star_setup(reg, star_setup_home):
    """A star from anchors 1-2 and held-outs 3-4 (ids), tiny and quick."""
    return star_setup_home[1]


@pytest.mark.slow
def test_star_measurement_reports_star_and_regular_pairs_with_a_summary(reg, star_setup):
    star_id, anchors, held = star_setup
    result = barriers.measure(reg, star=star_id, held_out=held, points=3)
    assert set(result) == {"star", "settings", "pairs", "summary"} and result["star"] == star_id
    assert result["settings"] == {"points": 3, "splits": ["train", "test"], "bn_calibration": "full", "batch_size": 4096,
                                  "align": "weight"}  # auto: the MLP has a permutation spec
    kinds = [(p["a"], p["b"], p["kind"]) for p in result["pairs"]]
    assert kinds == [(star_id, h, "star-held-out") for h in held] + [
        (a, h, "regular-held-out") for a in anchors for h in held
    ]
    pair = result["pairs"][0]
    assert set(pair) == {"a", "b", "kind", "t", "train", "test"}
    assert set(pair["train"]) == {"loss", "acc", "loss_barrier", "acc_barrier"}
    summary = result["summary"]
    assert summary["star-held-out"]["train"]["loss_barrier"]["n"] == 2
    assert summary["regular-held-out"]["test"]["acc_barrier"]["n"] == 4
    regular = summary["regular-held-out"]["train"]["loss_barrier"]["mean"]
    assert summary["ratio"]["train"]["loss_barrier"] == pytest.approx(
        summary["star-held-out"]["train"]["loss_barrier"]["mean"] / regular
    )
    assert summary["star_metrics"] == records.get(reg, star_id).metrics
    assert summary["anchor_metrics"]["train_acc"] == pytest.approx(
        sum(records.get(reg, a).metrics["train_acc"] for a in anchors) / 2
    )
    assert barriers.measure(reg, star=star_id, held_out=held, points=3, baseline="none")["summary"]["ratio"]["train"] == {
        "loss_barrier": None, "acc_barrier": None
    }


@pytest.mark.slow
def test_a_repeated_query_is_answered_from_the_registry_without_forward_passes(reg, star_setup):
    star_id, _, held = star_setup
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(lambda *args: calls.append(1))
    try:
        first = barriers.measure(reg, star=star_id, held_out=held, points=3)
        computed = len(calls)
        calls.clear()
        again = barriers.measure(reg, star=star_id, held_out=held, points=3)
        from_registry = len(calls)
        barriers.measure(reg, star=star_id, held_out=held, points=3, recompute=True)
        recomputed = len(calls)
    finally:
        hook.remove()
    assert computed > 0 and from_registry == 0 and recomputed > 0
    assert again == first
    assert barrier_rows(reg) == 6  # 2 star pairs + 2 × 2 regular pairs, replaced (not duplicated) by --recompute
    barriers.measure(reg, star=star_id, held_out=held, points=5)
    assert barrier_rows(reg) == 12  # other settings: other rows


@pytest.mark.slow
def test_held_outs_of_another_architecture_or_dataset_are_refused(reg, tiny_config, star_setup):
    star_id, anchors, _ = star_setup
    (narrow,) = train_anchors(reg, recipes.resolve("mnist1d-mlp", width=8, epochs=1), [5])
    (digits,) = train_anchors(reg, recipes.resolve("digits-mlp", width=8, epochs=1), [6])
    with pytest.raises(StarlightError, match="must share arch_kwargs"):
        barriers.measure(reg, star=star_id, held_out=[narrow])
    with pytest.raises(StarlightError, match="must share (dataset|arch_kwargs)"):
        barriers.measure(reg, pairs=[(anchors[0], digits)])
    with pytest.raises(StarlightError, match="helped build star"):
        barriers.measure(reg, star=star_id, held_out=[anchors[0]])
    with pytest.raises(StarlightError, match="records no anchors"):
        barriers.measure(reg, star=anchors[0], held_out=[narrow])
    assert barrier_rows(reg) == 0


def test_the_barrier_definition_floors_at_zero_and_follows_the_line():
    ts = [0.0, 0.5, 1.0]
    assert eq1.barrier(ts, [1.0, 1.5, 2.0]) == 0.0
    assert eq1.barrier(ts, [1.0, 2.5, 2.0]) == pytest.approx(1.0)
    assert eq1.barrier(ts, [90.0, 60.0, 80.0], higher_is_worse=False) == pytest.approx(25.0)


@pytest.mark.slow
def test_barrier_cli_prints_pairs_summary_definitions_and_writes_a_plot(reg, star_setup, cli, tmp_path):
    star_id, _, held = star_setup
    plot = tmp_path / "curves.png"
    code, out, err = cli("barrier", "--star", str(star_id), "--held-out", f"{held[0]}-{held[1]}", "--points", "3",
                         "--plot", str(plot))
    assert code == 0, err
    assert "star-held-out" in out and "regular-held-out" in out and "ratio star/regular" in out
    assert "Loss barrier = max over the grid" in out and "anchors' mean" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = cli("barrier", "--star", str(star_id), "--held-out", f"{held[0]}-{held[1]}", "--points", "3", "--json")
    assert code == 0 and json.loads(out)["summary"]["star-held-out"]["train"]["loss_barrier"]["n"] == 2
    code, out, _ = cli("barrier", "--pair", str(held[0]), str(held[1]), "--points", "3", "--csv", "--splits", "train")
    assert code == 0 and out.splitlines()[0].startswith("a,b,kind,train_loss_barrier")
    assert out.splitlines()[1].startswith(f"{held[0]},{held[1]},pair,")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--star", "999", "--held-out", "3"], 1, "no solution with id 999"),
        (["--star", "{star}", "--held-out", "3,99"], 1, "no solution with id 99"),
        (["--star", "{star}", "--held-out", "3", "--points", "1"], 2, "--points"),
        (["--star", "{star}", "--held-out", "3", "--splits", "val"], 2, "--splits"),
        (["--star", "{star}", "--held-out", "3", "--bn-calibration", "some"], 2, "--bn-calibration"),
        (["--star", "{star}", "--held-out", "3", "--baseline", "all"], 2, "--baseline"),
        (["--star", "{star}", "--held-out", "3", "--json", "--csv"], 2, "choose one output format"),
        (["--star", "{star}"], 2, "--held-out"),
        (["--star", "{star}", "--held-out", "3", "--pair", "1", "2"], 2, "not both"),
    ],
)
def test_barrier_cli_errors_are_one_line_and_store_nothing(reg, star_setup, cli, args, code, message):
    star_id = star_setup[0]
    got, out, err = cli("barrier", *[a.format(star=star_id) for a in args])
    assert got == code and message in err and err.count("\n") == 1 and out == ""
    assert barrier_rows(reg) == 0


def test_options_are_validated_before_any_work(reg):
    with pytest.raises(UsageError, match="--align"):
        barriers.measure(reg, pairs=[(1, 2)], align="activations")


def test_weight_alignment_connects_a_solution_to_its_own_permutation(reg, tiny_config):
    pytest.importorskip("starcli.alignment")
    (a,) = train_anchors(reg, tiny_config, [1])
    sol = records.get(reg, a)
    state = records.state_dict(reg, sol)
    perm = torch.randperm(state["layers.1.weight"].shape[0], generator=torch.Generator().manual_seed(0))
    permuted = dict(state)
    permuted["layers.1.weight"], permuted["layers.1.bias"] = state["layers.1.weight"][perm], state["layers.1.bias"][perm]
    permuted["layers.3.weight"] = state["layers.3.weight"][:, perm]
    fields = {k: getattr(sol, k) for k in ("arch", "arch_kwargs", "width", "dataset", "recipe", "config", "metrics")}
    b, _ = records.add(reg, permuted, key="permuted-copy", kind="external", seed=None, **fields)
    plain = barriers.measure(reg, pairs=[(a, b.id)], points=5, align="none")["pairs"][0]
    aligned = barriers.measure(reg, pairs=[(a, b.id)], points=5, align="weight")
    assert plain["train"]["loss_barrier"] > 0.05
    assert aligned["pairs"][0]["train"]["loss_barrier"] == pytest.approx(0.0, abs=1e-5)
    assert aligned["settings"]["align"] == "weight"
    assert barriers.measure(reg, pairs=[(a, b.id)], points=5) == aligned  # auto: weight, as the paper measures


def test_a_calibration_larger_than_the_memory_available_is_refused_naming_the_batch_that_fits(reg, tiny_config, cli, monkeypatch):
    """BatchNorm re-estimation holds ~6 copies of the widest layer for the whole calibration batch; one that
    would not fit in the memory available ($STARLIGHT_MEMORY_LIMIT here, a small machine's budget) is refused
    before any pair is measured, in one line naming a --batch-size that fits, which then measures."""
    from starcli.engine import memory

    config = recipes.resolve("mnist1d-cnn", width=8, epochs=1, overrides={"arch_kwargs.depth": 2})
    a, b = train_anchors(reg, config, [1, 2])
    # The widest layer: 8 channels × 40 positions × 4 bytes = 1,280 bytes a sample; 6 × 4,000 samples ≈ 29 MiB.
    monkeypatch.setenv(memory.ENV, "1M")
    fits = (1 << 20) // (interpolation.CALIBRATION_COPIES * 1280)
    code, out, err = cli("barrier", "--pair", str(a), str(b), "--points", "3", "--align", "none")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert f"--batch-size {fits} or lower" in err and "29.3 MB" in err and "1.0 MB available" in err
    assert barrier_rows(reg) == 0
    code, out, err = cli("barrier", "--pair", str(a), str(b), "--points", "3", "--align", "none", "--batch-size", str(fits))
    assert code == 0, err
    assert barrier_rows(reg) == 1
    # Without BatchNorm nothing is re-estimated, so nothing is refused at the same budget.
    (c, d) = train_anchors(reg, tiny_config, [3, 4])
    code, _, err = cli("barrier", "--pair", str(c), str(d), "--points", "3", "--align", "none")
    assert code == 0, err


def test_memory_sizes_parse_and_a_bad_limit_is_a_usage_error(monkeypatch):
    from starcli.engine import memory

    assert [memory.parse_size(t) for t in ("500", "500B", "2K", "2KB", "1.5GiB", "4g")] == [
        500, 500, 2048, 2048, 3 << 29, 4 << 30]
    for bad in ("", "G", "x", "-1", "0", "inf", "1.5Q"):
        with pytest.raises(UsageError, match="STARLIGHT_MEMORY_LIMIT"):
            memory.parse_size(bad)
    monkeypatch.setenv(memory.ENV, "3M")
    assert memory.available_bytes() == 3 << 20  # the smallest of what the machine has and the limit
