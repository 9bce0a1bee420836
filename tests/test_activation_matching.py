"""Activation matching (starcli/alignment/activation_matching.py) equals a plain implementation of Git
Re-Basin's (all activations in memory, np.corrcoef, linear_sum_assignment) on a trained pair, recovers a
known permutation exactly, keeps B's function, and lowers the barrier like weight matching does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from starcli import alignment, models
from starcli.alignment.activation_matching import activation_matching, correlations
from starcli.alignment.spec import apply_permutation
from starcli.engine import data, training

MLP = {"input_size": 40, "width": 32, "depth": 2, "num_classes": 10, "in_chans": 1, "batch_norm": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plain_mlp_activation_matching(state_a, state_b, x, depth):
    """Git Re-Basin §3.1, written out for a ReLU MLP: every hidden layer's post-ReLU activations over all
    of x, their Pearson correlation (np.corrcoef, float64), one linear assignment per layer."""

    def hidden(state):
        h, out = x.flatten(1).double().numpy(), []
        for k in range(depth):
            w, b = (state[f"layers.{2 * k + 1}.{p}"].double().numpy() for p in ("weight", "bias"))
            h = np.maximum(h @ w.T + b, 0.0)
            out.append(h)
        return out

    perms, corrs = {}, {}
    for k, (act_a, act_b) in enumerate(zip(hidden(state_a), hidden(state_b))):
        n = act_a.shape[1]
        corr = np.corrcoef(act_a.T, act_b.T)[:n, n:]
        corr = np.nan_to_num(corr)  # dead units: no correlation
        _, cols = linear_sum_assignment(corr, maximize=True)
        perms[f"layers.{2 * k + 1}"], corrs[f"layers.{2 * k + 1}"] = torch.as_tensor(cols), corr
    return perms, corrs


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    from starcli.engine import recipes

    config = recipes.resolve("mnist1d-mlp", width=32, epochs=8)
    config["arch_kwargs"] = dict(config["arch_kwargs"], depth=2)
    train = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=tmp_path_factory.mktemp("ds"))
    a = training.fit(config, 1, torch.device("cpu"), train).state_dict()
    b = training.fit(config, 2, torch.device("cpu"), train).state_dict()
    return config, train, a, b


def test_activation_matching_equals_git_re_basin_s_plain_implementation_on_a_trained_mnist1d_pair(trained_pair):
    config, train, a, b = trained_pair
    kwargs = config["arch_kwargs"]
    spec = alignment.spec_for("mlp", kwargs)
    model = models.create("mlp", **kwargs)
    x = train.x[:2000]
    ours = activation_matching(spec, model, a, b, x, batch_size=300)  # several batches: the moments accumulate
    plain, plain_corr = plain_mlp_activation_matching(a, b, x, depth=2)
    assert set(ours) == set(plain)
    for group in plain:
        assert torch.equal(ours[group], plain[group]), group
    model_a, model_b = models.create("mlp", **kwargs), models.create("mlp", **kwargs)
    model_a.load_state_dict(a)
    model_b.load_state_dict(b)
    for group, corr in correlations(model_a, model_b, spec, x, batch_size=300).items():
        np.testing.assert_allclose(corr.numpy(), plain_corr[group], atol=1e-6)


def test_activation_matching_undoes_a_known_permutation_of_a_batchnorm_cnn_exactly():
    kwargs = {"in_chans": 1, "num_classes": 10, "width": 8}
    torch.manual_seed(0)
    model = models.create("mnist1d_cnn", **kwargs)
    spec = alignment.spec_for("mnist1d_cnn", kwargs)
    a = model.state_dict()
    g = torch.Generator().manual_seed(3)
    shuffle = {name: torch.randperm(n, generator=g) for name, n in spec.sizes.items()}
    b = apply_permutation(spec, shuffle, a)
    x = torch.randn(64, 1, 40, generator=g)
    perms = activation_matching(spec, model, a, b, x)
    undone = apply_permutation(spec, perms, b)
    assert all(torch.equal(undone[k], a[k]) for k in a)


def test_activation_aligned_b_computes_b_s_function_and_lowers_the_barrier(trained_pair):
    config, train, a, b = trained_pair
    kwargs = config["arch_kwargs"]
    aligned = alignment.align_state_by_activation("mlp", kwargs, a, b, train.x[:2000])
    net = models.create("mlp", **kwargs).eval()
    net.load_state_dict(b)
    before = net(train.x[:256])
    net.load_state_dict(aligned)
    torch.testing.assert_close(net(train.x[:256]), before, rtol=1e-5, atol=1e-5)

    def barrier(state_b):
        losses = []
        for t in torch.linspace(0, 1, 11):
            net.load_state_dict({k: torch.lerp(a[k], state_b[k], t) for k in a})
            with torch.no_grad():
                losses.append(torch.nn.functional.cross_entropy(net(train.x), train.y).item())
        line = torch.linspace(losses[0], losses[-1], 11)
        return max(0.0, max(v - float(l) for v, l in zip(losses, line)))

    assert barrier(aligned) < barrier(b)
