"""Datasets, architectures (ours directly, others through timm) and recipes."""

import struct
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from starcli import models
from starcli.engine import data, recipes
from starcli.errors import StarlightError, UsageError


def test_mnist1d_is_generated_cached_and_normalised(home):
    x, y = data.load("mnist1d", "train", cache_dir=home / "datasets")
    xt, yt = data.load("mnist1d", "test", cache_dir=home / "datasets")
    assert x.shape == (4000, 40) and xt.shape == (1000, 40) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    assert (home / "datasets" / "mnist1d.npz").exists()
    assert torch.equal(data.load("mnist1d", "train", cache_dir=home / "datasets")[0], x)


def test_digits_has_a_fixed_stratified_split():
    x, y = data.load("digits", "train")
    xt, yt = data.load("digits", "test")
    assert x.shape[1:] == (1, 8, 8) and len(x) + len(xt) == 1797
    assert torch.equal(data.load("digits", "test")[1], yt)
    assert set(yt.tolist()) == set(range(10))


def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in array.shape:
            f.write(struct.pack(">I", d))
        f.write(array.tobytes())


def test_torchvision_datasets_are_read_from_the_data_dir(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), 2051)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,), dtype=np.uint8), 2049)
    x, y = data.load("mnist", "train", data_dir=tmp_path)
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (12,)
    assert data.load("mnist", "test", data_dir=tmp_path)[0].shape == (5, 1, 28, 28)


def test_a_missing_torchvision_dataset_names_the_path_and_the_flag(tmp_path):
    with pytest.raises(StarlightError, match=rf"not found under {tmp_path}.*--download"):
        data.load("cifar10", "train", data_dir=tmp_path)
    with pytest.raises(StarlightError, match="--data-dir"):
        data.load("cifar100", "train")
    with pytest.raises(StarlightError, match="unknown dataset"):
        data.load("imagenet", "train")


def test_flip_crop_is_seeded_and_keeps_shapes():
    x = torch.randn(16, 3, 32, 32)
    a = data.augment(x, "flip-crop", torch.Generator().manual_seed(1))
    b = data.augment(x, "flip-crop", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert data.augment(x, "none", torch.Generator()) is x


@pytest.mark.parametrize(
    "arch, kwargs, shape",
    [
        ("mlp", dict(input_size=40, width=8, depth=2, batch_norm=True), (2, 40)),
        ("linear2", dict(input_size=3, width=5, num_classes=2), (2, 3)),
        ("cifar_resnet18", dict(width=4), (2, 3, 32, 32)),
        ("cifar_vgg11", dict(width=4, batch_norm=True), (2, 3, 32, 32)),
        ("cifar_vgg19", dict(width=4), (2, 3, 32, 32)),
        ("wrn", dict(depth=10, width=1), (2, 3, 32, 32)),
        ("resnet18", dict(in_chans=1), (2, 1, 32, 32)),
    ],
)
def test_every_architecture_builds_and_is_in_timms_registry_too(arch, kwargs, shape):
    kwargs.setdefault("num_classes", 10)
    net = models.create(arch, **kwargs)
    assert net(torch.randn(*shape)).shape == (2, kwargs["num_classes"])
    models.into_timm()  # ours are built without timm; registered in timm for timm's own users
    assert timm.is_model(arch)


def test_width_is_recorded_for_our_architectures_only():
    assert models.width_of("mlp", {"width": 64}) == 64
    assert models.width_of("resnet18", {"num_classes": 10}) is None


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(StarlightError, match="unknown architecture"):
        models.create("no_such_net")


def test_the_recipes_are_packaged():
    # The parametrized test below would pass vacuously (no cases) if the packaged recipes went missing.
    source = {p.stem for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.toml")}
    assert len(source) >= 9 and set(recipes.available()) == source


@pytest.mark.parametrize("name", recipes.available())
def test_every_shipped_recipe_resolves_to_a_complete_config(name):
    config = recipes.resolve(name)
    assert set(recipes.DEFAULTS) | {"recipe", "normalisation"} == set(config)
    assert {"num_classes", "in_chans"} <= set(config["arch_kwargs"])


def test_overrides_apply_in_order_and_user_arch_kwargs_win():
    config = recipes.resolve(
        "mnist1d-mlp", width=8, epochs=2, lr=0.01, overrides=recipes.parse_set(["arch_kwargs.depth=3", "optimizer=adam", "epochs=9"])
    )
    assert config["arch_kwargs"]["width"] == 8 and config["arch_kwargs"]["depth"] == 3
    assert config["epochs"] == 2 and config["optimizer"] == "adam" and config["lr"] == 0.01


def test_bad_overrides_are_usage_errors():
    with pytest.raises(UsageError):
        recipes.parse_set(["nonsense"])
    with pytest.raises(UsageError, match="unknown setting"):
        recipes.resolve(overrides={"colour": "red"})
    with pytest.raises(UsageError, match="width"):
        recipes.resolve(width=0)
