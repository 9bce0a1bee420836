"""Star models: the Starlight step's gradient, registration, idempotency and refusals."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from starcli import evaluation, models, recipes, solutions, star, training
from starcli.errors import StarlightError, UsageError


def train_anchors(reg, config, seeds):
    return [o.solution.id for o in training.train(reg, config, seeds)]


def count_solutions(reg) -> int:
    return len(solutions.query(reg))


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
    star.interpolated_loss(model, names, params, anchor, t, x, y).backward()

    # The reference: a separate network whose leaf parameters are the interpolated weights.
    at_point = models.create("mlp", **kwargs).train()
    with torch.no_grad():
        for p, a, q in zip(params, anchor, at_point.parameters()):
            q.copy_((1 - t) * p + t * a)
    F.cross_entropy(at_point(x), y).backward()
    for p, q in zip(params, at_point.parameters()):
        torch.testing.assert_close(p.grad, (1 - t) * q.grad, rtol=1e-5, atol=1e-6)


def test_t_sampling_parses_uniform_beta_and_constant_and_refuses_the_rest():
    assert str(star.TSampling.parse("uniform")) == "uniform"
    assert str(star.TSampling.parse("beta:2,2")) == "beta:2,2"
    assert star.TSampling.parse("constant:0.5").draw(None) == 0.5
    for bad in ("gauss", "beta:2", "beta:0,1", "constant:1.5", "uniform:3", "constant:x"):
        with pytest.raises(UsageError, match="t-sampling"):
            star.TSampling.parse(bad)


def test_build_star_registers_a_star_with_its_anchors_and_settings(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2, 3])
    sol, created = star.build_star(reg, ids, epochs=2, t_sampling="beta:2,2", samples_per_step=2, mu_star=0.5, seed=4)
    assert created and sol.kind == "star"
    rec = solutions.record(reg, sol, full=True)
    assert rec["anchors"] == ids and rec["epochs"] == 2 and rec["seed"] == 4
    assert rec["config"]["star"] == {
        "anchors": ids, "t_sampling": "beta:2,2", "samples_per_step": 2, "mu_star": 0.5, "seed": 4, "align_anchors": False
    }
    assert rec["config"]["lr"] == tiny_config["lr"] and rec["config"]["arch_kwargs"] == tiny_config["arch_kwargs"]
    assert rec["wall_seconds"] > 0 and set(rec["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}


def test_the_same_anchors_settings_and_seed_return_the_registered_star(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2])
    first, created = star.build_star(reg, ids, epochs=1)
    again, created_again = star.build_star(reg, list(reversed(ids)), epochs=1)
    other, created_other = star.build_star(reg, ids, epochs=1, seed=1)
    assert created and not created_again and again.id == first.id
    assert created_other and other.id != first.id


def test_the_star_is_reproducible_from_its_seed(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2])
    config = dict(tiny_config, epochs=1)
    split = training.load_split(config["dataset"], "train", torch.device("cpu"), home=reg.home)
    states = [solutions.state_dict(reg, solutions.get(reg, i)) for i in ids]
    runs = [star.fit_star(config, states, 3, torch.device("cpu"), split, star.TSampling.parse("uniform")) for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)


def test_star_batchnorm_statistics_are_recomputed_on_the_training_split(reg, tiny_config):
    config = recipes.resolve("mnist1d-mlp", width=8, epochs=1, overrides={"arch_kwargs.batch_norm": True})
    ids = train_anchors(reg, config, [1, 2])
    sol, _ = star.build_star(reg, ids)
    net = solutions.network(reg, sol)
    stored = {k: v.clone() for k, v in net.state_dict().items()}
    x, _ = training.load_split("mnist1d", "train", torch.device("cpu"), home=reg.home).x, None
    evaluation.recalibrate_bn(net, x)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, stored[key])


def test_anchors_of_different_widths_or_datasets_are_refused_with_the_mismatch_named(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1])
    narrow = train_anchors(reg, recipes.resolve("mnist1d-mlp", width=8, epochs=1), [2])
    digits = train_anchors(reg, recipes.resolve("digits-mlp", width=8, epochs=1), [3])
    before = count_solutions(reg)
    with pytest.raises(StarlightError, match="anchors must share arch_kwargs"):
        star.build_star(reg, ids + narrow, epochs=1)
    with pytest.raises(StarlightError, match="anchors must share (dataset|arch_kwargs)"):
        star.build_star(reg, ids + digits, epochs=1)
    assert count_solutions(reg) == before


def test_align_anchors_without_the_alignment_module_is_a_clear_error(reg, tiny_config, monkeypatch):
    ids = train_anchors(reg, tiny_config, [1, 2])
    monkeypatch.setitem(sys.modules, "starcli.alignment", None)  # as if the module were not installed
    with pytest.raises(StarlightError, match="alignment is unavailable"):
        star.build_star(reg, ids, epochs=1, align_anchors=True)


def test_align_anchors_realigns_every_anchor_at_each_epoch_start(reg, tiny_config, monkeypatch):
    import types

    ids = train_anchors(reg, tiny_config, [1, 2])
    calls = []

    def align_state(arch, arch_kwargs, state_a, state_b, seed=0):
        calls.append(arch)
        return state_b

    monkeypatch.setitem(sys.modules, "starcli.alignment", types.SimpleNamespace(align_state=align_state))
    sol, _ = star.build_star(reg, ids, epochs=2, align_anchors=True)
    assert len(calls) == 2 * len(ids) and sol.config["star"]["align_anchors"] is True


def _fit(config, states, split, **kw):
    return star.fit_star(config, states, 3, torch.device("cpu"), split, kw.pop("t", star.TSampling.parse("uniform")), **kw)


def test_the_own_loss_phase_descends_the_star_loss_alone_on_the_same_schedule(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2])
    config = dict(tiny_config, epochs=3)
    split = training.load_split(config["dataset"], "train", torch.device("cpu"), home=reg.home)
    states = [solutions.state_dict(reg, solutions.get(reg, i)) for i in ids]
    # At t = 0 the interpolated network is the star itself: Starlight steps and own-loss steps coincide,
    # so a run whose last epochs use the own loss must match one that never does.
    at_zero = star.TSampling.parse("constant:0")
    plain, polished = _fit(config, states, split, t=at_zero), _fit(config, states, split, t=at_zero, own_epochs=2)
    for a, b in zip(plain.state_dict().values(), polished.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Away from t = 0 the phases differ, and the anchors are neither re-aligned nor used in the own epochs.
    calls = []
    realign = lambda star_state, anchor: calls.append(1) or anchor  # noqa: E731
    uniform = _fit(config, states, split, realign=realign, own_epochs=1)
    assert len(calls) == (3 - 1) * len(states)
    assert any(not torch.allclose(a, b) for a, b in zip(uniform.state_dict().values(), plain.state_dict().values()))
    with pytest.raises(UsageError, match="own-epochs"):
        _fit(config, states, split, own_epochs=3)


def test_anchor_mean_init_starts_from_the_mean_of_the_aligned_anchors(reg, tiny_config):
    ids = train_anchors(reg, tiny_config, [1, 2])
    states = [solutions.state_dict(reg, solutions.get(reg, i)) for i in ids]
    flipped = lambda first, other: {k: v.flip(0) for k, v in other.items()}  # noqa: E731  a stand-in "alignment"
    mean = star.anchor_mean(states, flipped)
    for k, v in states[0].items():
        torch.testing.assert_close(mean[k], (v + states[1][k].flip(0)) / 2)
    # With a vanishing learning rate the star stays where it started: at the plain mean of the anchors.
    config = dict(tiny_config, epochs=1, lr=1e-12)
    split = training.load_split(config["dataset"], "train", torch.device("cpu"), home=reg.home)
    model = _fit(config, states, split, init="anchor-mean")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, (states[0][k] + states[1][k]) / 2)
    with pytest.raises(UsageError, match="--init"):
        star.build_star(reg, ids, epochs=1, init="zeros")
    sol, _ = star.build_star(reg, ids, epochs=2, init="anchor-mean", own_epochs=1)
    assert sol.config["star"]["init"] == "anchor-mean" and sol.config["star"]["own_epochs"] == 1


def test_star_cli_builds_and_prints_json(reg, tiny_config, cli):
    train_anchors(reg, tiny_config, [1, 2])
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--json")
    assert code == 0, err
    assert '"kind": "star"' in out and '"anchors": [\n    1,\n    2\n  ]' in out


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
