"""Star models: the Starlight step's gradient, registration, idempotency and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from starcli import models
from starcli.engine import data, evaluation, recipes, starlight
from starcli.errors import StarlightError, UsageError
from starcli.solutions import anchors as anchor_training
from starcli.solutions import records, stars


def train_anchors(reg, config, seeds):
    return [o.solution.id for o in anchor_training.train(reg, config, seeds)]


def count_solutions(reg) -> int:
    return len(records.query(reg))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_star_gradient_is_one_minus_t_times_the_gradient_at_the_interpolated_point(batch_norm):
    torch.manual_seed(0)
    kwargs = dict(num_classes=3, in_chans=1, input_size=5, width=4, depth=2, batch_norm=batch_norm)
    model, anchor_net = models.create("mlp", **kwargs), models.create("mlp", **kwargs)
    x, y, t = torch.randn(8, 5), torch.randint(0, 3, (8,)), 0.3
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    anchor = [p.detach() for _, p in anchor_net.named_parameters()]
    model.train()
    starlight.interpolated_loss(model, names, params, anchor, t, x, y).backward()

    # The reference: a separate network whose leaf parameters are the interpolated weights.
    at_point = models.create("mlp", **kwargs).train()
    with torch.no_grad():
        for p, a, q in zip(params, anchor, at_point.parameters()):
            q.copy_((1 - t) * p + t * a)
    F.cross_entropy(at_point(x), y).backward()
    for p, q in zip(params, at_point.parameters()):
        torch.testing.assert_close(p.grad, (1 - t) * q.grad, rtol=1e-5, atol=1e-6)


def test_t_sampling_parses_uniform_beta_and_constant_and_refuses_the_rest():
    assert str(starlight.TSampling.parse("uniform")) == "uniform"
    assert str(starlight.TSampling.parse("beta:2,2")) == "beta:2,2"
    assert starlight.TSampling.parse("constant:0.5").draw(None) == 0.5
    for bad in ("gauss", "beta:2", "beta:0,1", "constant:1.5", "uniform:3", "constant:x"):
        with pytest.raises(UsageError, match="t-sampling"):
            starlight.TSampling.parse(bad)


@pytest.mark.slow
def test_build_star_registers_a_star_with_its_anchors_and_settings(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2, 3])
    sol, created = stars.build_star(reg, ids, epochs=2, t_sampling="beta:2,2", samples_per_step=2, mu_star=0.5, seed=4)
    assert created and sol.kind == "star"
    rec = records.record(reg, sol, full=True)
    assert rec["anchors"] == ids and rec["epochs"] == 2 and rec["seed"] == 4
    assert rec["config"]["star"] == {
        "anchors": ids, "t_sampling": "beta:2,2", "samples_per_step": 2, "mu_star": 0.5, "seed": 4, "align_anchors": False
    }
    assert rec["config"]["lr"] == tiny_config["lr"] and rec["config"]["arch_kwargs"] == tiny_config["arch_kwargs"]
    assert rec["wall_seconds"] > 0 and set(rec["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}


def test_the_same_anchors_settings_and_seed_return_the_registered_star(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2])
    first, created = stars.build_star(reg, ids, epochs=1)
    again, created_again = stars.build_star(reg, list(reversed(ids)), epochs=1)
    other, created_other = stars.build_star(reg, ids, epochs=1, seed=1)
    assert created and not created_again and again.id == first.id
    assert created_other and other.id != first.id


@pytest.mark.slow
def test_the_star_is_reproducible_from_its_seed(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2])
    config = dict(tiny_config, epochs=1)
    split = data.load_split(config["dataset"], "train", torch.device("cpu"), cache_dir=reg.home / "datasets")
    states = [records.state_dict(reg, records.get(reg, i)) for i in ids]
    runs = [starlight.fit_star(config, states, 3, torch.device("cpu"), split, starlight.TSampling.parse("uniform")) for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)


def test_star_batchnorm_statistics_are_recomputed_on_the_training_split(reg, tiny_config):
    config = recipes.resolve("mnist1d-mlp", width=8, epochs=1, overrides={"arch_kwargs.batch_norm": True})
    ids = train_anchors(reg, config, [1, 2])
    sol, _ = stars.build_star(reg, ids)
    net = records.network(reg, sol)
    stored = {k: v.clone() for k, v in net.state_dict().items()}
    x, _ = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=reg.home / "datasets").x, None
    evaluation.recalibrate_bn(net, x)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, stored[key])


def test_anchors_of_different_widths_or_datasets_are_refused_with_the_mismatch_named(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1])
    narrow = train_anchors(reg, recipes.resolve("mnist1d-mlp", width=8, epochs=1), [2])
    digits = train_anchors(reg, recipes.resolve("digits-mlp", width=8, epochs=1), [3])
    before = count_solutions(reg)
    with pytest.raises(StarlightError, match="anchors must share arch_kwargs"):
        stars.build_star(reg, ids + narrow, epochs=1)
    with pytest.raises(StarlightError, match="anchors must share (dataset|arch_kwargs)"):
        stars.build_star(reg, ids + digits, epochs=1)
    assert count_solutions(reg) == before


@pytest.mark.slow
def test_align_anchors_realigns_every_anchor_at_each_epoch_start(reg, tiny_config, monkeypatch):
    ids = train_anchors(reg, tiny_config, [1, 2])
    calls = []

    def align_state(arch, arch_kwargs, state_a, state_b, seed=0):
        calls.append(arch)
        return state_b

    monkeypatch.setattr(stars, "align_state", align_state)
    sol, _ = stars.build_star(reg, ids, epochs=2, realign=True)
    assert len(calls) == 2 * len(ids) and sol.config["star"]["align_anchors"] is True


@pytest.mark.slow
def test_star_cli_builds_and_prints_json(reg, tiny_config, cli):
    train_anchors(reg, tiny_config, [1, 2])
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--json")
    assert code == 0, err
    assert '"kind": "star"' in out and '"anchors": [\n    1,\n    2\n  ]' in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--anchors", "1,99"], 1, "no solution with id 99"),
        (["--anchors", "1-2", "--t-sampling", "beta:2"], 2, "t-sampling"),
        (["--anchors", "1-2", "--samples-per-step", "0"], 2, "samples-per-step"),
        (["--anchors", "1-2", "--mu-star", "-1"], 2, "mu-star"),
        (["--anchors", "x"], 2, "anchor id"),
    ],
)
def test_star_cli_errors_are_one_line_and_leave_the_registry_unchanged(reg, tiny_config, cli, args, code, message):
    train_anchors(reg, tiny_config, [1, 2])
    before = count_solutions(reg)
    got, out, err = cli("star", *args, "--epochs", "1")
    assert got == code and message in err and err.count("\n") == 1 and out == ""
    assert count_solutions(reg) == before


def test_anchors_realigned_on_threads_equal_one_after_another():
    """starlight.realign_all: the default preset's per-epoch re-alignment of every anchor, on threads, gives
    the same permuted anchors, bit for bit and in order, as matching them one after another."""
    from starcli import models
    from starcli.alignment import align_state
    from starcli.engine import starlight

    torch.manual_seed(0)
    kwargs = {"width": 64, "depth": 2}
    target, *anchors = (models.create("mlp", **kwargs).state_dict() for _ in range(6))

    def realign(a, b):
        return align_state("mlp", kwargs, a, b, seed=3)

    sequential = [realign(target, a) for a in anchors]
    for workers in (1, 2, 4):
        threaded = starlight.realign_all(realign, target, anchors, workers=workers)
        assert len(threaded) == len(anchors)
        for want, got in zip(sequential, threaded):
            assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    # The permutations are real ones: at least one anchor's units moved.
    assert any(not torch.equal(s["layers.1.weight"], a["layers.1.weight"]) for s, a in zip(sequential, anchors))


@pytest.mark.slow
def test_a_star_realigned_on_threads_is_the_star_realigned_one_after_another(anchor_home, tmp_path):
    """The default preset's star (anchor-mean start, re-aligned every epoch) trained with its re-alignments
    on 1 and on 3 threads: the same checkpoint, byte for byte, so the thread count stays out of the key."""
    import shutil

    from starcli.registry import open_registry

    built = []
    for workers in (1, 3):
        home = tmp_path / f"workers-{workers}"
        shutil.copytree(anchor_home((1, 2, 3, 4), "cpu"), home)
        reg = open_registry(home)
        try:
            spec = stars.StarSpec.preset(anchor_ids=tuple(s.id for s in records.query(reg)), epochs=3, seed=2)
            assert spec.realign and spec.init == "anchor-mean"
            sol, created = stars.build(reg, spec, "cpu", realign_workers=workers)
            assert created
            built.append((sol.key, sol.sha256))
        finally:
            reg.close()
    assert built[0] == built[1]
