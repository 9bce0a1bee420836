"""REPAIR, rescale and reshift (starcli/engine/renormalisation.py) equal a plain implementation of REPAIR's
per-channel mean/std correction on an MLP, cut the barrier of a trained MNIST-1D pair, and are refused
where they cannot apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from starcli import alignment, models
from starcli.engine import data, renormalisation, training
from starcli.engine.interpolation import LineEvaluator
from starcli.errors import UsageError

DEPTH = 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plain_renormalised_logits(state_a, state_b, t, x, policy, depth=DEPTH, eps=1e-5):
    """REPAIR written out for a ReLU MLP, in float64: each hidden pre-activation of the interpolated net,
    computed with the layers before it already corrected, gets the mean and std interpolated between the
    endpoints' (rescale: std only, reshift: mean only)."""
    x = x.flatten(1).double()
    w = lambda s, k, p: s[f"layers.{2 * k + 1}.{p}"].double()  # noqa: E731

    def preacts(state):
        h, out = x, []
        for k in range(depth):
            z = h @ w(state, k, "weight").T + w(state, k, "bias")
            out.append(z)
            h = z.relu()
        return out

    za, zb = preacts(state_a), preacts(state_b)
    mixed = {key: torch.lerp(state_a[key].double(), state_b[key].double(), t) for key in state_a}
    h = x
    for k in range(depth):
        z = h @ w(mixed, k, "weight").T + w(mixed, k, "bias")
        mean, var = z.mean(0), z.var(0, unbiased=False)
        goal_mean = (1 - t) * za[k].mean(0) + t * zb[k].mean(0)
        goal_std = (1 - t) * za[k].std(0, unbiased=False) + t * zb[k].std(0, unbiased=False)
        if policy == "repair":
            z = (z - mean) / (var + eps).sqrt() * goal_std + goal_mean
        elif policy == "rescale":
            z = (z - mean) / (var + eps).sqrt() * goal_std + mean
        else:
            z = z - mean + goal_mean
        h = z.relu()
    return h @ w(mixed, depth, "weight").T + w(mixed, depth, "bias")


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    from starcli.engine import recipes

    config = recipes.resolve("mnist1d-mlp", width=64, epochs=10)
    config["arch_kwargs"] = dict(config["arch_kwargs"], depth=DEPTH)
    train = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=tmp_path_factory.mktemp("ds"))
    a = training.fit(config, 1, torch.device("cpu"), train).state_dict()
    b = training.fit(config, 2, torch.device("cpu"), train).state_dict()
    b = alignment.align_state("mlp", config["arch_kwargs"], a, b)
    return config, train, a, b


@pytest.mark.parametrize("policy", renormalisation.STATISTICS_POLICIES)
def test_the_correction_equals_a_plain_repair_on_a_trained_mlp(trained_pair, policy):
    config, train, a, b = trained_pair
    x = train.x[:3000]
    net = models.create("mlp", **config["arch_kwargs"]).eval()
    fixer = renormalisation.Renormaliser(net, policy, x, batch_size=700)  # several batches per pass
    for t in (0.3, 0.5):
        net.load_state_dict({k: torch.lerp(a[k], b[k], t) for k in a})
        with torch.no_grad(), fixer.corrected(net, a, b, t):
            ours = net(train.x[:500])
        plain = plain_renormalised_logits(a, b, t, x, policy)  # statistics from x, applied to the first 500
        torch.testing.assert_close(ours.double(), plain[:500], rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the hooks are gone after the block: the plain network again
        torch.testing.assert_close(net(x[:5]), F.linear(F.relu(F.linear(F.relu(F.linear(x[:5], *_lin(net, 1))), *_lin(net, 3))), *_lin(net, 5)))


def _lin(net, k):
    layer = net.layers[k]
    return layer.weight, layer.bias


def test_line_evaluator_with_repair_reports_the_plain_repair_loss(trained_pair):
    config, train, a, b = trained_pair
    x, y = train.x[:2000], train.y[:2000]
    line = LineEvaluator("mlp", config["arch_kwargs"], torch.device("cpu"), {"train": (x, y)}, x, renorm="repair")
    got = line.curve(a, b, [0.5])["train"]["loss"][0]
    plain = F.cross_entropy(plain_renormalised_logits(a, b, 0.5, x, "repair"), y).item()
    assert got == pytest.approx(plain, rel=1e-5)


def test_repair_cuts_the_barrier_of_a_weight_matched_mnist1d_mlp_pair(trained_pair):
    from starcli.engine.barriers import barrier

    config, train, a, b = trained_pair
    ts = [i / 10 for i in range(11)]
    barriers = {}
    for policy in ("none", "repair"):
        line = LineEvaluator("mlp", config["arch_kwargs"], torch.device("cpu"), {"train": (train.x, train.y)},
                             train.x, renorm=policy)
        ends = [line.endpoint(s)["train"][0] for s in (a, b)]
        losses = [ends[0]] + line.curve(a, b, ts[1:-1])["train"]["loss"] + [ends[1]]
        barriers[policy] = barrier(ts, losses)
    assert barriers["repair"] < barriers["none"], barriers


@pytest.mark.parametrize("policy,has_bn,message", [
    ("reset", False, "no BatchNorm"), ("repair", True, "without BatchNorm"), ("rescale", True, "without BatchNorm"),
    ("bogus", False, "must be one of"),
])
def test_a_policy_that_cannot_apply_is_refused_in_one_line(policy, has_bn, message):
    with pytest.raises(UsageError, match=message) as info:
        renormalisation.check(policy, has_bn)
    assert "\n" not in str(info.value)


def test_renorm_none_on_a_batchnorm_net_evaluates_the_interpolated_statistics_and_repair_is_refused():
    kwargs = {"in_chans": 1, "num_classes": 10, "width": 8}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 1, 40, generator=g), torch.randint(0, 10, (256,), generator=g)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = models.create("mnist1d_cnn", **kwargs)
        net.train()(x)  # running statistics of its own, unlike a fresh BatchNorm's
        states.append(net.state_dict())
    a, b = states
    line = LineEvaluator("mnist1d_cnn", kwargs, torch.device("cpu"), {"train": (x, y)}, x, renorm="none")
    got = line.curve(a, b, [0.5])["train"]["loss"][0]
    net.load_state_dict({k: torch.lerp(v, b[k], 0.5) if v.is_floating_point() else v for k, v in a.items()})
    with torch.no_grad():
        plain = F.cross_entropy(net.eval()(x), y).item()
    assert got == pytest.approx(plain, rel=1e-5)
    reset = LineEvaluator("mnist1d_cnn", kwargs, torch.device("cpu"), {"train": (x, y)}, x)  # the default
    assert reset.curve(a, b, [0.5])["train"]["loss"][0] != pytest.approx(plain, rel=1e-3)
    with pytest.raises(UsageError, match="without BatchNorm"):
        LineEvaluator("mnist1d_cnn", kwargs, torch.device("cpu"), {"train": (x, y)}, x, renorm="repair")
