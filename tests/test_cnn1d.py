"""The MNIST-1D CNN: built through timm like every model, its derived permutation spec proved by the
self-check (with and without residual skips), and its recipe trains real solutions in seconds."""

from __future__ import annotations

import shutil

import pytest
import torch

from starcli import alignment, data, evaluation, models, recipes, training
from starcli.alignment import apply_permutation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def kwargs(**kw):
    return dict(num_classes=10, in_chans=1, **kw)


@pytest.mark.parametrize("width", [4, 16, 33])
@pytest.mark.parametrize("residual", [False, True])
def test_the_derived_spec_passes_its_self_check_at_several_widths(width, residual):
    kw = kwargs(width=width, depth=2, residual=residual)
    check = alignment.self_check("mnist1d_cnn", kw)
    assert check.ok, check.summary()
    assert check.input_shape == (2, 1, 40)
    assert not check.spec.unpermuted
    # A skip sums every block's output with its input: one group for all; without skips, one per conv.
    assert list(check.spec.sizes.values()) == ([width] if residual else [width] * 3)
    # Every parameter is permuted but the head's bias (10 class logits, which have no hidden axis).
    model = models.create("mnist1d_cnn", **kw)
    total = sum(p.numel() for p in model.parameters())
    assert check.spec.coverage(model.state_dict()) == pytest.approx(1 - 10 / total)


def test_a_permutation_from_the_spec_keeps_the_function_and_a_wrong_one_does_not():
    kw = kwargs(width=8, depth=2)
    spec = alignment.spec_for("mnist1d_cnn", kw)
    torch.manual_seed(0)
    model = models.create("mnist1d_cnn", **kw).eval()
    x = torch.randn(5, 40)
    before = model(x)
    perms = {g: torch.randperm(n) for g, n in spec.sizes.items()}
    state = model.state_dict()
    model.load_state_dict(apply_permutation(spec, perms, state))
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    # Permuting only the stem's output channels, not the next conv's input, changes the outputs.
    broken = dict(state)
    broken["stem.conv.weight"] = state["stem.conv.weight"][perms["stem.conv"]]
    model.load_state_dict(broken)
    assert (model(x) - before).abs().max() > 1e-3


def test_the_model_builds_through_create_and_maps_sequences_to_logits():
    model = models.create("mnist1d_cnn", **kwargs(width=12, depth=1, residual=True))
    assert model(torch.randn(7, 40)).shape == (7, 10)  # MNIST-1D batches are (N, 40)
    assert model(torch.randn(7, 1, 40)).shape == (7, 10)
    assert model.head.in_features == 12 and model.stem.conv.out_channels == 12
    assert models.width_of("mnist1d_cnn", {"width": 12}) == 12
    with pytest.raises(ValueError, match="pool"):
        models.create("mnist1d_cnn", **kwargs(pool="median"))


def test_the_recipe_resolves_and_a_short_run_learns(home, mnist1d_cache):
    (home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    config = recipes.resolve("mnist1d-cnn", width=8, epochs=3)
    assert config["arch"] == "mnist1d_cnn" and config["arch_kwargs"]["in_chans"] == data.info("mnist1d").in_chans
    dev = torch.device("cpu")
    train = training.load_split("mnist1d", "train", dev, home=home)
    model = training.fit(config, 1, dev, train)
    loss, acc = evaluation.evaluate(model, train.x, train.y)
    # Chance is 10% (loss 2.30); three epochs of the width-8 CNN already reach well past the MLP's 61% test.
    assert acc > 70 and loss < 1.0
